//! Tests of the health poller: parsing poll answers, classifying failures, and the whole loop against
//! fake servers (a replica that hangs opens its breaker; once it answers, the probe closes it).

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::pool::fake_server::{row, FakeServer, Reply};

fn rows(values: &[Option<&str>]) -> Vec<Row> {
    vec![row(values)]
}

const RTT: Duration = Duration::from_millis(2);

#[test]
fn caught_up_replica_has_no_lag() {
    let sample = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), Some("42.5")]),
        RTT,
        Some(0x300_0000),
    )
    .expect("sample");
    assert_eq!(sample.in_recovery, Some(true));
    assert_eq!(sample.replay_lsn, Some(0x300_0000));
    assert_eq!(sample.lag_bytes, Some(0));
    assert_eq!(
        sample.lag,
        Some(Duration::ZERO),
        "an idle primary is no lag"
    );
    assert_eq!(sample.rtt, RTT);
}

#[test]
fn replica_behind_lags_by_its_last_replayed_transaction() {
    let sample = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), Some("1.250000")]),
        RTT,
        Some(0x300_1000),
    )
    .expect("sample");
    assert_eq!(sample.lag_bytes, Some(0x1000));
    assert_eq!(sample.lag, Some(Duration::from_millis(1_250)));
    // Ahead of the primary's last poll (which is older): caught up.
    let ahead = replica_sample(
        &rows(&[Some("t"), Some("0/3000100"), Some("9")]),
        RTT,
        Some(0x300_0000),
    )
    .expect("sample");
    assert_eq!(
        (ahead.lag_bytes, ahead.lag),
        (Some(0), Some(Duration::ZERO))
    );
}

#[test]
fn unknown_primary_position_leaves_lag_unknown() {
    let sample = replica_sample(&rows(&[Some("t"), Some("0/3000000"), Some("3")]), RTT, None)
        .expect("sample");
    assert_eq!(sample.lag_bytes, None);
    assert_eq!(sample.lag, None, "no live primary: no time lag to measure");
    let nothing_replayed = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), None]),
        RTT,
        Some(0x400_0000),
    )
    .expect("sample");
    assert_eq!(nothing_replayed.lag, None);
    let no_replay = replica_sample(&rows(&[Some("f"), None, None]), RTT, Some(1)).expect("sample");
    assert_eq!(no_replay.in_recovery, Some(false));
    assert_eq!((no_replay.replay_lsn, no_replay.lag_bytes), (None, None));
}

/// Issue 11: with the primary down, a replica is measured against its own receive LSN, not the dead
/// primary's last position (which it may never reach), and an old replay timestamp is no lag.
#[test]
fn without_a_live_primary_the_receive_lsn_is_the_reference() {
    let caught_up = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), Some("600"), Some("0/3000000")]),
        RTT,
        None,
    )
    .expect("sample");
    assert_eq!(
        (caught_up.lag_bytes, caught_up.lag),
        (Some(0), Some(Duration::ZERO))
    );
    let behind_own = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), Some("600"), Some("0/3000800")]),
        RTT,
        None,
    )
    .expect("sample");
    assert_eq!((behind_own.lag_bytes, behind_own.lag), (Some(0x800), None));
    // A live primary's position still wins over the receive LSN.
    let live = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), Some("2"), Some("0/3000000")]),
        RTT,
        Some(0x300_1000),
    )
    .expect("sample");
    assert_eq!(
        (live.lag_bytes, live.lag),
        (Some(0x1000), Some(Duration::from_secs(2)))
    );
    let garbled = replica_sample(
        &rows(&[Some("t"), Some("0/3000000"), None, Some("nope")]),
        RTT,
        None,
    );
    assert!(garbled.is_err());
}

#[test]
fn clock_skew_is_no_negative_lag() {
    let sample = replica_sample(
        &rows(&[Some("t"), Some("0/10"), Some("-0.003")]),
        RTT,
        Some(0x20),
    )
    .expect("sample");
    assert_eq!(sample.lag, Some(Duration::ZERO));
}

#[test]
fn garbled_replica_answers_are_failures() {
    for bad in [
        rows(&[Some("yes"), Some("0/1"), None]),
        rows(&[Some("t"), Some("zz"), None]),
        rows(&[Some("t"), Some("0/1"), Some("soon")]),
        Vec::new(),
    ] {
        let error = replica_sample(&bad, RTT, None).expect_err("garbled");
        assert_eq!(error.failure_kind(), Some(FailureKind::HealthCheck));
    }
}

