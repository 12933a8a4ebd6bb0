//! Tests of backends: the fd registry and severing, breaker wiring, health and usability.

use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

use super::*;

fn config() -> HealthConfig {
    HealthConfig {
        interval_ms: 100,
        timeout_ms: 1_000,
        failure_threshold: 2,
        cooldown_ms: 5_000,
        ..HealthConfig::default()
    }
}

fn backend(role: Role) -> Arc<Backend> {
    let addr = Arc::new(BackendAddr {
        host: "127.0.0.1".into(),
        port: 5432,
        tls: Default::default(),
    });
    Backend::new(addr, role, 0, Some("a".into()), &config())
}

fn replica_sample() -> PollSample {
    PollSample {
        rtt: Duration::from_millis(1),
        in_recovery: Some(true),
        replay_lsn: Some(100),
        lag_bytes: Some(0),
        lag: Some(Duration::ZERO),
    }
}

#[test]
fn severing_gives_registered_sockets_eof() {
    let b = backend(Role::Primary);
    let (mut ours, mut theirs) = UnixStream::pair().expect("socket pair");
    let registration = b.register_conn(ours.as_raw_fd());
    assert_eq!(b.registered_conns(), 1);
    assert_eq!(b.sever_connections(), 1);
    let mut buf = [0u8; 8];
    assert_eq!(ours.read(&mut buf).expect("read after shutdown"), 0);
    assert_eq!(theirs.read(&mut buf).expect("peer read"), 0);
    drop(registration);
    assert_eq!(b.registered_conns(), 0);
    assert_eq!(b.sever_connections(), 0);
}

#[test]
fn dropping_a_registration_unregisters_only_it() {
    let b = backend(Role::Primary);
    let (one, _peer_one) = UnixStream::pair().expect("socket pair");
    let (two, mut peer_two) = UnixStream::pair().expect("socket pair");
    let first = b.register_conn(one.as_raw_fd());
    let _second = b.register_conn(two.as_raw_fd());
    drop(first);
    drop(one);
    assert_eq!(b.registered_conns(), 1);
    assert_eq!(b.sever_connections(), 1);
    let mut buf = [0u8; 1];
    assert_eq!(peer_two.read(&mut buf).expect("peer read"), 0);
}

#[test]
fn opening_the_breaker_severs_connections() {
    let b = backend(Role::Primary);
    let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
    let _registration = b.register_conn(ours.as_raw_fd());
    b.record_failure(FailureKind::ConnectTimeout);
    assert!(b.usable());
    theirs.set_nonblocking(true).expect("nonblocking peer");
    let mut buf = [0u8; 1];
    assert!(theirs.read(&mut buf).is_err(), "not severed before opening");
    b.record_failure(FailureKind::HealthCheck);
    assert_eq!(b.breaker.state(), BreakerState::Open);
    assert!(!b.usable());
    assert_eq!(theirs.read(&mut buf).expect("peer read"), 0);
}

#[test]
fn a_success_resets_the_failure_count() {
    let b = backend(Role::Primary);
    b.record_failure(FailureKind::Broken);
    b.record_success();
    b.record_failure(FailureKind::Broken);
    assert!(b.breaker.is_closed());
}

#[test]
fn primary_is_usable_while_its_breaker_is_closed() {
    let b = backend(Role::Primary);
    assert!(b.usable());
    assert!(!b.health.fresh(Instant::now()));
}

#[test]
fn replica_needs_a_fresh_poll_in_recovery() {
    let b = backend(Role::Replica);
    assert!(!b.usable(), "never polled");
    let now = Instant::now();
    b.health.record_poll(&replica_sample(), now);
    assert!(b.usable_at(now));
    // Stale after timeout + 2 × interval.
    assert!(b.usable_at(now + Duration::from_millis(1_199)));
    assert!(!b.usable_at(now + Duration::from_millis(1_200)));
    b.health.record_failed_poll();
    assert!(!b.usable_at(now));
    let promoted = PollSample {
        in_recovery: Some(false),
        ..replica_sample()
    };
    b.health.record_poll(&promoted, now);
    assert!(!b.usable_at(now), "a promoted replica follows nobody");
}

#[test]
fn replica_with_an_open_breaker_is_unusable() {
    let b = backend(Role::Replica);
    let now = Instant::now();
    b.health.record_poll(&replica_sample(), now);
    b.record_failure(FailureKind::Broken);
    b.record_failure(FailureKind::Broken);
    assert!(!b.usable_at(now));
}

#[test]
fn health_keeps_the_last_good_values() {
    let b = backend(Role::Replica);
    let h = &b.health;
    assert_eq!(h.rtt(), None);
    assert_eq!(h.replay_lsn(), None);
    assert_eq!(h.in_recovery(), None);
    let sample = PollSample {
        rtt: Duration::from_millis(10),
        in_recovery: Some(true),
        replay_lsn: Some(0x1_0000_0000),
        lag_bytes: Some(4096),
        lag: Some(Duration::from_millis(300)),
    };
    h.record_poll(&sample, Instant::now());
    assert_eq!(h.rtt(), Some(Duration::from_millis(10)));
    assert_eq!(h.replay_lsn(), Some(0x1_0000_0000));
    assert_eq!(h.lag_bytes(), Some(4096));
    assert_eq!(h.lag(), Some(Duration::from_millis(300)));
    assert_eq!(h.in_recovery(), Some(true));
    h.record_failed_poll();
    assert_eq!(h.replay_lsn(), Some(0x1_0000_0000));
    let unknown = PollSample {
        rtt: Duration::from_millis(10),
        ..PollSample::default()
    };
    h.record_poll(&unknown, Instant::now());
    assert_eq!(h.lag(), None);
    assert_eq!(h.lag_bytes(), None);
}

#[test]
fn rtt_is_a_moving_average() {
    let b = backend(Role::Replica);
    let poll = |ms| PollSample {
        rtt: Duration::from_millis(ms),
        ..replica_sample()
    };
    b.health.record_poll(&poll(10), Instant::now());
    b.health.record_poll(&poll(20), Instant::now());
    let rtt = b.health.rtt().expect("rtt after polls");
    assert!(
        (rtt.as_secs_f64() - 0.012).abs() < 1e-6,
        "0.8 × 10 ms + 0.2 × 20 ms, got {rtt:?}"
    );
}
