//! Faults under read/write splitting, with real servers and pgbench: a replica killed or hung under
//! 32 reading clients (no client sees an error), a dead primary (writes fail fast, reads go on), and
//! reads spread over both replicas.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{pg_tool, run_command, Env};
use pgscale::config::PoolMode;

/// A primary, two replicas and the proxy, with quick health checks, short connect timeouts and a
/// short breaker cooldown (so the tests see a replica come back), and pgbench's tables everywhere.
async fn bench_env() -> Env {
    let env = Env::start_with_replicas(
        2,
        |c| {
            c.health.timeout_ms = 500;
            c.health.cooldown_ms = 1_000;
            c.pool.connect_timeout_ms = 1_000;
        },
        PoolMode::Transaction,
        40,
    )
    .await;
    let init = Command::new(pg_tool("pgbench"))
        .args(["-i", "-s", "1", "-q"])
        .arg(env.pg.superuser_url("app"))
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    env.prepare_replicated("GRANT ALL ON ALL TABLES IN SCHEMA public TO app")
        .await;
    env
}

fn pgbench_select(env: &Env, seconds: u32) -> Command {
    let mut c = Command::new(pg_tool("pgbench"));
    c.args([
        "-n",
        "-S",
        "-c",
        "32",
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
    ])
    .arg(env.app_url());
    c
}

/// (processed, failed) from pgbench's summary; panics on an aborted run.
fn summary(out: &std::process::Output) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stdout.contains("aborted") && !stderr.contains("aborted"),
        "pgbench failed or aborted clients:\n{stdout}\n{stderr}"
    );
    let find = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{stdout}"))
    };
    (
        find("number of transactions actually processed: "),
        find("number of failed transactions: "),
    )
}

/// A fresh directory for pgbench's per-transaction logs.
fn tempdir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("pgscale-pgbench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// The longest transaction in pgbench's `-l` logs (third column: latency in microseconds).
fn slowest_transaction(dir: &std::path::Path) -> Duration {
    let mut slowest = 0u64;
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).expect("read log dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read log");
        for line in text.lines() {
            lines += 1;
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                slowest = slowest.max(us);
            }
        }
    }
    assert!(lines > 0, "pgbench wrote no transaction log");
    Duration::from_micros(slowest)
}

/// Committed transactions on `port`'s database `app`, as the server counts them.
async fn commits(env: &Env, server: &pgscale::local_cluster::LocalPostgres) -> i64 {
    env.direct_to(server)
        .await
        .query_one(
            "select xact_commit from pg_stat_database where datname = 'app'",
            &[],
        )
        .await
        .expect("pg_stat_database")
        .get(0)
}

