//! Pooling through pgscale against a real Postgres: many clients over few connections, exhaustion,
//! dead idle connections, clients that vanish mid-transaction, graceful shutdown.

mod common;

use std::time::Duration;

use common::{sqlstate, within, Env};
use pgscale::config::PoolMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_ten_connections_without_cross_talk() {
    let env = Env::start(PoolMode::Transaction, 10).await;
    env.app()
        .await
        .batch_execute("CREATE TABLE owner (client int, seq int)")
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for c in 0..200i32 {
        let conn_str = env.conn_str(common::APP_USER, common::APP_PASSWORD, common::APP_USER);
        tasks.push(tokio::spawn(async move {
            let client = common::connect(&conn_str).await;
            client
                .batch_execute(&format!("SET application_name = 'c{c}'"))
                .await
                .expect("set");
            for seq in 0..10i32 {
                // A transaction with a read of its own write and a session-setting check.
                let tx_sql = format!(
                    "BEGIN; INSERT INTO owner VALUES ({c}, {seq}); \
                     SELECT count(*) FROM owner WHERE client = {c}; COMMIT"
                );
                client.batch_execute(&tx_sql).await.expect("transaction");
                let row = client
                    .query_one("SELECT $1::int, current_setting('application_name')", &[&c])
                    .await
                    .expect("query");
                assert_eq!(row.get::<_, i32>(0), c);
                assert_eq!(
                    row.get::<_, String>(1),
                    format!("c{c}"),
                    "setting leaked between clients"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let direct = env.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM owner", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2000);
    let per_client: i64 = direct
        .query_one("SELECT count(DISTINCT (client, seq)) FROM owner", &[])
        .await
        .expect("distinct")
        .get(0);
    assert_eq!(per_client, 2000);
    let server_conns: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .expect("activity")
        .get(0);
    assert!(
        server_conns <= 10,
        "pool_size 10 but {server_conns} server connections"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_gives_53300_and_recovers() {
    let env = Env::start_with(
        |c| c.pool.checkout_timeout_ms = 300,
        PoolMode::Transaction,
        1,
    )
    .await;
    let holder = env.app().await;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("hold the only connection");
    let waiter = env.app().await;
    let err = waiter
        .query("SELECT 1", &[])
        .await
        .expect_err("pool is full");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("pool_size = 1"), "{message}");
    // The same client works once the connection is free; so does the simple protocol.
    let err = waiter
        .batch_execute("SELECT 1")
        .await
        .expect_err("still full");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    holder.batch_execute("COMMIT").await.expect("commit");
    let one: i32 = waiter
        .query_one("SELECT 1", &[])
        .await
        .expect("recovered")
        .get(0);
    assert_eq!(one, 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_connections_are_replaced_unseen() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let client = env.app().await;
    client
        .batch_execute("SELECT 1")
        .await
        .expect("warm the pool");
    let direct = env.direct().await;
    let killed = direct
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .expect("terminate");
    assert!(
        !killed.is_empty(),
        "there was an idle pooled connection to kill"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let one: i32 = client
            .query_one("SELECT 1", &[])
            .await
            .expect("client never sees it")
            .get(0);
        assert_eq!(one, 1);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_leaves_nothing_open() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let setup = env.app().await;
    setup
        .batch_execute("CREATE TABLE k (v int)")
        .await
        .expect("create");
    // psql as a real client process, killed while idle in a transaction.
    let mut psql = std::process::Command::new(common::pg_tool("psql"))
        .arg(env.app_url())
        .args(["-X", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    {
        use std::io::Write;
        let stdin = psql.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"BEGIN;\nINSERT INTO k VALUES (1);\nSELECT pg_sleep(0);\n")
            .expect("write");
        stdin.flush().expect("flush");
    }
    let direct = env.direct().await;
    let open_tx = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'";
    let mut saw_open = false;
    for _ in 0..50 {
        let n: i64 = direct
            .query_one(open_tx, &[])
            .await
            .expect("activity")
            .get(0);
        if n == 1 {
            saw_open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_open,
        "the transaction was open on the server before the kill"
    );
    psql.kill().expect("kill psql");
    let _ = psql.wait();
    let mut closed = false;
    for _ in 0..50 {
        let n: i64 = direct
            .query_one(open_tx, &[])
            .await
            .expect("activity")
            .get(0);
        if n == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "transaction still open after the client died");
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM k", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "the dead client's insert was rolled back");
    // The connection went back clean: the next client is not inside that transaction.
    let next = env.app().await;
    let inherited: bool = next
        .query_one("SELECT pg_current_xact_id_if_assigned() IS NOT NULL", &[])
        .await
        .expect("query")
        .get(0);
    assert!(
        !inherited,
        "the next client must not run inside the dead client's transaction"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_transactions_finish() {
    let mut env = Env::start(PoolMode::Transaction, 2).await;
    let setup = env.app().await;
    setup
        .batch_execute("CREATE TABLE s (v int)")
        .await
        .expect("create");
    let in_tx = env.app().await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO s VALUES (1)")
        .await
        .expect("begin");
    let idle = env.app().await;
    let proxy = env.proxy.take().expect("proxy");
    let shutdown = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused, idle ones are told and closed.
    let refused = common::try_connect(&env.conn_str(
        common::APP_USER,
        common::APP_PASSWORD,
        common::APP_USER,
    ))
    .await;
    assert!(refused.is_err(), "no new clients during shutdown");
    assert!(
        idle.query("SELECT 1", &[]).await.is_err(),
        "idle client closed"
    );
    // The open transaction can still commit.
    in_tx
        .batch_execute("INSERT INTO s VALUES (2); COMMIT")
        .await
        .expect("commit during shutdown");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("join");
    let direct = env.direct().await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM s", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients_get_53300() {
    let env = Env::start_with(|c| c.listen.max_client_conn = 2, PoolMode::Transaction, 2).await;
    let _a = env.app().await;
    let _b = env.app().await;
    let err = common::try_connect(&env.conn_str(
        common::APP_USER,
        common::APP_PASSWORD,
        common::APP_USER,
    ))
    .await
    .expect_err("third client refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    env.stop().await;
}

/// Issue 11: unauthenticated sockets counted toward `max_client_conn` with no slot kept for admins,
/// so stalled sockets locked operators out. Past the limit, only `[admin] users` get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_logs_in_while_clients_and_stalled_sockets_fill_max_client_conn() {
    let env = Env::start_with(
        |c| {
            c.listen.max_client_conn = 5;
            c.listen.admin_reserved_conn = 2;
        },
        PoolMode::Transaction,
        2,
    )
    .await;
    let _apps = [env.app().await, env.app().await];
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let stream = within(
            "connect",
            tokio::net::TcpStream::connect(("127.0.0.1", env.port)),
        )
        .await
        .expect("stalled socket");
        stalled.push(stream);
    }
    // The accept loop counts them before the next connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = within("admin login with the proxy full", env.admin()).await;
    within("SHOW POOLS", admin.simple_query("SHOW POOLS"))
        .await
        .expect("the admin console works");
    let err = within(
        "app login with the proxy full",
        common::try_connect(&env.conn_str(
            common::APP_USER,
            common::APP_PASSWORD,
            common::APP_USER,
        )),
    )
    .await
    .expect_err("an app client past max_client_conn is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains("max_client_conn = 5"), "{message}");
    drop(stalled);
    env.stop().await;
}

/// Backend pids of the `app` user's server connections, seen from Postgres.
async fn app_backends(direct: &tokio_postgres::Client) -> Vec<i32> {
    direct
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' ORDER BY pid",
            &[],
        )
        .await
        .expect("activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_idle_timeout_and_max_lifetime_are_kept() {
    let env = Env::start_with(
        |c| {
            c.pool.min_idle = 2;
            c.pool.max_lifetime_ms = 2_500;
        },
        PoolMode::Transaction,
        5,
    )
    .await;
    let client = env.app().await;
    client
        .batch_execute("SELECT 1")
        .await
        .expect("pool created");
    let direct = env.direct().await;
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let first = app_backends(&direct).await;
    assert!(
        first.len() >= 2,
        "min_idle = 2 keeps two connections open: {first:?}"
    );
    // After max_lifetime every one of them has been replaced (and min_idle refilled).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let later = app_backends(&direct).await;
    assert!(later.len() >= 2, "{later:?}");
    assert!(
        later.iter().all(|pid| !first.contains(pid)),
        "connections older than max_lifetime were renewed: {first:?} -> {later:?}"
    );
    env.stop().await;

    let env = Env::start_with(|c| c.pool.idle_timeout_ms = 500, PoolMode::Transaction, 5).await;
    let clients = [env.app().await, env.app().await, env.app().await];
    let busy = clients
        .iter()
        .map(|c| c.batch_execute("SELECT pg_sleep(0.3)"));
    for r in futures_util::future::join_all(busy).await {
        r.expect("parallel queries");
    }
    let direct = env.direct().await;
    assert!(app_backends(&direct).await.len() >= 3);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        app_backends(&direct).await,
        Vec::<i32>::new(),
        "idle connections closed after idle_timeout"
    );
    // And the pool opens new ones on demand.
    clients[0]
        .batch_execute("SELECT 1")
        .await
        .expect("reconnects");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_gives_a_clear_error_fast() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let env = Env::start_with(
        move |c| c.shards[0].primary = format!("postgres://127.0.0.1:{dead_port}"),
        PoolMode::Transaction,
        2,
    )
    .await;
    let started = std::time::Instant::now();
    let err = common::try_connect(&env.conn_str(
        common::APP_USER,
        common::APP_PASSWORD,
        common::APP_USER,
    ))
    .await
    .expect_err("no backend");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains(&format!("127.0.0.1:{dead_port}")),
        "names the backend: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_hands_the_next_client_a_clean_connection() {
    let env = Env::start(PoolMode::Session, 1).await;
    let a = env.app().await;
    a.batch_execute(
        "SET search_path = somewhere; PREPARE mine AS SELECT 1; CREATE TEMP TABLE tmp (x int)",
    )
    .await
    .expect("dirty the session");
    let a_pid: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = env.app().await;
    let b_pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_eq!(
        a_pid, b_pid,
        "pool_size 1: the same server connection was reused"
    );
    let path: String = b
        .query_one("SHOW search_path", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(path, "\"$user\", public");
    let prepared: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine'",
            &[],
        )
        .await
        .expect("prepared")
        .get(0);
    assert_eq!(
        prepared, 0,
        "DISCARD ALL dropped the previous client's statements"
    );
    let err = b
        .batch_execute("SELECT * FROM tmp")
        .await
        .expect_err("temp table gone");
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    env.stop().await;
}
