//! Tests of replica choice: each filter, zone preference, RTT nearness and load spreading, with health
//! set directly.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::config::{BackendAddr, HealthConfig};
use crate::pool::backend::{PollSample, Role};
use crate::pool::breaker::FailureKind;

fn replica(port: u16, zone: Option<&str>) -> Arc<Backend> {
    let addr = Arc::new(BackendAddr {
        host: "127.0.0.1".into(),
        port,
        tls: Default::default(),
    });
    let config = HealthConfig {
        failure_threshold: 1,
        ..HealthConfig::default()
    };
    Backend::new(addr, Role::Replica, 0, zone.map(str::to_string), &config)
}

fn sample(rtt_us: u64) -> PollSample {
    PollSample {
        rtt: Duration::from_micros(rtt_us),
        in_recovery: Some(true),
        replay_lsn: Some(1_000),
        lag_bytes: Some(0),
        lag: Some(Duration::ZERO),
    }
}

/// Replicas polled at `now` with these RTTs (µs), in no zone.
fn polled(rtts_us: &[u64], now: Instant) -> Vec<Arc<Backend>> {
    rtts_us
        .iter()
        .enumerate()
        .map(|(i, &rtt)| {
            let r = replica(5000 + i as u16, None);
            r.health.record_poll(&sample(rtt), now);
            r
        })
        .collect()
}

fn pick(replicas: &[Arc<Backend>], request: &ReadRequest<'_>, now: Instant) -> Option<usize> {
    choose_replica(replicas, request, now, |_| 0)
}

/// How often each replica is picked in `n` seeded choices.
fn histogram(
    replicas: &[Arc<Backend>],
    request: &ReadRequest<'_>,
    now: Instant,
    load: impl Fn(usize) -> usize + Copy,
    n: usize,
) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = vec![0; replicas.len()];
    for _ in 0..n {
        let i = choose_with(replicas, request, now, load, &mut rng).expect("a replica qualifies");
        counts[i] += 1;
    }
    counts
}

#[test]
fn nothing_to_choose_from() {
    let now = Instant::now();
    assert_eq!(pick(&[], &ReadRequest::default(), now), None);
    let never_polled = vec![replica(5000, None)];
    assert_eq!(pick(&never_polled, &ReadRequest::default(), now), None);
}

#[test]
fn unusable_replicas_are_skipped() {
    let now = Instant::now();
    let replicas = polled(&[100, 100, 100], now);
    replicas[0].record_failure(FailureKind::Broken);
    replicas[1].health.record_failed_poll();
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &ReadRequest::default(), now), Some(2));
    }
    let stale = now + Duration::from_secs(60);
    assert_eq!(pick(&replicas, &ReadRequest::default(), stale), None);
}

#[test]
fn excluded_replicas_are_skipped() {
    let now = Instant::now();
    let replicas = polled(&[100, 100], now);
    let request = ReadRequest {
        exclude: &[0],
        ..ReadRequest::default()
    };
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &request, now), Some(1));
    }
    let all = ReadRequest {
        exclude: &[0, 1],
        ..ReadRequest::default()
    };
    assert_eq!(pick(&replicas, &all, now), None);
}

#[test]
fn read_your_writes_needs_the_write_replayed() {
    let now = Instant::now();
    let replicas = polled(&[100, 100], now);
    let behind = PollSample {
        replay_lsn: Some(500),
        ..sample(100)
    };
    replicas[0].health.record_poll(&behind, now);
    let request = |min| ReadRequest {
        min_lsn: Some(min),
        ..ReadRequest::default()
    };
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &request(501), now), Some(1));
    }
    assert!(pick(&replicas, &request(500), now).is_some());
    assert_eq!(pick(&replicas, &request(1_001), now), None);
    let unknown = PollSample {
        replay_lsn: None,
        ..sample(100)
    };
    replicas[1].health.record_poll(&unknown, now);
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &request(1), now), Some(0));
    }
}

