//! TLS from the proxy to real Postgres servers started with `ssl = on` (`sslmode`, `sslrootcert`):
//! that it is used (`pg_stat_ssl` of the proxy's own backend), verified as the mode says, refused
//! clearly when it cannot be, and used by every connection the proxy opens (pools, health polls,
//! cancel requests, replicas).

mod common;

use std::time::Duration;

use common::tls::{start_tls_postgres, TlsProxy};
use common::{sqlstate, within};
use pgscale::config::Config;
use pgscale::local_cluster::{LocalPostgres, TestCa, TlsOptions};
use tokio_postgres::Client;

fn hostssl_only() -> TlsOptions {
    TlsOptions {
        hostssl_only: true,
        ..TlsOptions::generated().expect("generate certificates")
    }
}

async fn start(tls: TlsOptions, replicas: usize) -> (LocalPostgres, Vec<LocalPostgres>) {
    tokio::task::spawn_blocking(move || start_tls_postgres(tls, replicas))
        .await
        .expect("join")
}

fn ca_of(pg: &LocalPostgres) -> String {
    pg.tls_ca_path()
        .expect("server runs with TLS")
        .display()
        .to_string()
}

/// Sets the shard's (primary's and replicas') TLS keys.
fn tls_keys(mode: &'static str, ca: Option<String>) -> impl FnOnce(&mut Config) {
    move |config| {
        config.shards[0].sslmode = Some(mode.to_string());
        config.shards[0].sslrootcert = ca;
    }
}

/// Whether the proxy's server connection for this client is encrypted, seen by the server.
async fn server_side_ssl(client: &Client) -> bool {
    within(
        "pg_stat_ssl",
        client.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        ),
    )
    .await
    .expect("pg_stat_ssl")
    .get(0)
}

/// Simple and extended protocol, a transaction, and the health polls, all through `proxy`.
async fn exercise(proxy: &TlsProxy, pg: &LocalPostgres, table: &str) {
    let client = proxy.app().await;
    assert!(server_side_ssl(&client).await, "server connection is TLS");
    within(
        "create table",
        client.batch_execute(&format!("CREATE TABLE {table} (id int, note text)")),
    )
    .await
    .expect("create table");
    // Extended protocol with parameters, inside a transaction.
    within("begin", client.batch_execute("BEGIN"))
        .await
        .expect("begin");
    for id in 1..=3 {
        within(
            "insert",
            client.execute(
                &format!("INSERT INTO {table} VALUES ($1, $2)"),
                &[&id, &format!("row {id}")],
            ),
        )
        .await
        .expect("insert");
    }
    within("commit", client.batch_execute("COMMIT"))
        .await
        .expect("commit");
    let row = within(
        "select",
        client.query_one(
            &format!("SELECT count(*), max(note) FROM {table} WHERE id >= $1"),
            &[&1i32],
        ),
    )
    .await
    .expect("select");
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, String>(1), "row 3");
    // A large result (frames far larger than a TLS record) streams through intact.
    let rows = within(
        "large result",
        client.query(
            "SELECT i, repeat(chr(65 + i % 26), 100000 + i) FROM generate_series(0, 39) i",
            &[],
        ),
    )
    .await
    .expect("large result");
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let (i, text): (i32, String) = (row.get(0), row.get(1));
        let letter = char::from(b'A' + (i % 26) as u8);
        assert_eq!(text.len(), 100_000 + i as usize);
        assert!(text.chars().all(|c| c == letter), "row {i} intact");
    }
    // And a large message the other way (a 3 MB parameter) reaches the server whole.
    let big = "y".repeat(3_000_000);
    let row = within(
        "large parameter",
        client.query_one("SELECT length($1::text)", &[&big]),
    )
    .await
    .expect("large parameter");
    assert_eq!(row.get::<_, i32>(0), 3_000_000);
    // Health polls reach the server over TLS too: the backend is healthy, its breaker closed.
    proxy.wait_backend_state(pg.port(), ("1", "closed")).await;
}

