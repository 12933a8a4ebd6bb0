//! Operating a running proxy: hot reload (RELOAD and SIGHUP) under a 32-client pgbench load, invalid
//! configs rejected while the old one keeps running, and a switchover with PAUSE, RELOAD and RESUME.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sqlstate, within, Env, APP_PASSWORD, APP_USER};
use pgscale::config::PoolMode;
use tokio_postgres::{Client, SimpleQueryMessage};

/// One column of a SHOW command, per row.
async fn show_column(admin: &Client, what: &str, column: &str) -> Vec<String> {
    let messages = within(what, admin.simple_query(what)).await.expect(what);
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(column).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// SHOW CONFIG's value of `key`.
async fn config_value(admin: &Client, key: &str) -> String {
    let messages = admin
        .simple_query("SHOW CONFIG")
        .await
        .expect("SHOW CONFIG");
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) if row.get("key") == Some(key) => {
                row.get("value").map(str::to_string)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {key} in SHOW CONFIG"))
}

async fn reload(admin: &Client) -> Result<(), tokio_postgres::Error> {
    within("RELOAD", admin.simple_query("RELOAD"))
        .await
        .map(|_| ())
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_pgbench_load_applies_pools_users_and_replicas() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 10).await;
    env.pgbench_init(1).await;
    env.wait_replicas_caught_up().await;
    // Reads (to the replica) and writes (to the primary), 32 clients.
    let bench = env.pgbench_in_background(&[
        "-c",
        "32",
        "-j",
        "2",
        "-T",
        "10",
        "-n",
        "-b",
        "select-only@3",
        "-b",
        "tpcb-like@1",
    ]);
    let admin = env.admin().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Smaller pools.
    env.rewrite_config(|c| c.pool.pool_size = 4);
    reload(&admin).await.expect("reload pool_size");
    assert_eq!(config_value(&admin, "pool.pool_size").await, "4");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sizes = show_column(&admin, "SHOW POOLS", "pool_size").await;
    assert!(sizes.iter().all(|s| s == "4"), "{sizes:?}");

    // A new user, usable at once without a restart.
    env.rewrite_config(|c| {
        let mut user = common::user(
            "newcomer",
            Some("fresh"),
            pgscale::config::AuthMethod::ScramSha256,
        );
        user.server_user = Some(APP_USER.into());
        user.server_password = Some(APP_PASSWORD.into());
        c.users.push(user);
    });
    reload(&admin).await.expect("reload users");
    let newcomer = common::connect(&env.conn_str("newcomer", "fresh", APP_USER)).await;
    newcomer
        .simple_query("select 1")
        .await
        .expect("the new user works");

    // The replica removed, then added back, while clients keep reading.
    let replica = env.read_config().shards[0].replicas.clone();
    env.rewrite_config(|c| c.shards[0].replicas.clear());
    reload(&admin).await.expect("reload without the replica");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let roles = show_column(&admin, "SHOW SHARDS", "role").await;
    assert_eq!(roles, vec!["primary"], "the replica is gone");
    env.rewrite_config(|c| c.shards[0].replicas = replica.clone());
    reload(&admin).await.expect("reload with the replica back");
    let roles = show_column(&admin, "SHOW SHARDS", "role").await;
    assert_eq!(roles, vec!["primary", "replica"]);

    // Longer timeouts, larger pools again.
    env.rewrite_config(|c| {
        c.pool.pool_size = 12;
        c.pool.checkout_timeout_ms = 20_000;
    });
    reload(&admin).await.expect("reload timeouts");

    common::assert_pgbench_clean(&bench.await.expect("join"));

    // Reads reach the replica again after it came back.
    let replica_port = env.replicas[0].port();
    let mut on_replica = false;
    for _ in 0..100 {
        let app = env.app().await;
        let port: i32 = app
            .query_one("select inet_server_port()", &[])
            .await
            .expect("read")
            .get(0);
        if port == i32::from(replica_port) {
            on_replica = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(on_replica, "reads go to the re-added replica");

    // Read-your-writes still reaches the replica after reloads that kept the backends (the
    // primary's polled WAL position carries over to the reloaded topology).
    let writer = env.app().await;
    writer
        .simple_query("create table if not exists ryw (x int); insert into ryw values (1)")
        .await
        .expect("write");
    let mut read_on_replica = false;
    for _ in 0..100 {
        let row = writer
            .query_one("select inet_server_port(), count(*) from ryw", &[])
            .await
            .expect("read after write");
        assert_eq!(row.get::<_, i64>(1), 1, "the client reads its own write");
        if row.get::<_, i32>(0) == i32::from(replica_port) {
            read_on_replica = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        read_on_replica,
        "after its write is replayed, the writer's reads use the replica"
    );
    let reloads = common::metrics::scrape(&env).await;
    assert_eq!(
        reloads.value("pgscale_config_reloads_total{result=\"ok\"}"),
        5.0
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_old_one_keeps_running() {
    let env = Env::start(PoolMode::Transaction, 6).await;
    let admin = env.admin().await;
    let app = env.app().await;
    let good = std::fs::read_to_string(&env.config_path).expect("read");

    std::fs::write(&env.config_path, "this is [not toml").expect("write");
    let error = reload(&admin).await.expect_err("unparsable");
    assert_eq!(sqlstate(&error).as_deref(), Some("F0000"), "{error}");
    assert!(
        db_message(&error).contains("the running config is unchanged"),
        "{}",
        db_message(&error)
    );

    std::fs::write(&env.config_path, &good).expect("write");
    env.rewrite_config(|c| c.pool.pool_size = 0);
    let error = reload(&admin).await.expect_err("invalid");
    assert!(
        db_message(&error).contains("pool.pool_size"),
        "{}",
        db_message(&error)
    );

    std::fs::write(&env.config_path, &good).expect("write");
    env.rewrite_config(|c| {
        c.listen.address = "127.0.0.1:1".into();
        c.pool.mode = PoolMode::Session;
    });
    let error = reload(&admin).await.expect_err("restart-only");
    let message = db_message(&error);
    assert!(
        message.contains("listen.address") && message.contains("pool.mode"),
        "{message}"
    );

    std::fs::write(&env.config_path, &good).expect("write");
    env.rewrite_config(|c| {
        c.users.push(common::user(
            "nopassword",
            None,
            pgscale::config::AuthMethod::Md5,
        ))
    });
    let error = reload(&admin).await.expect_err("a user without a password");
    assert!(
        db_message(&error).contains("users[4]"),
        "{}",
        db_message(&error)
    );

    // Nothing changed: the old settings run, clients are served.
    assert_eq!(config_value(&admin, "pool.pool_size").await, "6");
    assert_eq!(config_value(&admin, "pool.mode").await, "transaction");
    app.simple_query("select 1")
        .await
        .expect("the client still works");
    let metrics = common::metrics::scrape(&env).await;
    assert_eq!(
        metrics.value("pgscale_config_reloads_total{result=\"failed\"}"),
        4.0
    );
    assert_eq!(
        metrics.value("pgscale_config_reloads_total{result=\"ok\"}"),
        0.0
    );

    // A valid one then applies.
    std::fs::write(&env.config_path, &good).expect("write");
    env.rewrite_config(|c| c.pool.pool_size = 7);
    reload(&admin).await.expect("valid reload");
    assert_eq!(config_value(&admin, "pool.pool_size").await, "7");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_running_pgscale_serve() {
    let env = Env::start(PoolMode::Transaction, 3).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let path = env.config_path.with_extension("serve.toml");
    let mut config = env.read_config();
    config.listen.address = format!("127.0.0.1:{port}");
    common::write_config(&path, &config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .args(["--log-json", "serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgscale serve");
    let admin_conn = format!(
        "host=127.0.0.1 port={port} user=postgres password={} dbname=pgscale",
        common::SUPERUSER_PASSWORD
    );
    let mut admin = None;
    for _ in 0..100 {
        if let Ok(client) = common::try_connect(&admin_conn).await {
            admin = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = admin.expect("pgscale serve accepts the admin");
    // Traffic with a password and a literal the logs must not show.
    let app_conn = format!(
        "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_USER}"
    );
    let app = common::connect(&app_conn).await;
    app.query("select $1::text", &[&"parameter-value-42"])
        .await
        .expect("query");
    assert_eq!(config_value(&admin, "pool.pool_size").await, "3");

    config.pool.pool_size = 9;
    common::write_config(&path, &config);
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let mut reloaded = false;
    for _ in 0..100 {
        if config_value(&admin, "pool.pool_size").await == "9" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP applied the new pool size");
    app.simple_query("select 1")
        .await
        .expect("the client stays connected");
    drop(app);
    drop(admin);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SAFETY: as above.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    // JSON lines: one per connection start and end, with duration and counts.
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with('{')),
        "JSON logs:\n{stderr}"
    );
    assert!(stderr.contains("config reloaded"), "{stderr}");
    let ended = lines
        .iter()
        .find(|l| l.contains("client disconnected") && l.contains("\"user\":\"app\""))
        .unwrap_or_else(|| panic!("a disconnect line for app:\n{stderr}"));
    for field in [
        "duration_ms",
        "queries",
        "transactions",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(ended.contains(field), "{field} in {ended}");
    }
    assert!(stderr.contains("client connected"), "{stderr}");
    // (The superuser's password is its name, which the logs rightly show.)
    for secret in [APP_PASSWORD, "parameter-value-42"] {
        assert!(
            !stderr.contains(secret),
            "`{secret}` must not be logged:\n{stderr}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_pause_reload_resume_loses_no_write() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 5).await;
    env.app()
        .await
        .simple_query("create table switched (n int)")
        .await
        .expect("create");
    // A client writing all along, counting what committed and what failed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let client = env.app().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut committed, mut failed) = (0i64, Vec::new());
            let mut n = 0i32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                match client
                    .execute("insert into switched values ($1)", &[&n])
                    .await
                {
                    Ok(_) => committed += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (committed, failed)
        })
    };
    let admin = env.admin().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The switchover: hold new transactions, let the replica catch up and promote it, point the
    // config at it, reload, let clients go on.
    within("PAUSE", admin.simple_query("PAUSE"))
        .await
        .expect("PAUSE");
    env.wait_replicas_caught_up().await;
    let replica_url = format!(
        "postgres://{}:{}",
        env.replicas[0].host(),
        env.replicas[0].port()
    );
    let replica = &env.replicas[0];
    tokio::task::block_in_place(|| replica.promote()).expect("promote the replica");
    env.rewrite_config(|c| {
        c.shards[0].primary = replica_url.clone();
        c.shards[0].replicas.clear();
    });
    reload(&admin).await.expect("reload with the new primary");
    admin.simple_query("RESUME").await.expect("RESUME");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (committed, failed) = within("writer", writer).await.expect("join");
    assert!(
        failed.is_empty(),
        "no client error across the switchover: {failed:?}"
    );

    // Every committed row is on the new primary; the old one stopped getting writes at the pause.
    let new_primary = env.direct_to(&env.replicas[0]).await;
    let on_new: i64 = new_primary
        .query_one("select count(*) from switched", &[])
        .await
        .expect("count on the new primary")
        .get(0);
    assert_eq!(on_new, committed, "no committed write lost");
    let on_old: i64 = env
        .direct()
        .await
        .query_one("select count(*) from switched", &[])
        .await
        .expect("count on the old primary")
        .get(0);
    assert!(
        on_old < committed,
        "writes after the switch went to the new primary ({on_old} of {committed} on the old)"
    );
    let shards = show_column(&admin, "SHOW SHARDS", "port").await;
    assert_eq!(shards, vec![env.replicas[0].port().to_string()]);
    env.stop().await;
}