#[test]
fn reads_the_wal_layout() {
    assert_eq!(
        parse_layout(&rows(&[Some("8192"), Some("16777216")])),
        Some(WalLayout::DEFAULT)
    );
    assert_eq!(parse_layout(&rows(&[Some("8192"), None])), None);
    assert_eq!(parse_layout(&rows(&[Some("8192"), Some("16MB")])), None);
    assert_eq!(single_value(&rows(&[Some("0/1")])), Some("0/1"));
    assert_eq!(single_value(&[]), None);
}

fn refused(code: &str) -> ServerError {
    ServerError::Refused {
        addr: "db:5432".into(),
        code: code.into(),
        message: "no".into(),
        frame: Default::default(),
    }
}

#[test]
fn only_failures_that_say_the_server_is_down_feed_the_breaker() {
    for code in ["28P01", "3D000", "53300"] {
        assert_eq!(
            PollError::Connect(refused(code)).failure_kind(),
            None,
            "{code}"
        );
    }
    for code in ["57P01", "57P03"] {
        let kind = PollError::Connect(refused(code)).failure_kind();
        assert_eq!(kind, Some(FailureKind::HealthCheck), "{code}");
    }
    let io = ServerError::Io {
        addr: "db:5432".into(),
        source: std::io::ErrorKind::ConnectionRefused.into(),
    };
    assert_eq!(
        PollError::Connect(io).failure_kind(),
        Some(FailureKind::ConnectRefused)
    );
    let timeout = ServerError::ConnectTimeout {
        addr: "db:5432".into(),
    };
    assert_eq!(
        PollError::Connect(timeout).failure_kind(),
        Some(FailureKind::ConnectTimeout)
    );
    // A poll that errors (e.g. a "primary" in recovery) is a failure.
    assert_eq!(
        PollError::Query(refused("55000")).failure_kind(),
        Some(FailureKind::HealthCheck)
    );
    assert_eq!(
        PollError::Timeout(Duration::from_secs(1)).failure_kind(),
        Some(FailureKind::HealthCheck)
    );
}

fn config(primary: &FakeServer, replica: &FakeServer) -> Config {
    let toml = format!(
        r#"
        [health]
        interval_ms = 10
        timeout_ms = 100
        failure_threshold = 2
        cooldown_ms = 300
        [[users]]
        name = "u"
        password = "p"
        [[shards]]
        primary = "postgres://{}"
        replicas = ["postgres://{}"]
        "#,
        primary.addr, replica.addr
    );
    Config::from_toml(&toml).expect("config parses")
}

