//! The Prometheus endpoint scraped and parsed while traffic flows through a primary and a replica.

mod common;

use std::time::Duration;

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
