//! Wire protocol through pgscale against a real Postgres: simple and extended queries, pipelining,
//! prepared statements across server connections, COPY, cancel, session settings.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::RawClient;
use common::{sqlstate, Env};
use futures_util::{SinkExt, TryStreamExt};
use pgscale::config::PoolMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_with_errors_and_recovery() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let client = env.app().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .expect("simple multi-statement");
    let rows = client
        .query("SELECT v FROM t WHERE id = $1", &[&2i32])
        .await
        .expect("extended");
    assert_eq!(rows[0].get::<_, String>(0), "b");

    // An error mid-batch and recovery on the next Sync.
    let err = client
        .query("SELECT 1/0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = client
        .batch_execute("SELECT 1; SELEC 2")
        .await
        .expect_err("syntax");
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("after error")
        .get(0);
    assert_eq!(n, 2);

    // Pipelining: several queries in flight on one connection, answered in order.
    let futures: Vec<_> = (0..50)
        .map(|i| {
            let client = &client;
            async move {
                let row = client
                    .query_one("SELECT $1::int + 1", &[&i])
                    .await
                    .expect("pipelined");
                assert_eq!(row.get::<_, i32>(0), i + 1);
            }
        })
        .collect();
    futures_util::future::join_all(futures).await;

    // Notices reach the client.
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        .await
        .expect("notice");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_server_switches() {
    // pool of 3, 6 clients: every client's transactions land on varying server connections.
    let env = Env::start(PoolMode::Transaction, 3).await;
    let setup = env.app().await;
    setup
        .batch_execute("CREATE TABLE kv (k int primary key, v int)")
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for c in 0..6i32 {
        let client = env.app().await;
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO kv VALUES ($1, $2)")
                .await
                .expect("prepare insert");
            let select = client
                .prepare("SELECT v FROM kv WHERE k = $1")
                .await
                .expect("prepare select");
            // Same text as other clients, different client-side statement objects.
            for i in 0..100i32 {
                let k = c * 1000 + i;
                client
                    .execute(&insert, &[&k, &(k * 2)])
                    .await
                    .expect("insert");
                let v: i32 = client
                    .query_one(&select, &[&k])
                    .await
                    .expect("select")
                    .get(0);
                assert_eq!(v, k * 2, "no cross-talk");
            }
            // A statement closed by the client is gone for it, and can be prepared again.
            drop(select);
            let again = client
                .prepare("SELECT v FROM kv WHERE k = $1")
                .await
                .expect("re-prepare");
            let v: i32 = client
                .query_one(&again, &[&(c * 1000)])
                .await
                .expect("select")
                .get(0);
            assert_eq!(v, c * 2000);
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let n: i64 = setup
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 600);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_errors_match_postgres() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let mut raw = RawClient::connect(env.port, &[("user", "trustuser"), ("database", "app")])
        .await
        .expect("login");
    use common::raw::{frame, read_msg};
    use tokio::io::AsyncWriteExt;
    // Bind to a statement that was never prepared: Postgres' own 26000.
    let mut batch = Vec::new();
    batch.extend(frame(b'B', b"\0nosuch\0\0\0\0\0\0\0"));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', b""));
    raw.stream.write_all(&batch).await.expect("send");
    let (tag, body) = read_msg(&mut raw.stream).await.expect("reply");
    assert_eq!(tag, b'E');
    assert_eq!(common::raw::error_code(&body), "26000");
    assert!(String::from_utf8_lossy(&body).contains("nosuch"));
    let (tag, _) = read_msg(&mut raw.stream).await.expect("ready");
    assert_eq!(tag, b'Z');

    // Preparing a name twice: 42P05 naming the client's statement, not pgscale's.
    let parse = frame(b'P', b"dup\0select 1\0\0\0");
    let mut batch = Vec::new();
    batch.extend(&parse);
    batch.extend(frame(b'S', b""));
    batch.extend(&parse);
    batch.extend(frame(b'S', b""));
    raw.stream.write_all(&batch).await.expect("send");
    let tags: Vec<(u8, Vec<u8>)> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(read_msg(&mut raw.stream).await.expect("reply"));
        }
        v
    };
    assert_eq!(tags[0].0, b'1');
    assert_eq!(tags[1].0, b'Z');
    assert_eq!(tags[2].0, b'E');
    assert_eq!(common::raw::error_code(&tags[2].1), "42P05");
    let text = String::from_utf8_lossy(&tags[2].1);
    assert!(text.contains("\"dup\""), "{text}");
    assert!(!text.contains("pgscale_"), "{text}");
    assert_eq!(tags[3].0, b'Z');
    assert_eq!(raw.query("select 42").await.expect("usable"), vec!["42"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trip_of_100k_rows_is_byte_identical() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let client = env.app().await;
    client
        .batch_execute("CREATE TABLE c (id int, name text, note text)")
        .await
        .expect("create");
    let mut data = Vec::new();
    for i in 0..100_000 {
        data.extend_from_slice(
            format!("{i}\tname {i}\tnote with tab\\t and newline\\n {}\n", i * 7).as_bytes(),
        );
    }
    let sink = client.copy_in("COPY c FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    for chunk in data.chunks(65_536) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .expect("send chunk");
    }
    let n = sink.finish().await.expect("finish");
    assert_eq!(n, 100_000);
    let stream = client.copy_out("COPY c TO STDOUT").await.expect("copy out");
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("read copy");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(out.len(), data.len());
    assert!(out == data, "COPY output differs from input");

    // A failed COPY leaves the connection usable.
    let sink = client.copy_in("COPY c FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\ty\n"))
        .await
        .expect("send");
    let err = sink.finish().await.expect_err("bad row");
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"));
    let n: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(n, 100_000);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_the_running_query() {
    let env = Env::start(PoolMode::Transaction, 4).await;
    let victim = env.app().await;
    let bystander = env.app().await;
    let token = victim.cancel_token();
    let sleeper = tokio::spawn(async move { victim.query("SELECT pg_sleep(30)", &[]).await });
    let other =
        tokio::spawn(async move { bystander.query("SELECT pg_sleep(2), 'done'", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let err = sleeper.await.expect("join").expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let rows = other.await.expect("join").expect("bystander not cancelled");
    assert_eq!(rows[0].get::<_, String>(1), "done");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_across_server_connections() {
    // Pool of 2 and another client with other settings: settings must neither leak nor get lost.
    let env = Env::start(PoolMode::Transaction, 2).await;
    let a = common::connect(&format!(
        "{} options='-c search_path=alpha,public -c statement_timeout=7s' application_name=client_a",
        env.conn_str(common::APP_USER, common::APP_PASSWORD, common::APP_USER)
    ))
    .await;
    let b = env.app().await;

    for round in 0..20 {
        assert_eq!(
            show_value(&a, "search_path").await,
            "alpha,public",
            "round {round}"
        );
        assert_eq!(show_value(&a, "statement_timeout").await, "7s");
        assert_eq!(show_value(&a, "application_name").await, "client_a");
        assert_eq!(show_value(&b, "search_path").await, "\"$user\", public");
        assert_eq!(show_value(&b, "statement_timeout").await, "0");
        b.batch_execute("BEGIN; SELECT pg_sleep(0.01); COMMIT")
            .await
            .expect("b works");
    }
    a.batch_execute(
        "SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'German'; SET search_path = beta",
    )
    .await
    .expect("set");
    b.batch_execute("SET application_name = 'client_b'")
        .await
        .expect("set b");
    for _ in 0..10 {
        assert_eq!(show_value(&a, "timezone").await, "Asia/Tokyo");
        assert_eq!(show_value(&a, "datestyle").await, "German, DMY");
        assert_eq!(show_value(&a, "search_path").await, "beta");
        assert_eq!(
            show_value(&b, "timezone").await,
            show_value(&env.direct().await, "timezone").await
        );
        assert_eq!(show_value(&b, "application_name").await, "client_b");
    }
    // RESET goes back to the client's startup value, not the pool's.
    a.batch_execute("RESET search_path").await.expect("reset");
    assert_eq!(show_value(&a, "search_path").await, "alpha,public");
    a.batch_execute("RESET ALL").await.expect("reset all");
    assert_eq!(show_value(&a, "search_path").await, "alpha,public");
    assert_eq!(
        show_value(&a, "timezone").await,
        show_value(&b, "timezone").await
    );
    // A SET rolled back does not stick.
    a.batch_execute("BEGIN; SET statement_timeout = '1s'; ROLLBACK")
        .await
        .expect("rollback");
    assert_eq!(show_value(&a, "statement_timeout").await, "7s");
    // Settings made through the extended protocol count too.
    a.execute("SET application_name = 'via_extended'", &[])
        .await
        .expect("extended set");
    b.batch_execute("SELECT 1").await.expect("b");
    assert_eq!(show_value(&a, "application_name").await, "via_extended");
    env.stop().await;
}

async fn show_value(client: &tokio_postgres::Client, name: &str) -> String {
    let rows = client
        .simple_query(&format!("SHOW {name}"))
        .await
        .expect("show");
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            return row.get(0).unwrap_or_default().to_string();
        }
    }
    panic!("SHOW {name} returned no row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_reported_as_postgres_spells_them() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let mut raw = RawClient::connect(
        env.port,
        &[
            ("user", "trustuser"),
            ("database", "app"),
            ("client_encoding", "utf8"),
            ("DateStyle", "iso"),
            ("application_name", "raw_app"),
            ("options", "-c idle_in_transaction_session_timeout=60s"),
        ],
    )
    .await
    .expect("login");
    assert_eq!(
        raw.params.get("client_encoding").map(String::as_str),
        Some("UTF8")
    );
    assert_eq!(
        raw.params.get("DateStyle").map(String::as_str),
        Some("ISO, MDY")
    );
    assert_eq!(
        raw.params.get("application_name").map(String::as_str),
        Some("raw_app")
    );
    assert!(raw.params.contains_key("server_version"));
    assert!(raw.params.contains_key("integer_datetimes"));
    assert_eq!(
        raw.query("SHOW idle_in_transaction_session_timeout")
            .await
            .expect("show"),
        vec!["1min"]
    );
    // An invalid value is refused at startup, as Postgres does.
    let bad = RawClient::connect(
        env.port,
        &[
            ("user", "trustuser"),
            ("database", "app"),
            ("options", "-c statement_timeout=banana"),
        ],
    )
    .await;
    assert_eq!(bad.err().as_deref(), Some("error 22023"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_shows_the_real_server_pid() {
    let env = Env::start(PoolMode::Session, 3).await;
    let mut raw = RawClient::connect(env.port, &[("user", "trustuser"), ("database", "app")])
        .await
        .expect("login");
    let pid = raw.query("SELECT pg_backend_pid()").await.expect("pid");
    assert_eq!(pid, vec![raw.pid.to_string()]);
    // NOTIFY between two pgscale clients names the sender by the pid its BackendKeyData gave.
    let mut sender = RawClient::connect(env.port, &[("user", "trustuser"), ("database", "app")])
        .await
        .expect("login");
    raw.query("LISTEN chan").await.expect("listen");
    sender.query("NOTIFY chan, 'hello'").await.expect("notify");
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.query("SELECT 1").await.expect("poll");
    assert_eq!(
        raw.notifications,
        vec![(sender.pid, "chan".to_string(), "hello".to_string())]
    );
    let direct = env.direct().await;
    let killed: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&raw.pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(killed);
    let after = raw.query("SELECT 1").await;
    assert!(
        after.is_err(),
        "the terminated session is gone, as with Postgres"
    );
    env.stop().await;
}
