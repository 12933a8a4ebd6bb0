//! Client TLS (`[listen] tls_mode`): real clients (tokio-postgres with rustls, psql, raw sockets)
//! through the proxy to a real Postgres.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::raw::{error_code, startup_packet};
use common::tls_client::{
    app_tls, closes, error_message, raw_tls, read_msg, require_config, ssl_request, start_tls,
    try_connect_tls, verify_full_config, CertFiles, GSSENC_REQUEST, SSL_REQUEST,
};
use common::{
    pg_tool, run_command, simple_rows, sqlstate, try_connect, within, Env, APP_PASSWORD, APP_USER,
    SUPERUSER_PASSWORD,
};
use pgscale::tls::TlsMode;
use tokio::io::AsyncWriteExt;

fn app_conn(env: &Env, extra: &str) -> String {
    format!("{} {extra}", env.conn_str(APP_USER, APP_PASSWORD, APP_USER))
}

/// Whether `at_least` failed TLS handshakes were counted within 10 s (the proxy sees the failure after the
/// client has given up).
async fn handshake_failures_counted(env: &Env, at_least: u64) -> bool {
    let stats = &env.proxy.as_ref().expect("proxy").shared().stats;
    for _ in 0..100 {
        if stats.tls_handshakes_failed.load(Ordering::Relaxed) >= at_least {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_serves_tls_clients_simple_and_extended() {
    let (env, _files) = start_tls(TlsMode::Require, |_| {}).await;
    let client = app_tls(&env).await;
    let rows = within("simple", simple_rows(&client, "SELECT 'over tls'"))
        .await
        .expect("simple query");
    assert_eq!(rows, vec![vec![Some("over tls".to_string())]]);
    within(
        "ddl",
        client.batch_execute("CREATE TABLE t (id int, v text)"),
    )
    .await
    .expect("create");
    let insert = within("prepare", client.prepare("INSERT INTO t VALUES ($1, $2)"))
        .await
        .expect("prepare");
    // Large enough to span several TLS records each way.
    let big = "x".repeat(100_000);
    for i in 0..20 {
        within("insert", client.execute(&insert, &[&i, &big]))
            .await
            .expect("insert");
    }
    let row = within(
        "select",
        client.query_one(
            "SELECT count(*), sum(length(v)) FROM t WHERE id >= $1",
            &[&0i32],
        ),
    )
    .await
    .expect("select");
    assert_eq!(row.get::<_, i64>(0), 20);
    assert_eq!(row.get::<_, i64>(1), 2_000_000);
    let rows = within("fetch", client.query("SELECT v FROM t", &[]))
        .await
        .expect("big rows");
    assert!(rows.iter().all(|r| r.get::<_, &str>(0).len() == 100_000));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_against_the_generated_ca_and_a_wrong_ca_fails() {
    let (env, files) = start_tls(TlsMode::Require, |_| {}).await;
    for host in ["localhost", "127.0.0.1"] {
        let conn = format!(
            "host={host} port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_USER} sslmode=require",
            env.port
        );
        let client = within(
            "verify-full",
            try_connect_tls(&conn, verify_full_config(&files.ca_pem)),
        )
        .await
        .expect("verified connection");
        let rows = simple_rows(&client, "SELECT 1").await.expect("query");
        assert_eq!(rows, vec![vec![Some("1".to_string())]]);
    }
    let other = CertFiles::generate();
    let refused = within(
        "wrong CA",
        try_connect_tls(
            &app_conn(&env, "sslmode=require"),
            verify_full_config(&other.ca_pem),
        ),
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must not verify"
    );
    // The failed handshake was counted, and the proxy still serves.
    assert!(handshake_failures_counted(&env, 1).await);
    app_tls(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_under_require_and_accepted_under_allow() {
    let (env, _files) = start_tls(TlsMode::Require, |_| {}).await;
    let e = within("plain", try_connect(&app_conn(&env, "sslmode=disable")))
        .await
        .expect_err("plaintext refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        text.contains("tls_mode") && text.contains("sslmode=require"),
        "{text}"
    );
    // GSSENCRequest is still declined, then the plaintext login is refused.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", env.port))
        .await
        .expect("connect");
    stream.write_all(&GSSENC_REQUEST).await.expect("write");
    let mut answer = [0u8; 1];
    within(
        "gss answer",
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut answer),
    )
    .await
    .expect("answer");
    assert_eq!(answer[0], b'N');
    env.stop().await;

    let (env, _files) = start_tls(TlsMode::Allow, |_| {}).await;
    let plain = within("plain", try_connect(&app_conn(&env, "sslmode=disable")))
        .await
        .expect("plaintext accepted under allow");
    assert_eq!(simple_rows(&plain, "SELECT 2").await.expect("q").len(), 1);
    let tls = app_tls(&env).await;
    assert_eq!(simple_rows(&tls, "SELECT 3").await.expect("q").len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_sslmode_require_works_and_disable_is_refused() {
    let (env, files) = start_tls(TlsMode::Require, |_| {}).await;
    let psql = |url: String| {
        let mut cmd = Command::new(pg_tool("psql"));
        cmd.args([url.as_str(), "-XAtc", "SELECT 'psql ok'"]);
        cmd
    };
    let url = format!("{}?sslmode=require", env.app_url());
    let out = within("psql require", run_command(psql(url))).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "psql ok");

    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@localhost:{}/{APP_USER}?sslmode=verify-full&sslrootcert={}",
        env.port,
        files.ca.display()
    );
    let out = within("psql verify-full", run_command(psql(url))).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("{}?sslmode=disable", env.app_url());
    let out = within("psql disable", run_command(psql(url))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plaintext psql must be refused");
    assert!(
        stderr.contains("tls_mode") && stderr.contains("sslmode=require"),
        "{stderr}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_ssl_request_are_refused_and_never_get_a_session() {
    let (env, _files) = start_tls(TlsMode::Allow, |_| {}).await;
    // SSLRequest and a plaintext startup packet in one write: Postgres refuses this
    // (CVE-2021-23214); the startup must not be read as if it came over TLS, nor in plaintext.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", env.port))
        .await
        .expect("connect");
    let mut both = SSL_REQUEST.to_vec();
    both.extend_from_slice(&startup_packet(&[
        ("user", "trustuser"),
        ("database", "app"),
    ]));
    stream.write_all(&both).await.expect("write");
    let (tag, body) = read_msg(&mut stream).await.expect("an error, in plaintext");
    assert_eq!(tag, b'E', "no 'S' and no session");
    assert_eq!(error_code(&body), "08P01");
    assert!(error_message(&body).contains("unencrypted data after SSL request"));
    assert!(closes(&mut stream).await, "connection closed");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssl_request_over_tls_is_a_protocol_violation() {
    let (env, _files) = start_tls(TlsMode::Require, |_| {}).await;
    let mut tls = raw_tls(env.port).await;
    tls.write_all(&SSL_REQUEST).await.expect("write");
    tls.flush().await.expect("flush");
    let (tag, body) = read_msg(&mut tls).await.expect("an error over TLS");
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body), "08P01");
    assert!(closes(&mut tls).await);

    // The raw TLS path logs in like any client.
    let mut tls = raw_tls(env.port).await;
    tls.write_all(&startup_packet(&[
        ("user", "trustuser"),
        ("database", "app"),
    ]))
    .await
    .expect("write");
    tls.flush().await.expect("flush");
    loop {
        let (tag, _) = read_msg(&mut tls).await.expect("login");
        if tag == b'Z' {
            break;
        }
        assert_ne!(tag, b'E');
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_over_tls_cancels() {
    let (env, _files) = start_tls(TlsMode::Require, |_| {}).await;
    let client = app_tls(&env).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    within(
        "cancel",
        token.cancel_query(tokio_postgres_rustls::MakeRustlsConnect::new(
            require_config(),
        )),
    )
    .await
    .expect("cancel sent over TLS");
    let result = within("cancelled query", sleeper).await.expect("join");
    let e = result.expect_err("query cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_silence_instead_of_a_client_hello_closes_cleanly() {
    let (env, _files) = start_tls(TlsMode::Require, |c| c.listen.startup_timeout_ms = 1_500).await;
    let busy = app_tls(&env).await;
    let (mut stream, answer) = ssl_request(env.port).await;
    assert_eq!(answer, b'S');
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n")
        .await
        .expect("write");
    assert!(closes(&mut stream).await, "garbage closes the connection");
    assert!(handshake_failures_counted(&env, 1).await);
    // Nothing after 'S': the startup timeout ends the handshake.
    let (mut silent, answer) = ssl_request(env.port).await;
    assert_eq!(answer, b'S');
    assert!(closes(&mut silent).await, "a stalled handshake is closed");
    assert!(handshake_failures_counted(&env, 2).await);
    // Other clients are unaffected.
    assert_eq!(simple_rows(&busy, "SELECT 1").await.expect("q").len(), 1);
    assert_eq!(
        simple_rows(&app_tls(&env).await, "SELECT 1")
            .await
            .expect("q")
            .len(),
        1
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_works_over_tls() {
    let (env, _files) = start_tls(TlsMode::Require, |_| {}).await;
    let _app = app_tls(&env).await;
    let conn = format!(
        "{} sslmode=require",
        env.conn_str("postgres", SUPERUSER_PASSWORD, "pgscale")
    );
    let admin = within("admin", try_connect_tls(&conn, require_config()))
        .await
        .expect("admin over TLS");
    let rows = simple_rows(&admin, "SHOW CLIENTS").await.expect("show");
    assert!(rows.len() >= 2, "{rows:?}");
    let e = within(
        "plain admin",
        try_connect(&env.conn_str("postgres", SUPERUSER_PASSWORD, "pgscale")),
    )
    .await
    .expect_err("plaintext admin refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_certificates_and_refuses_a_tls_mode_change() {
    let (env, old) = start_tls(TlsMode::Require, |_| {}).await;
    let new = CertFiles::generate();
    env.rewrite_config(|c| new.apply(c, TlsMode::Require));
    let admin_conn = format!(
        "{} sslmode=require",
        env.conn_str("postgres", SUPERUSER_PASSWORD, "pgscale")
    );
    let admin = within("admin", try_connect_tls(&admin_conn, require_config()))
        .await
        .expect("admin");
    within("reload", admin.simple_query("RELOAD"))
        .await
        .expect("reload");
    let conn = app_conn(&env, "sslmode=require");
    within(
        "new CA",
        try_connect_tls(&conn, verify_full_config(&new.ca_pem)),
    )
    .await
    .expect("new connections get the new certificate");
    assert!(within(
        "old CA",
        try_connect_tls(&conn, verify_full_config(&old.ca_pem))
    )
    .await
    .is_err());

    env.rewrite_config(|c| c.listen.tls_mode = TlsMode::Allow);
    let e = within("reload", admin.simple_query("RELOAD"))
        .await
        .expect_err("tls_mode is restart-only");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(text.contains("listen.tls_mode"), "{text}");
    env.stop().await;
}

#[test]
fn check_names_the_tls_key_at_fault_and_accepts_good_files() {
    let files = CertFiles::generate();
    let other = CertFiles::generate();
    let config = files.dir.join("pgscale.toml");
    let write = |cert: &std::path::Path, key: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "[listen]\ntls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
                 [[users]]\nname = \"app\"\npassword = \"x\"\n\
                 [[shards]]\nprimary = \"postgres://127.0.0.1:5432\"\n",
                cert.display(),
                key.display()
            ),
        )
        .expect("write config");
    };
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_pgscale"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run check")
    };
    write(&files.cert, &files.key);
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("client TLS: require"));

    write(&files.cert, &other.key);
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen.tls_key") && stderr.contains("does not match"),
        "{stderr}"
    );

    write(&files.dir.join("missing.crt"), &files.key);
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen.tls_cert") && stderr.contains("missing.crt"),
        "{stderr}"
    );
}