#[test]
fn lag_limits() {
    let now = Instant::now();
    let replicas = polled(&[100, 100], now);
    let lagging = PollSample {
        lag_bytes: Some(10_000),
        lag: Some(Duration::from_secs(3)),
        ..sample(100)
    };
    replicas[0].health.record_poll(&lagging, now);
    let bytes = ReadRequest {
        max_lag_bytes: 9_999,
        ..ReadRequest::default()
    };
    let time = ReadRequest {
        max_lag: Some(Duration::from_secs(2)),
        ..ReadRequest::default()
    };
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &bytes, now), Some(1));
        assert_eq!(pick(&replicas, &time, now), Some(1));
    }
    // No limits, or limits the lag is within: both qualify.
    let within = ReadRequest {
        max_lag_bytes: 10_000,
        max_lag: Some(Duration::from_secs(3)),
        ..ReadRequest::default()
    };
    for request in [ReadRequest::default(), within] {
        let counts = histogram(&replicas, &request, now, |_| 0, 200);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }
}

#[test]
fn unmeasured_lag_does_not_disqualify() {
    let now = Instant::now();
    let replicas = polled(&[100], now);
    let unknown = PollSample {
        lag_bytes: None,
        lag: None,
        ..sample(100)
    };
    replicas[0].health.record_poll(&unknown, now);
    let strict = ReadRequest {
        max_lag_bytes: 1,
        max_lag: Some(Duration::from_millis(1)),
        ..ReadRequest::default()
    };
    assert_eq!(pick(&replicas, &strict, now), Some(0));
}

#[test]
fn same_zone_is_preferred_when_it_qualifies() {
    let now = Instant::now();
    let far_but_local = replica(5000, Some("a"));
    far_but_local.health.record_poll(&sample(5_000), now);
    let near_elsewhere = replica(5001, Some("b"));
    near_elsewhere.health.record_poll(&sample(100), now);
    let replicas = vec![far_but_local, near_elsewhere];
    let in_a = ReadRequest {
        zone: Some("a"),
        ..ReadRequest::default()
    };
    for _ in 0..20 {
        assert_eq!(pick(&replicas, &in_a, now), Some(0));
    }
    // No zone given, or a zone with no replica: the nearest wins.
    let in_c = ReadRequest {
        zone: Some("c"),
        ..ReadRequest::default()
    };
    assert_eq!(pick(&replicas, &ReadRequest::default(), now), Some(1));
    assert_eq!(pick(&replicas, &in_c, now), Some(1));
    // The local replica fails to qualify: fall back to the other zone.
    replicas[0].health.record_failed_poll();
    assert_eq!(pick(&replicas, &in_a, now), Some(1));
}

#[test]
fn only_near_replicas_are_considered() {
    let now = Instant::now();
    // 1.5 × 10 ms = 15 ms: 14 ms is near, 16 ms is not.
    let replicas = polled(&[10_000, 14_000, 16_000], now);
    let counts = histogram(&replicas, &ReadRequest::default(), now, |_| 0, 400);
    assert!(counts[0] > 100 && counts[1] > 100, "{counts:?}");
    assert_eq!(counts[2], 0, "{counts:?}");
    // Sub-millisecond: best + 1 ms is the limit.
    let replicas = polled(&[200, 1_150, 1_300], now);
    let counts = histogram(&replicas, &ReadRequest::default(), now, |_| 0, 400);
    assert!(counts[0] > 100 && counts[1] > 100, "{counts:?}");
    assert_eq!(counts[2], 0, "{counts:?}");
}

#[test]
fn equal_replicas_share_the_load() {
    let now = Instant::now();
    let replicas = polled(&[500, 500], now);
    let counts = histogram(&replicas, &ReadRequest::default(), now, |_| 3, 1_000);
    assert!((400..=600).contains(&counts[0]), "{counts:?}");
    // The same through the public function and the thread's own random source.
    let mut counts = [0usize; 2];
    for _ in 0..1_000 {
        let i = choose_replica(&replicas, &ReadRequest::default(), now, |_| 0)
            .expect("a replica qualifies");
        counts[i] += 1;
    }
    assert!((350..=650).contains(&counts[0]), "{counts:?}");
}

#[test]
fn the_less_loaded_replica_wins() {
    let now = Instant::now();
    let replicas = polled(&[500, 500], now);
    let counts = histogram(
        &replicas,
        &ReadRequest::default(),
        now,
        |i| [10, 0][i],
        1_000,
    );
    assert_eq!(counts, vec![0, 1_000]);
    // Three replicas: the busy one loses every draw it is part of.
    let replicas = polled(&[500, 500, 500], now);
    let counts = histogram(
        &replicas,
        &ReadRequest::default(),
        now,
        |i| [0, 0, 100][i],
        1_000,
    );
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0] > 300 && counts[1] > 300, "{counts:?}");
}