async fn fake_primary() -> FakeServer {
    FakeServer::start(|sql| {
        if sql.contains("wal_block_size") {
            Reply::Rows(rows(&[Some("8192"), Some("16777216")]))
        } else if sql.contains("pg_current_wal_insert_lsn") {
            // Just past a segment's long page header: the end of WAL is 0/3000000.
            Reply::Rows(rows(&[Some("0/3000028")]))
        } else {
            Reply::Error("42601", "unexpected")
        }
    })
    .await
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn polls_primary_and_replica_and_opens_the_breaker_of_a_hung_one() {
    let primary = fake_primary().await;
    let hung = Arc::new(AtomicBool::new(false));
    let hang = hung.clone();
    let replica = FakeServer::start(move |sql| {
        if hang.load(Ordering::Relaxed) {
            Reply::Hang
        } else if sql.contains("pg_is_in_recovery") {
            Reply::Rows(rows(&[Some("t"), Some("0/3000000"), Some("12.5")]))
        } else {
            Reply::Error("42601", "unexpected")
        }
    })
    .await;
    let config = Arc::new(config(&primary, &replica));
    let topology = Arc::new(Topology::from_config(&config).expect("topology"));
    let stop = CancellationToken::new();
    let task = spawn(topology.clone(), config, stop.clone());
    let shard = &topology.shards[0];
    let r = shard.replicas[0].clone();

    wait_for("primary LSN", || shard.primary_lsn.latest().is_some()).await;
    assert_eq!(shard.primary_lsn.latest(), Some(0x300_0000));
    assert!(shard.primary.health.fresh(Instant::now()));
    assert!(shard.primary.health.rtt().is_some());
    wait_for("replica caught up", || r.health.lag_bytes() == Some(0)).await;
    assert!(r.usable());
    assert_eq!(r.health.lag(), Some(Duration::ZERO));
    assert_eq!(r.health.replay_lsn(), Some(0x300_0000));

    hung.store(true, Ordering::Relaxed);
    wait_for("breaker opens", || r.breaker.state() == BreakerState::Open).await;
    assert!(!r.usable());
    assert_eq!(r.breaker.last_failure(), Some(FailureKind::HealthCheck));
    assert!(shard.primary.usable(), "the primary is unaffected");

    hung.store(false, Ordering::Relaxed);
    let logins = replica.logins.load(Ordering::Relaxed);
    wait_for("probe closes the breaker", || r.breaker.is_closed()).await;
    wait_for("replica usable again", || r.usable()).await;
    assert_eq!(r.breaker.opened_total(), 1);
    assert!(
        replica.logins.load(Ordering::Relaxed) > logins,
        "the probe used a new connection"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("poller stops")
        .expect("poller did not panic");
}

#[tokio::test]
async fn a_down_replica_opens_its_breaker() {
    let primary = fake_primary().await;
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let gone = FakeServer::start(|_| Reply::Close).await;
    let mut config = config(&primary, &gone);
    config.shards[0].replicas = vec![format!("postgres://127.0.0.1:{port}").into()];
    let config = Arc::new(config);
    let topology = Arc::new(Topology::from_config(&config).expect("topology"));
    let stop = CancellationToken::new();
    let task = spawn(topology.clone(), config, stop.clone());
    let r = topology.shards[0].replicas[0].clone();
    wait_for("breaker opens", || r.breaker.state() == BreakerState::Open).await;
    assert_eq!(r.breaker.last_failure(), Some(FailureKind::ConnectRefused));
    assert!(!r.usable());
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
}

/// Against real servers (run by hand: `cargo test --lib real_servers -- --ignored`): a non-superuser
/// can poll both roles; a write's LSN, as `PrimaryLsn::after` promises it, is visible on a replica
/// that replayed it (with `synchronous_commit = off`); and an idle primary right after a WAL segment
/// switch leaves a caught-up replica with no lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts two local Postgres servers"]
async fn real_servers() {
    use crate::local_cluster::{ClusterOptions, LocalPostgres};

    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let options = ClusterOptions {
            extra_conf: vec![("synchronous_commit".into(), "off".into())],
            ..ClusterOptions::default()
        };
        let primary = LocalPostgres::start(&options)?;
        primary.psql("create role checker login password 'pw'; create table t (id int)")?;
        let replica = LocalPostgres::start_replica_of(&primary)?;
        Ok::<_, crate::local_cluster::ClusterError>((primary, replica))
    })
    .await
    .expect("setup task")
    .expect("servers start");
    let toml = format!(
        r#"
        [health]
        interval_ms = 10
        [[users]]
        name = "checker"
        password = "pw"
        [[shards]]
        primary = "postgres://{}:{}"
        replicas = ["postgres://{}:{}"]
        "#,
        primary.host(),
        primary.port(),
        replica.host(),
        replica.port()
    );
    let config = Arc::new(Config::from_toml(&toml).expect("config"));
    let topology = Arc::new(Topology::from_config(&config).expect("topology"));
    let stop = CancellationToken::new();
    let task = spawn(topology.clone(), config, stop.clone());
    let shard = &topology.shards[0];
    let r = shard.replicas[0].clone();
    wait_for("replica usable", || r.usable()).await;
    assert!(
        shard.primary.health.fresh(Instant::now()),
        "primary polls as a non-superuser"
    );
    assert!(shard.primary.breaker.is_closed());

    let connect = |url: String| async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    };
    let writer = connect(primary.superuser_url("postgres")).await;
    let reader = connect(replica.superuser_url("postgres")).await;
    for id in 0..20i32 {
        writer
            .execute("insert into t values ($1)", &[&id])
            .await
            .expect("insert");
        let committed = Instant::now();
        wait_for("a poll after the commit", || {
            shard.primary_lsn.after(committed).is_some()
        })
        .await;
        let min_lsn = shard.primary_lsn.after(committed).expect("polled");
        wait_for("replica replayed the write", || {
            r.health.replay_lsn().is_some_and(|lsn| lsn >= min_lsn)
        })
        .await;
        let row = reader
            .query_one("select count(*) from t where id = $1", &[&id])
            .await
            .expect("read on replica");
        assert_eq!(
            row.get::<_, i64>(0),
            1,
            "write {id} not visible at {}",
            format_lsn(min_lsn)
        );
    }

    writer
        .execute("select pg_switch_wal()", &[])
        .await
        .expect("switch WAL");
    let switched = Instant::now();
    wait_for("a poll after the switch", || {
        shard.primary_lsn.after(switched).is_some()
    })
    .await;
    // Let the replica be polled several times against the primary's post-switch position.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let caught_up = || r.health.lag_bytes() == Some(0) && r.health.lag() == Some(Duration::ZERO);
    wait_for("caught up after the switch", caught_up).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(caught_up(), "lag {:?} bytes", r.health.lag_bytes());

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
}
