//! pgbench and psql through pgscale: 50 clients over a pool of 10 in transaction mode, every query
//! mode, zero failed transactions.

mod common;

use std::process::Command;

use common::{pg_tool, run_command, Env};
use pgscale::config::PoolMode;

/// Seconds per pgbench run (the issue asks for 20; `PGSCALE_PGBENCH_SECONDS` shortens local runs).
fn duration() -> String {
    std::env::var("PGSCALE_PGBENCH_SECONDS").unwrap_or_else(|_| "20".into())
}

fn pgbench(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(pg_tool("pgbench"));
    c.args(args).arg(env.app_url());
    c
}

/// Parses "number of transactions actually processed: N" and "number of failed transactions: N".
fn counts(stdout: &str) -> (u64, u64) {
    let find = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (
        find("number of transactions actually processed: "),
        find("number of failed transactions: "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_50_clients_over_pool_of_10_in_every_mode() {
    let env = Env::start(PoolMode::Transaction, 10).await;
    let init = run_command(pgbench(&env, &["-i", "-s", "2", "-q"])).await;
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let seconds = duration();
    for mode_args in [
        vec!["-M", "simple"],
        vec!["-M", "extended"],
        vec!["-M", "prepared"],
        vec!["-S", "-M", "prepared"],
        vec!["-S", "-M", "simple"],
    ] {
        let mut args = vec!["-c", "50", "-j", "2", "-T", seconds.as_str(), "-n"];
        args.extend(mode_args.iter().copied());
        let out = run_command(pgbench(&env, &args)).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (done, failed) = counts(&stdout);
        assert!(
            out.status.success(),
            "pgbench {mode_args:?} failed:\n{stdout}\n{stderr}"
        );
        assert_eq!(
            failed, 0,
            "pgbench {mode_args:?}: failed transactions\n{stdout}\n{stderr}"
        );
        assert!(
            done > 100,
            "pgbench {mode_args:?} did work: {done}\n{stdout}"
        );
        assert!(
            !stderr.contains("error"),
            "pgbench {mode_args:?} reported errors:\n{stderr}"
        );
    }
    // The pool held to its size on the server side.
    let direct = env.direct().await;
    let conns: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .expect("activity")
        .get(0);
    assert!(conns <= 10, "{conns} server connections for pool_size 10");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_runs_through_pgscale() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let script = "\
CREATE TABLE p (id serial primary key, name text);
INSERT INTO p (name) SELECT 'n' || g FROM generate_series(1, 1000) g;
\\copy p (name) FROM STDIN
alpha
beta
\\.
BEGIN;
UPDATE p SET name = 'changed' WHERE id = 1;
SAVEPOINT s;
SELECT 1/0;
ROLLBACK TO s;
COMMIT;
SELECT count(*), min(name) FILTER (WHERE id = 1) FROM p;
";
    let mut command = Command::new(pg_tool("psql"));
    command
        .arg(env.app_url())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().expect("psql");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script");
        child.wait_with_output().expect("psql output")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("1002|changed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("division by zero"), "{stderr}");
    env.stop().await;
}
