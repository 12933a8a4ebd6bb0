//! Tests of pools against fake servers: connections join their backend's registry, severing reaches
//! pooled connections, and only connect failures that say the server is down feed the breaker.

use std::sync::atomic::Ordering;

use super::backend::Role;
use super::breaker::BreakerState;
use super::fake_server::{FakeServer, Reply};
use super::*;
use crate::config::HealthConfig;

fn pool_for(addr: Arc<BackendAddr>) -> Arc<Pool> {
    let health = HealthConfig {
        failure_threshold: 2,
        ..HealthConfig::default()
    };
    let backend = Backend::new(addr.clone(), Role::Primary, 0, None, &health);
    let key = PoolKey {
        addr: addr.clone(),
        database: "d".into(),
        user: "u".into(),
    };
    let spec = ConnectSpec {
        addr,
        user: "u".into(),
        password: None,
        database: "d".into(),
        timeout: Duration::from_secs(2),
        application_name: None,
    };
    let settings = PoolSettings {
        size: 4,
        min_idle: 0,
        checkout_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(60),
    };
    Pool::new(key, spec, settings, backend)
}

#[tokio::test]
async fn connections_register_with_their_backend() {
    let server = FakeServer::start(|_| Reply::Rows(vec![])).await;
    let pool = pool_for(server.addr.clone());
    let backend = pool.backend().clone();
    let first = pool.checkout().await.expect("checkout");
    let second = pool.checkout().await.expect("checkout");
    assert_eq!(pool.in_use(), 2);
    assert_eq!(backend.registered_conns(), 2);
    first.release();
    assert_eq!(pool.in_use(), 1);
    assert_eq!(
        backend.registered_conns(),
        2,
        "idle connections stay registered"
    );
    drop(second);
    assert_eq!(pool.in_use(), 0);
    assert_eq!(
        backend.registered_conns(),
        1,
        "a closed connection unregisters"
    );
}

#[tokio::test]
async fn severing_reaches_idle_and_checked_out_connections() {
    let server = FakeServer::start(|_| Reply::Rows(vec![])).await;
    let pool = pool_for(server.addr.clone());
    let mut busy = pool.checkout().await.expect("checkout");
    pool.checkout().await.expect("checkout").release();
    assert_eq!(pool.backend().sever_connections(), 2);
    // The checked-out one sees EOF at once.
    let mut buf = bytes::BytesMut::new();
    let read = tokio::time::timeout(Duration::from_secs(1), busy.read_frame(&mut buf)).await;
    assert!(matches!(read, Ok(Err(ServerError::Closed { .. }))));
    drop(busy);
    // The idle one is found dead and replaced by a new login.
    let logins = server.logins.load(Ordering::Relaxed);
    let mut fresh = pool.checkout().await.expect("checkout");
    assert!(fresh.looks_alive());
    assert_eq!(server.logins.load(Ordering::Relaxed), logins + 1);
}

#[tokio::test]
async fn refused_connects_open_the_breaker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let pool = pool_for(Arc::new(BackendAddr {
        host: "127.0.0.1".into(),
        port,
        tls: Default::default(),
    }));
    let breaker = &pool.backend().breaker;
    assert!(pool.checkout().await.is_err());
    assert!(breaker.is_closed());
    assert_eq!(breaker.last_failure(), Some(FailureKind::ConnectRefused));
    assert!(pool.checkout().await.is_err());
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(pool.in_use(), 0, "failed checkouts give their permit back");
}

#[tokio::test]
async fn an_error_response_at_login_is_no_backend_failure() {
    let server = FakeServer::refusing_logins("53300", "sorry, too many clients already").await;
    let pool = pool_for(server.addr.clone());
    for _ in 0..3 {
        match pool.checkout().await {
            Err(CheckoutError::Connect(ServerError::Refused { code, .. })) => {
                assert_eq!(code, "53300")
            }
            other => panic!("expected Refused, got ok = {}", other.is_ok()),
        }
    }
    assert!(pool.backend().breaker.is_closed());
    assert_eq!(pool.backend().breaker.last_failure(), None);
}

#[tokio::test]
async fn a_successful_connect_resets_the_failure_count() {
    let server = FakeServer::start(|_| Reply::Rows(vec![])).await;
    let pool = pool_for(server.addr.clone());
    pool.backend().record_failure(FailureKind::Broken);
    pool.checkout().await.expect("checkout").release();
    pool.backend().record_failure(FailureKind::Broken);
    assert!(pool.backend().breaker.is_closed());
}
