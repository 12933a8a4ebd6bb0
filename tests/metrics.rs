//! The Prometheus endpoint scraped and parsed while traffic flows through a primary and a replica,
//! and kept bounded under stalled HTTP clients.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::metrics::scrape;
use common::{sqlstate, Env};
use pgscale::config::PoolMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_parsed_and_move_with_traffic() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 5).await;
    let app = env.app().await;
    app.simple_query("select 1").await.expect("warm up");
    // Reads go to the replica once its health is known: wait for both backends to be up.
    let mut before = scrape(&env).await;
    for _ in 0..100 {
        if before.sum("pgscale_backend_up", &[]) == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = scrape(&env).await;
    }
    assert_eq!(
        before.sum("pgscale_backend_up", &[]),
        2.0,
        "primary and replica up"
    );

    // Names follow Prometheus conventions: counters end in _total, units are in the name.
    for (name, kind) in &before.types {
        assert!(name.starts_with("pgscale_"), "{name}");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}"),
            _ => assert!(!name.ends_with("_total"), "{kind} {name}"),
        }
    }
    for name in [
        "pgscale_build_info",
        "pgscale_client_connections",
        "pgscale_server_connections",
        "pgscale_queries_total",
        "pgscale_transactions_total",
        "pgscale_query_duration_seconds",
        "pgscale_transaction_duration_seconds",
        "pgscale_pool_waits_total",
        "pgscale_backend_breaker_state",
        "pgscale_backend_up",
        "pgscale_plan_cache_hits_total",
        "pgscale_plan_cache_entries",
        "pgscale_paused",
    ] {
        assert!(before.types.contains_key(name), "{name} is exported");
    }

    for i in 0..50 {
        app.query("select $1::int", &[&i]).await.expect("read");
    }
    app.simple_query("create table if not exists m (id int)")
        .await
        .expect("write");
    let error = app
        .simple_query("select 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"));
    app.simple_query("begin").await.expect("begin");
    app.simple_query("insert into m values (1)")
        .await
        .expect("insert");
    env.wait_replicas_caught_up().await;

    let after = scrape(&env).await;
    let grew = |series_name: &str, labels: &[&str]| {
        after.sum(series_name, labels) - before.sum(series_name, labels)
    };
    assert!(
        grew("pgscale_queries_total", &["route=\"replica\""]) >= 50.0,
        "reads counted on the replica route"
    );
    assert!(
        grew("pgscale_queries_total", &["route=\"primary\""]) >= 2.0,
        "writes counted on the primary route"
    );
    assert!(
        grew(
            "pgscale_query_duration_seconds_count",
            &["route=\"replica\""]
        ) >= 50.0
    );
    assert!(grew("pgscale_transactions_total", &["database=\"app\""]) >= 51.0);
    assert!(grew("pgscale_client_received_bytes_total", &[]) > 0.0);
    assert!(after.sum("pgscale_errors_total", &["sqlstate_class=\"22\""]) >= 1.0);
    assert_eq!(
        after.sum("pgscale_client_connections", &["state=\"active\""]),
        1.0,
        "the open transaction"
    );
    assert!(
        after.sum(
            "pgscale_server_connections",
            &["role=\"primary\"", "state=\"active\""]
        ) >= 1.0
    );
    assert!(grew("pgscale_plan_cache_hits_total", &[]) >= 49.0);
    assert_eq!(
        after.sum("pgscale_backend_breaker_state", &[]),
        0.0,
        "every breaker closed"
    );
    assert_eq!(
        after.sum("pgscale_backend_up", &[]),
        2.0,
        "primary and replica up"
    );
    assert!(after.types.contains_key("pgscale_replica_lag_bytes"));
    app.simple_query("commit").await.expect("commit");
    let last = scrape(&env).await;
    assert_eq!(
        last.sum("pgscale_client_connections", &["state=\"active\""]),
        0.0
    );
    env.stop().await;
}

/// One `GET /metrics` on a new connection: the response, or None if it was refused or cut.
async fn try_scrape(addr: &str) -> Option<String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: pgscale\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// Issue 11: the endpoint had no connection limit and no header timeout, so 20k stalled HTTP
/// connections exhausted file descriptors and locked out database logins. Stalled sockets are now
/// closed after the header timeout, extra ones at once, and scrapes and logins keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_metrics_connections_are_bounded_and_closed() {
    let env = Env::start_with(
        |c| {
            c.metrics.max_connections = 8;
            c.metrics.header_timeout_ms = 1_000;
            c.metrics.request_timeout_ms = 3_000;
        },
        PoolMode::Transaction,
        2,
    )
    .await;
    let addr = env
        .metrics_url()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut stream = common::within("metrics connect", TcpStream::connect(&addr))
            .await
            .expect("connect to /metrics");
        if i % 2 == 1 {
            // Half a request line, never finished.
            let _ = stream.write_all(b"GET /metr").await;
        }
        stalled.push(stream);
    }
    // A real scrape gets through within a few seconds (retried while the slots are taken).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match try_scrape(&addr).await {
            Some(response) if response.starts_with("HTTP/1.1 200") => {
                assert!(response.contains("pgscale_"), "{response}");
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "no scrape got through: last answer {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Database logins are unaffected.
    let app = common::within("login while /metrics is flooded", env.app()).await;
    app.simple_query("select 1").await.expect("query");
    // Every stalled socket is closed by the server (EOF, or a reset for unread input).
    for (i, mut stream) in stalled.into_iter().enumerate() {
        let mut sink = Vec::new();
        let result = common::within(
            &format!("stalled metrics connection {i} closed by the server"),
            stream.read_to_end(&mut sink),
        )
        .await;
        if let Err(e) = result {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
    }
    env.stop().await;
}