/// A running `pg_sleep` is cancelled through the proxy, whose cancel request goes over TLS.
async fn cancel_works(proxy: &TlsProxy) {
    let client = proxy.app().await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (client, result)
    });
    // Cancel until it lands: the sleep may not have started when the first request arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sleeper.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pg_sleep was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = within("cancel", token.cancel_query(tokio_postgres::NoTls)).await;
    }
    let (client, result) = sleeper.await.expect("join");
    let error = result.expect_err("the sleep was cancelled");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error}");
    assert!(server_side_ssl(&client).await, "still TLS after the cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_verify_ca_and_verify_full_work_against_a_hostssl_only_server() {
    let (pg, _) = start(hostssl_only(), 0).await;
    let ca = ca_of(&pg);
    for (mode, root) in [
        ("require", None),
        ("verify-ca", Some(ca.clone())),
        ("verify-full", Some(ca.clone())),
    ] {
        let proxy = TlsProxy::start(&pg, &[], tls_keys(mode, root)).await;
        exercise(&proxy, &pg, &format!("t_{}", mode.replace('-', "_"))).await;
        if mode == "verify-full" {
            cancel_works(&proxy).await;
        }
        proxy.stop().await;
    }
    // The same settings written libpq-style in the URL.
    let url_ca = ca.replace('/', "%2F");
    let proxy = TlsProxy::start(&pg, &[], |config| {
        config.shards[0].primary = format!(
            "postgres://127.0.0.1:{}/?sslmode=verify-full&sslrootcert={url_ca}",
            pg.port()
        );
    })
    .await;
    assert!(server_side_ssl(&proxy.app().await).await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_against_a_hostssl_only_server_gets_postgres_own_refusal() {
    let (pg, _) = start(hostssl_only(), 0).await;
    let proxy = TlsProxy::start(&pg, &[], tls_keys("disable", None)).await;
    let error = match proxy.try_app().await {
        Err(e) => e,
        Ok(client) => within("query", client.simple_query("SELECT 1"))
            .await
            .expect_err("plaintext is refused"),
    };
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error}");
    assert!(message(&error).contains("no encryption"), "{error}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_verify_are_refused_with_08001_and_open_the_breaker() {
    let (pg, _) = start(
        TlsOptions {
            names: vec!["db.example.com".into()],
            ..TlsOptions::generated().expect("certificates")
        },
        0,
    )
    .await;
    let ca = ca_of(&pg);
    let other_dir = std::env::temp_dir().join(format!("pgscale-other-ca-{}", std::process::id()));
    std::fs::create_dir_all(&other_dir).expect("dir");
    let other_ca = other_dir.join("other-ca.pem");
    TestCa::new("some other CA")
        .expect("CA")
        .write_pem(&other_ca)
        .expect("write CA");

    // A certificate for db.example.com, reached as 127.0.0.1: verify-full refuses it...
    let proxy = TlsProxy::start(&pg, &[], tls_keys("verify-full", Some(ca.clone()))).await;
    let error = first_query_error(&proxy).await;
    assert_eq!(sqlstate(&error).as_deref(), Some("08001"), "{error}");
    let text = message(&error);
    assert!(
        text.contains("sslmode verify-full") && text.contains("not valid for name \"127.0.0.1\""),
        "{text}"
    );
    // ...and so do the health polls: the breaker opens and the backend is unhealthy.
    proxy.wait_backend_state(pg.port(), ("0", "open")).await;
    proxy.stop().await;

    // verify-ca does not check the name: the same server is fine.
    let proxy = TlsProxy::start(&pg, &[], tls_keys("verify-ca", Some(ca.clone()))).await;
    assert!(server_side_ssl(&proxy.app().await).await);
    proxy.stop().await;

    // A CA that did not sign the certificate: verify-ca refuses, and so does require with it
    // (libpq: require with a root certificate verifies like verify-ca).
    for mode in ["verify-ca", "require"] {
        let root = Some(other_ca.display().to_string());
        let proxy = TlsProxy::start(&pg, &[], tls_keys(mode, root)).await;
        let error = first_query_error(&proxy).await;
        assert_eq!(
            sqlstate(&error).as_deref(),
            Some("08001"),
            "{mode}: {error}"
        );
        let text = message(&error);
        assert!(
            text.contains("invalid peer certificate") && text.to_lowercase().contains("issuer"),
            "{mode}: {text}"
        );
        proxy.stop().await;
    }
    // require without a CA does not check the certificate at all.
    let proxy = TlsProxy::start(&pg, &[], tls_keys("require", None)).await;
    assert!(server_side_ssl(&proxy.app().await).await);
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// The server's (or proxy's) message of an error, else its text.
fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_string())
}

/// The error of logging in and running a first query through `proxy` (whichever fails).
async fn first_query_error(proxy: &TlsProxy) -> tokio_postgres::Error {
    match proxy.try_app().await {
        Err(e) => e,
        Ok(client) => within("query", client.simple_query("SELECT 1"))
            .await
            .expect_err("the server connection must fail"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plaintext_and_require_refuses_a_server_without_tls() {
    let pg = tokio::task::spawn_blocking(common::start_postgres)
        .await
        .expect("join");
    // Nothing configured: prefer.
    let proxy = TlsProxy::start(&pg, &[], |_| {}).await;
    let client = proxy.app().await;
    assert!(!server_side_ssl(&client).await, "plaintext");
    let row = within("query", client.query_one("SELECT $1::int + 1", &[&41i32]))
        .await
        .expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
    proxy.wait_backend_state(pg.port(), ("1", "closed")).await;
    proxy.stop().await;

    let proxy = TlsProxy::start(&pg, &[], tls_keys("require", None)).await;
    let error = first_query_error(&proxy).await;
    assert_eq!(sqlstate(&error).as_deref(), Some("08001"), "{error}");
    assert!(message(&error).contains("does not support TLS"), "{error}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_replica_serves_reads() {
    let (pg, replicas) = start(hostssl_only(), 1).await;
    let ca = ca_of(&pg);
    let replica_port = replicas[0].port();
    let proxy = TlsProxy::start(&pg, &replicas, |config| {
        config.routing.read_write_split = true;
        config.shards[0].sslmode = Some("verify-full".into());
        config.shards[0].sslrootcert = Some(ca);
    })
    .await;
    proxy.wait_backend_state(pg.port(), ("1", "closed")).await;
    proxy
        .wait_backend_state(replica_port, ("1", "closed"))
        .await;
    let client = proxy.app().await;
    // A read goes to the replica (once its health polls show it fresh), over TLS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = within(
            "read",
            client.query_one(
                "SELECT pg_is_in_recovery(), inet_server_port(), ssl \
                 FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            ),
        )
        .await
        .expect("read");
        let (in_recovery, port, ssl): (bool, i32, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(ssl, "read over TLS");
        if in_recovery {
            assert_eq!(port, i32::from(replica_port));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A write still goes to the primary, over TLS.
    within("write", client.batch_execute("CREATE TABLE w (id int)"))
        .await
        .expect("write");
    let on_primary = pg
        .psql_as(
            "postgres",
            "postgres",
            "app",
            "SELECT count(*) FROM pg_class WHERE relname = 'w'",
        )
        .expect("psql");
    assert_eq!(on_primary.trim(), "1");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_a_servers_sslmode() {
    let (pg, _) = start(hostssl_only(), 0).await;
    let ca = ca_of(&pg);
    let proxy = TlsProxy::start(&pg, &[], tls_keys("disable", None)).await;
    let error = first_query_error(&proxy).await;
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error}");
    proxy
        .reload(|config| {
            config.shards[0].sslmode = Some("verify-full".into());
            config.shards[0].sslrootcert = Some(ca);
        })
        .await;
    assert!(server_side_ssl(&proxy.app().await).await);
    proxy.stop().await;
}

/// The proxy's server connection itself: TLS, its cancel key says so, a cancel over TLS stops a
/// running query, and an idle TLS connection whose backend was terminated is seen dead (while a
/// healthy idle one is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_connection_cancels_and_notices_its_death() {
    use pgscale::config::{BackendAddr, ServerTls, SslMode};
    use pgscale::pool::query::query_rows;
    use pgscale::pool::server::{send_cancel, ConnectSpec, ServerConn, ServerError};
    use std::sync::Arc;

    let (pg, _) = start(hostssl_only(), 0).await;
    let ca = pg.tls_ca_path().expect("CA").to_path_buf();
    let mut addr = BackendAddr::parse(&format!("postgres://127.0.0.1:{}", pg.port())).expect("url");
    addr.tls = ServerTls::new(SslMode::VerifyFull, Some(&ca)).expect("tls settings");
    let spec = ConnectSpec {
        addr: Arc::new(addr),
        user: "postgres".into(),
        password: Some(common::SUPERUSER_PASSWORD.into()),
        database: "postgres".into(),
        timeout: Duration::from_secs(10),
        application_name: None,
    };
    let mut conn = within("connect", ServerConn::connect(&spec))
        .await
        .expect("connect over TLS");
    assert!(conn.stream.is_tls());
    let key = conn.cancel_key();
    assert!(key.tls, "the cancel key remembers TLS");
    let rows = within(
        "pg_stat_ssl",
        query_rows(
            &mut conn,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ),
    )
    .await
    .expect("query");
    assert_eq!(rows, vec![vec![Some("t".to_string())]]);

    let sleeper = tokio::spawn(async move {
        let result = conn.run_hidden("SELECT pg_sleep(60)").await;
        (conn, result)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sleeper.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "not cancelled");
        tokio::time::sleep(Duration::from_millis(200)).await;
        within("cancel", send_cancel(&key))
            .await
            .expect("cancel request over TLS");
    }
    let (mut conn, result) = sleeper.await.expect("join");
    match result {
        Err(ServerError::Refused { code, .. }) => assert_eq!(code, "57014"),
        other => panic!("expected 57014, got {:?}", other.map(|r| r.status)),
    }

    // Idle and healthy: alive, also after the server had time to send anything unasked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(conn.looks_alive());
    assert!(within("select", query_rows(&mut conn, "SELECT 1"))
        .await
        .is_ok());
    let pid = conn.pid;
    let terminated = pg
        .psql(&format!("SELECT pg_terminate_backend({pid})"))
        .expect("terminate");
    assert_eq!(terminated.trim(), "t");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while conn.looks_alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a terminated TLS connection still looks alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pgscale check` on TLS settings: a good one passes, each bad one is named by its field, exit 2.
#[test]
fn check_names_bad_tls_settings() {
    let dir = std::env::temp_dir().join(format!("pgscale-tls-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    TestCa::new("check CA")
        .expect("CA")
        .write_pem(&ca)
        .expect("write CA");
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "hello").expect("write");
    let check = |text: String| {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).expect("write config");
        std::process::Command::new(env!("CARGO_BIN_EXE_pgscale"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check")
    };
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\n";
    let good = check(format!(
        "{users}[[shards]]\nprimary = \"postgres://db:5432\"\nsslmode = \"verify-full\"\n\
         sslrootcert = \"{}\"\nreplicas = [{{ url = \"postgres://r\", sslmode = \"require\" }}]\n",
        ca.display()
    ));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = check(format!(
        "{users}[[shards]]\nprimary = \"postgres://db?sslmode=verify-ca\"\n\
         replicas = [{{ url = \"postgres://r\", sslmode = \"verify_full\" }}, \
         {{ url = \"postgres://s\", sslmode = \"require\", sslrootcert = \"{}\" }}]\n",
        not_pem.display()
    ));
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    for (field, text) in [
        ("shards[0].primary", "sslmode verify-ca needs sslrootcert"),
        (
            "shards[0].replicas[0].sslmode",
            "unknown sslmode `verify_full`",
        ),
        ("shards[0].replicas[1].sslrootcert", "no CERTIFICATE"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{field}: ")) && l.contains(text)),
            "{field}: {text} missing from:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// pgbench through the proxy to a TLS-only server: many clients, transactions and pooled TLS
/// connections handed between them, without a failed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_clean_over_tls() {
    let (pg, _) = start(hostssl_only(), 0).await;
    let ca = ca_of(&pg);
    let proxy = TlsProxy::start(&pg, &[], tls_keys("verify-full", Some(ca))).await;
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        common::APP_USER,
        common::APP_PASSWORD,
        proxy.port,
        common::APP_USER
    );
    let mut init = std::process::Command::new(common::pg_tool("pgbench"));
    init.args(["-i", "-q", "-s", "1"]).arg(&url);
    let out = common::run_command(init).await;
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = std::process::Command::new(common::pg_tool("pgbench"));
    run.args(["-c", "8", "-j", "2", "-t", "100", "-M", "extended"])
        .arg(&url);
    let out = tokio::time::timeout(Duration::from_secs(120), common::run_command(run))
        .await
        .expect("pgbench finishes");
    common::assert_pgbench_clean(&out);
    proxy.stop().await;
}