/// Waits until a read through the proxy lands on `server` (it takes reads again).
async fn wait_reads_reach(
    env: &Env,
    server: &pgscale::local_cluster::LocalPostgres,
    within: Duration,
) {
    let app = env.app().await;
    let deadline = Instant::now() + within;
    loop {
        let port: i32 = app
            .query_one("select inet_server_port()", &[])
            .await
            .expect("read")
            .get(0);
        if port == i32::from(server.port()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reads never reached port {}",
            server.port()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_under_pgbench_costs_no_client_a_failure() {
    let mut env = bench_env().await;
    let bench = tokio::spawn(run_command(pgbench_select(&env, 8)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.replicas[0].kill9().expect("kill -9 replica");
    let out = bench.await.expect("join");
    let (processed, failed) = summary(&out);
    assert!(processed > 0);
    assert_eq!(failed, 0, "{}", String::from_utf8_lossy(&out.stdout));
    // Reads caught by the crash were retried elsewhere (how many depends on timing: backends finish
    // the query they are running), and the dead replica's breaker opened.
    let shared = env.proxy.as_ref().expect("proxy").shared().clone();
    assert!(
        shared.topology().shards[0].replicas[0]
            .breaker
            .opened_total()
            > 0
    );

    tokio::task::block_in_place(|| env.replicas[0].restart()).expect("restart replica");
    wait_reads_reach(&env, &env.replicas[0], Duration::from_secs(15)).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_replica_under_pgbench_costs_no_client_a_failure() {
    let env = bench_env().await;
    let logs = tempdir();
    let mut command = pgbench_select(&env, 10);
    command.arg("-l").current_dir(&logs);
    let bench = tokio::spawn(run_command(command));
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.replicas[1].freeze().expect("SIGSTOP replica");
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.replicas[1].thaw().expect("SIGCONT replica");
    let out = bench.await.expect("join");
    let (processed, failed) = summary(&out);
    assert!(processed > 0);
    assert_eq!(failed, 0, "{}", String::from_utf8_lossy(&out.stdout));
    // Without detection, reads sent to the frozen replica would wait the whole 6 s freeze; the health
    // polls (3 x 500 ms) open its breaker, which cuts them loose to be retried elsewhere.
    let slowest = slowest_transaction(&logs);
    let _ = std::fs::remove_dir_all(&logs);
    assert!(
        slowest < Duration::from_secs(4),
        "no client hangs past the timeouts: slowest transaction took {slowest:?}"
    );
    let shared = env.proxy.as_ref().expect("proxy").shared().clone();
    assert!(
        shared.topology().shards[0].replicas[1]
            .breaker
            .opened_total()
            > 0
    );
    assert!(
        shared.reads_retried.load(Ordering::Relaxed) > 0,
        "reads waiting on the frozen replica were retried elsewhere"
    );
    wait_reads_reach(&env, &env.replicas[1], Duration::from_secs(15)).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_primary_fails_writes_fast_and_reads_go_on() {
    let env = bench_env().await;
    let app = env.app().await;
    let reader = env.app().await;
    app.batch_execute("UPDATE pgbench_branches SET bbalance = 0")
        .await
        .expect("write before the crash");
    env.pg.kill9().expect("kill -9 primary");
    for attempt in 0..5 {
        let started = Instant::now();
        let err = app
            .batch_execute("UPDATE pgbench_branches SET bbalance = 1")
            .await
            .expect_err("a write with the primary dead");
        let code = common::sqlstate(&err).unwrap_or_default();
        assert!(
            code.starts_with("08") || code.starts_with("57P"),
            "attempt {attempt}: SQLSTATE {code}: {err}"
        );
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(
            message.contains(&env.pg.port().to_string()),
            "the error names the primary: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "write errors are fast"
        );
    }
    for _ in 0..20 {
        let row = reader
            .query_one(
                "select count(*), pg_is_in_recovery() from pgbench_branches",
                &[],
            )
            .await
            .expect("reads go on from the replicas");
        assert!(row.get::<_, bool>(1));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_pgbench_spreads_over_both_replicas_in_every_protocol() {
    let mut env = bench_env().await;
    let before = [
        commits(&env, &env.replicas[0]).await,
        commits(&env, &env.replicas[1]).await,
    ];
    let primary_before = commits(&env, &env.pg).await;
    let mut processed = 0;
    // Simple, extended (unnamed statements) and prepared (named, parsed once per client) protocol.
    for mode in ["simple", "extended", "prepared"] {
        let mut command = pgbench_select(&env, 2);
        command.args(["-M", mode]);
        let out = run_command(command).await;
        let (done, failed) = summary(&out);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("query mode: {mode}")));
        assert_eq!(failed, 0, "-M {mode}");
        assert!(done > 0, "-M {mode}");
        processed += done;
    }
    // Backends report their counts when they exit: close the proxy's server connections first.
    if let Some(proxy) = env.proxy.take() {
        proxy.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = [
        commits(&env, &env.replicas[0]).await,
        commits(&env, &env.replicas[1]).await,
    ];
    let primary_after = commits(&env, &env.pg).await;
    let per_replica = [after[0] - before[0], after[1] - before[1]];
    let total = (per_replica[0] + per_replica[1]) as f64;
    assert!(
        total >= processed as f64 * 0.9,
        "reads went to replicas: {per_replica:?} of {processed}"
    );
    for n in per_replica {
        assert!(
            n as f64 > total * 0.25,
            "both replicas take a fair share: {per_replica:?}"
        );
    }
    assert!(
        ((primary_after - primary_before) as f64) < processed as f64 * 0.1,
        "the primary took few reads: {}",
        primary_after - primary_before
    );
    env.stop().await;
}

/// Issue 11: replica lag was measured against the dead primary's last polled WAL position, which
/// the replicas can never reach; past `max_replica_lag_ms` they were all "stale" and reads failed
/// with 57P03. With the primary down, a replica's lag is what it received but has not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outlast_the_lag_limit_after_the_primary_dies() {
    let env = Env::start_with_replicas(
        2,
        |c| {
            c.health.timeout_ms = 500;
            c.health.cooldown_ms = 1_000;
            c.pool.connect_timeout_ms = 1_000;
            c.routing.max_replica_lag_ms = 2_000;
        },
        PoolMode::Transaction,
        10,
    )
    .await;
    env.prepare_replicated("CREATE TABLE crash_t (i int); GRANT ALL ON crash_t TO app")
        .await;
    let reader = env.app().await;
    let writer = env.app().await;
    // WAL the replicas never get: an open transaction's insert sits in a page not flushed yet (only
    // commits and full pages are flushed), so the primary's insert position stays ahead of them.
    let primary = env.direct().await;
    primary
        .batch_execute("BEGIN; INSERT INTO crash_t VALUES (1)")
        .await
        .expect("open transaction on the primary");
    // Let the health poller see that position.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unsent: bool = primary
        .query_one(
            "select pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()",
            &[],
        )
        .await
        .expect("wal positions")
        .get(0);
    assert!(unsent, "the primary has WAL the replicas have not received");
    env.pg.kill9().expect("kill -9 primary");

    let err = common::within("a write with the primary dead", async {
        writer
            .batch_execute("INSERT INTO crash_t VALUES (2)")
            .await
            .expect_err("writes fail")
    })
    .await;
    let code = common::sqlstate(&err).unwrap_or_default();
    assert!(
        code.starts_with("08") || code.starts_with("57P"),
        "a clear error for writes: SQLSTATE {code}: {err}"
    );

    // Well past the 2 s lag limit, and past the poll/breaker timings.
    let until = Instant::now() + Duration::from_secs(15);
    let mut reads = 0;
    while Instant::now() < until {
        let row = common::within("a read with the primary dead", async {
            reader
                .query_one("select pg_is_in_recovery(), count(*) from crash_t", &[])
                .await
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "read {reads} after the crash failed: {:?} {e}",
                common::sqlstate(&e)
            )
        });
        assert!(row.get::<_, bool>(0), "reads come from a replica");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reads > 10);
    env.stop().await;
}
