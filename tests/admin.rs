//! The admin console (`psql … pgscale`) against a real primary and replica: every SHOW command,
//! RELOAD, RECONNECT, PAUSE/RESUME (also under a pgbench load), who may use it, and both protocols.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{pg_tool, run_command, sqlstate, within, Env, APP_PASSWORD, APP_USER};
use pgscale::config::PoolMode;
use tokio_postgres::{Client, SimpleQueryMessage};

/// A SHOW command's rows as column → value maps (simple protocol, as psql sends it).
async fn show(admin: &Client, what: &str) -> Vec<HashMap<String, Option<String>>> {
    let messages = within(what, admin.simple_query(what))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn value<'a>(row: &'a HashMap<String, Option<String>>, column: &str) -> &'a str {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
        .as_deref()
        .unwrap_or("")
}

fn number(row: &HashMap<String, Option<String>>, column: &str) -> i64 {
    value(row, column)
        .parse()
        .unwrap_or_else(|_| panic!("{column} is not a number in {row:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_command_describes_the_running_proxy() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 10).await;
    let admin = env.admin().await;
    let app = common::connect(&format!(
        "{} application_name=admin-test",
        env.conn_str(APP_USER, APP_PASSWORD, APP_USER)
    ))
    .await;
    for _ in 0..5 {
        app.simple_query("select 1").await.expect("select");
    }
    // A transaction held open: its server shows as active, linked to this client.
    app.simple_query("begin").await.expect("begin");
    let pid: i32 = app
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);

    let pools = show(&admin, "SHOW POOLS").await;
    let primary_port = env.pg.port().to_string();
    let app_primary = pools
        .iter()
        .find(|p| value(p, "database") == "app" && value(p, "role") == "primary")
        .unwrap_or_else(|| panic!("a pool for app on the primary: {pools:?}"));
    for column in [
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
        "pool_mode",
    ] {
        assert!(app_primary.contains_key(column), "SHOW POOLS has {column}");
    }
    assert_eq!(value(app_primary, "port"), primary_port);
    assert_eq!(value(app_primary, "pool_mode"), "transaction");
    assert_eq!(number(app_primary, "cl_active"), 1, "{app_primary:?}");
    assert!(
        pools.iter().any(|p| value(p, "role") == "replica"),
        "the replica's pool is listed: {pools:?}"
    );
    let active: i64 = pools.iter().map(|p| number(p, "sv_active")).sum();
    assert_eq!(
        active, 1,
        "one server is in the open transaction: {pools:?}"
    );

    let servers = show(&admin, "SHOW SERVERS").await;
    let ours = servers
        .iter()
        .find(|s| number(s, "remote_pid") == i64::from(pid))
        .unwrap_or_else(|| panic!("server pid {pid} listed: {servers:?}"));
    assert_eq!(value(ours, "type"), "S");
    assert_eq!(value(ours, "state"), "active");
    assert_eq!(value(ours, "database"), "app");
    assert!(!value(ours, "link").is_empty(), "linked to its client");

    let clients = show(&admin, "SHOW CLIENTS").await;
    let me = clients
        .iter()
        .find(|c| value(c, "application_name") == "admin-test")
        .unwrap_or_else(|| panic!("the app client is listed: {clients:?}"));
    assert_eq!(value(me, "state"), "active");
    assert_eq!(value(me, "user"), APP_USER);
    assert_eq!(
        value(me, "ptr"),
        value(ours, "link"),
        "SERVERS.link is CLIENTS.ptr"
    );
    assert!(
        clients.iter().any(|c| value(c, "database") == "pgscale"),
        "the admin client itself is listed"
    );
    app.simple_query("commit").await.expect("commit");

    let stats = show(&admin, "SHOW STATS").await;
    let app_stats = stats
        .iter()
        .find(|s| value(s, "database") == "app")
        .unwrap_or_else(|| panic!("stats for app: {stats:?}"));
    assert!(number(app_stats, "total_query_count") >= 7, "{app_stats:?}");
    assert!(number(app_stats, "total_xact_count") >= 6, "{app_stats:?}");
    assert!(number(app_stats, "total_received") > 0);
    assert!(number(app_stats, "total_sent") > 0);
    assert!(number(app_stats, "total_query_time") > 0);

    let databases = show(&admin, "SHOW DATABASES").await;
    assert!(
        databases.iter().any(|d| value(d, "name") == "app"
            && value(d, "port") == primary_port
            && number(d, "pool_size") == 10),
        "{databases:?}"
    );

    let config = show(&admin, "SHOW CONFIG").await;
    let pool_size = config
        .iter()
        .find(|c| value(c, "key") == "pool.pool_size")
        .expect("pool.pool_size");
    assert_eq!(value(pool_size, "value"), "10");
    assert_eq!(value(pool_size, "default"), "20");
    assert_eq!(value(pool_size, "changeable"), "yes");
    let all = format!("{config:?}");
    assert!(!all.contains(APP_PASSWORD), "no password in SHOW CONFIG");

    // Shards: the primary and replica, healthy once polled, breakers closed.
    let mut healthy = false;
    for _ in 0..50 {
        let shards = show(&admin, "SHOW SHARDS").await;
        assert_eq!(shards.len(), 2, "{shards:?}");
        assert!(shards.iter().all(|s| value(s, "breaker") == "closed"));
        assert_eq!(value(&shards[0], "shard"), "shard0");
        assert_eq!(value(&shards[1], "role"), "replica");
        // Healthy, with the replica's lag known once the primary's position has been polled too.
        if shards.iter().all(|s| number(s, "healthy") == 1)
            && !value(&shards[1], "lag_bytes").is_empty()
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "both backends become healthy in SHOW SHARDS");

    let version = show(&admin, "SHOW VERSION").await;
    assert!(value(&version[0], "version").starts_with("pgscale "));

    // The extended protocol (how drivers ask), with numbers as integers.
    let rows = admin.query("SHOW POOLS", &[]).await.expect("extended SHOW");
    let sv_idle: i64 = rows.iter().map(|r| r.get::<_, i64>("sv_idle")).sum();
    assert!(sv_idle >= 1, "idle servers after the commit");
    let statement = admin.prepare("show stats").await.expect("prepare");
    assert!(statement
        .columns()
        .iter()
        .any(|c| c.name() == "total_query_count"));

    // Unknown commands: a syntax error that says what to do.
    let error = admin
        .simple_query("SHOW NONSENSE")
        .await
        .expect_err("unknown");
    assert_eq!(sqlstate(&error).as_deref(), Some("42601"));
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("SHOW HELP"), "{message}");
    assert!(
        admin.simple_query("SHOW VERSION").await.is_ok(),
        "still usable"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_get_in_and_stats_users_only_show() {
    let env = Env::start(PoolMode::Transaction, 5).await;
    let refused = common::try_connect(&env.conn_str(APP_USER, APP_PASSWORD, "pgscale"))
        .await
        .expect_err("app is not an admin");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"), "{refused}");
    let wrong = common::try_connect(&env.conn_str("postgres", "wrong", "pgscale"))
        .await
        .expect_err("bad password");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");

    let stats_user = common::connect(&env.conn_str("md5user", "md5-secret", "pgscale")).await;
    let version = show(&stats_user, "SHOW VERSION").await;
    assert!(value(&version[0], "version").starts_with("pgscale "));
    for command in ["RELOAD", "PAUSE", "RESUME", "RECONNECT"] {
        let error = stats_user
            .simple_query(command)
            .await
            .expect_err("stats users may not change anything");
        assert_eq!(
            sqlstate(&error).as_deref(),
            Some("42501"),
            "{command}: {error}"
        );
    }
    // psql, as DBAs use it.
    let out = run_command({
        let mut c = Command::new(pg_tool("psql"));
        c.arg(env.url("postgres", common::SUPERUSER_PASSWORD, "pgscale"))
            .args(["-X", "-A", "-t", "-c", "SHOW VERSION", "-c", "RELOAD"]);
        c
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("pgscale "), "{stdout}");
    assert!(stdout.contains("RELOAD"), "{stdout}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_closes_server_connections_once_released() {
    let env = Env::start(PoolMode::Transaction, 5).await;
    let admin = env.admin().await;
    let app = env.app().await;
    // One connection busy in a transaction while RECONNECT runs: it is closed after it is released.
    let busy = env.app().await;
    busy.simple_query("begin").await.expect("begin");
    let busy_pid: i32 = busy
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let before: i32 = app
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_ne!(busy_pid, before);
    admin
        .simple_query("RECONNECT app")
        .await
        .expect("RECONNECT");
    let servers = show(&admin, "SHOW SERVERS").await;
    let pids: Vec<i64> = servers.iter().map(|s| number(s, "remote_pid")).collect();
    assert!(
        !pids.contains(&i64::from(before)),
        "the idle one is closed at once: {pids:?}"
    );
    assert!(
        pids.contains(&i64::from(busy_pid)),
        "the busy one stays until released"
    );
    busy.simple_query("commit")
        .await
        .expect("the open transaction commits");
    let after: i32 = app
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_ne!(after, before, "a new server connection after RECONNECT");
    assert_ne!(after, busy_pid, "the released busy one was closed too");
    let servers = show(&admin, "SHOW SERVERS").await;
    assert!(
        servers
            .iter()
            .all(|s| number(s, "remote_pid") != i64::from(busy_pid)),
        "{servers:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_open_transactions_and_holds_new_ones() {
    let env = Env::start(PoolMode::Transaction, 5).await;
    env.app()
        .await
        .simple_query("create table paused (id int)")
        .await
        .expect("create");
    let admin = env.admin().await;
    let writer = env.app().await;
    writer
        .simple_query("begin; insert into paused values (1)")
        .await
        .expect("open transaction");

    // A client that only logged in (with settings no one used before, so its login took a server
    // connection) and then sat idle: PAUSE must not wait for it.
    let _idle_login = common::connect(&format!(
        "{} application_name=login-only",
        env.conn_str(APP_USER, APP_PASSWORD, APP_USER)
    ))
    .await;
    let pause = {
        let conn = env.conn_str("postgres", common::SUPERUSER_PASSWORD, "pgscale");
        tokio::spawn(async move {
            let admin = common::connect(&conn).await;
            admin.simple_query("PAUSE").await.map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the open transaction");

    // A new transaction waits (it is not refused) while paused.
    let waiter = env.app().await;
    let held = tokio::spawn(async move {
        waiter
            .query_one("select count(*) from paused", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "new work waits at the gate");
    let clients = show(&admin, "SHOW CLIENTS").await;
    assert!(
        clients.iter().any(|c| value(c, "state") == "waiting"),
        "the held client shows as waiting: {clients:?}"
    );

    // The open transaction still runs and commits; then PAUSE returns.
    writer
        .simple_query("insert into paused values (2); commit")
        .await
        .expect("commit while pausing");
    within("PAUSE", pause)
        .await
        .expect("join")
        .expect("PAUSE succeeds");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "still held after PAUSE completed");
    let pools = show(&admin, "SHOW POOLS").await;
    assert!(
        pools
            .iter()
            .any(|p| number(p, "cl_waiting") >= 1 && number(p, "paused") == 1),
        "{pools:?}"
    );

    admin.simple_query("RESUME").await.expect("RESUME");
    let count = within("held query", held)
        .await
        .expect("join")
        .expect("the held query runs");
    assert_eq!(count, 2, "it ran after the commit");
    let error = admin.simple_query("RESUME").await.expect_err("not paused");
    assert_eq!(sqlstate(&error).as_deref(), Some("55000"), "{error}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_under_pgbench_lose_no_transaction() {
    let env = Env::start(PoolMode::Transaction, 8).await;
    env.pgbench_init(1).await;
    let bench = env.pgbench_in_background(&["-c", "16", "-j", "2", "-T", "8", "-n"]);
    let admin = env.admin().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..2 {
        within("PAUSE under load", admin.simple_query("PAUSE"))
            .await
            .expect("PAUSE");
        let xacts = |stats: Vec<HashMap<String, Option<String>>>| {
            let app = stats
                .iter()
                .find(|s| value(s, "database") == "app")
                .expect("app stats");
            number(app, "total_xact_count")
        };
        let paused_at = xacts(show(&admin, "SHOW STATS").await);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            xacts(show(&admin, "SHOW STATS").await),
            paused_at,
            "no transaction runs while paused"
        );
        admin.simple_query("RESUME").await.expect("RESUME");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    common::assert_pgbench_clean(&bench.await.expect("join"));
    env.stop().await;
}

/// Issue 11: `PAUSE nosuchdb` succeeded (and held nothing); PAUSE, RESUME and RECONNECT of a
/// database that does not exist fail with 3D000, as Postgres answers for an unknown database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_reconnect_of_an_unknown_database_fail() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let admin = env.admin().await;
    for command in ["PAUSE nosuchdb", "RESUME nosuchdb", "RECONNECT nosuchdb"] {
        let e = within(command, admin.simple_query(command))
            .await
            .expect_err(command);
        assert_eq!(sqlstate(&e).as_deref(), Some("3D000"), "{command}: {e}");
        let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
        assert!(message.contains("\"nosuchdb\""), "{message}");
    }
    // A database that exists, used by no client yet, and one in use: both accepted.
    let app = env.app().await;
    app.simple_query("select 1").await.expect("app works");
    for command in [
        "PAUSE postgres",
        "RESUME postgres",
        "RECONNECT app",
        "PAUSE app",
    ] {
        within(command, admin.simple_query(command))
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    within("RESUME", admin.simple_query("RESUME app"))
        .await
        .expect("resume");
    env.stop().await;
}
