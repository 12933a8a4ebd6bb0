//! `pgscale::local_cluster` against real PostgreSQL servers: parallel clusters on their own ports,
//! SCRAM over TCP, cleanup on stop, drop and owner death, crash and restart, streaming replicas.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgscale::local_cluster::{ClusterError, ClusterOptions, LocalPostgres, PgBinaries};

fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs the real `psql` client as `postgres` over TCP with `password`, the way users would.
fn psql_with_password(pg: &LocalPostgres, password: &str, sql: &str) -> std::process::Output {
    Command::new(PgBinaries::from_env().dir.join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            pg.host(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-p", &pg.port().to_string(), "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql")
}

#[test]
fn parallel_clusters_get_own_ports_scram_and_clean_up() {
    let custom = ClusterOptions {
        superuser_password: "s3cret'pw".into(),
        extra_conf: vec![("work_mem".into(), "7MB".into())],
        max_connections: 42,
        tls: None,
    };
    let threads: Vec<_> = [ClusterOptions::default(), custom]
        .into_iter()
        .map(|opts| std::thread::spawn(move || LocalPostgres::start(&opts).expect("start")))
        .collect();
    let mut clusters: Vec<LocalPostgres> = threads
        .into_iter()
        .map(|t| t.join().expect("join"))
        .collect();
    let mut b = clusters.pop().expect("second");
    let mut a = clusters.pop().expect("first");

    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_eq!(a.psql("select 1").expect("psql a"), "1");
    assert_eq!(b.psql("select 1").expect("psql b"), "1");
    assert_eq!(a.psql("show max_connections").expect("show"), "200");
    assert_eq!(b.psql("show max_connections").expect("show"), "42");
    assert_eq!(b.psql("show work_mem").expect("show"), "7MB");
    assert_eq!(a.psql("show listen_addresses").expect("show"), "127.0.0.1");
    assert_eq!(
        a.url("app", "pw", "db"),
        format!("postgres://app:pw@127.0.0.1:{}/db", a.port())
    );

    // Several statements, including one that refuses a transaction block, run in order.
    a.psql("create role app login password 'app'; create database app owner app;")
        .expect("multi-statement script");
    assert_eq!(
        a.psql_as("app", "app", "app", "select current_user")
            .expect("app login"),
        "app"
    );
    match a.psql("select 1/0") {
        Err(ClusterError::Psql { stderr }) => {
            assert!(stderr.contains("division by zero"), "{stderr}")
        }
        other => panic!("expected a psql error, got {other:?}"),
    }

    // The superuser has a SCRAM secret and TCP logins need the password.
    let secret = b
        .psql("select left(rolpassword, 14) from pg_authid where rolname = 'postgres'")
        .expect("secret");
    assert_eq!(secret, "SCRAM-SHA-256$");
    let ok = psql_with_password(&b, "s3cret'pw", "select current_user");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "postgres");
    let bad = psql_with_password(&b, "wrong", "select 1");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Stopping one leaves the other running; stopping twice is fine.
    let (a_port, a_data) = (a.port(), a.data_dir().to_path_buf());
    a.stop().expect("stop");
    a.stop().expect("second stop");
    assert!(!accepts_connections(a_port));
    assert!(!a_data.exists());
    assert!(matches!(a.psql("select 1"), Err(ClusterError::Stopped)));
    assert_eq!(b.psql("select 2").expect("b still up"), "2");

    // Dropping cleans up too.
    let (b_port, b_data) = (b.port(), b.data_dir().to_path_buf());
    b.restart().expect("restart while running");
    assert_eq!(b.port(), b_port);
    drop(b);
    assert!(!accepts_connections(b_port));
    assert!(!b_data.exists());
}

#[test]
fn kill9_then_restart_on_same_port_keeps_committed_data() {
    let mut pg = LocalPostgres::start(&ClusterOptions::default()).expect("start");
    let port = pg.port();
    // synchronous_commit is off for speed; a fault test that needs a commit to survive a crash asks
    // for it in its session.
    pg.psql("set synchronous_commit = on; create table t(x int); insert into t values (41), (1);")
        .expect("write");
    let pid = pg.postmaster_pid().expect("running");

    pg.kill9().expect("kill9");
    assert_eq!(pg.postmaster_pid(), None);
    assert!(!accepts_connections(port));
    assert!(matches!(pg.kill9(), Err(ClusterError::NotRunning)));

    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    assert_ne!(pg.postmaster_pid(), Some(pid));
    assert_eq!(pg.psql("select sum(x) from t").expect("read"), "42");
    let data = pg.data_dir().to_path_buf();
    pg.stop().expect("stop");
    assert!(!data.exists());
    assert!(matches!(pg.restart(), Err(ClusterError::Stopped)));
}

#[test]
fn replica_streams_from_primary_and_can_be_promoted() {
    let primary = LocalPostgres::start(&ClusterOptions {
        max_connections: 50,
        ..ClusterOptions::default()
    })
    .expect("primary");
    primary
        .psql("create table r(x int); insert into r values (1);")
        .expect("write");
    let replica = LocalPostgres::start_replica_of(&primary).expect("replica");
    assert_ne!(replica.port(), primary.port());
    assert_eq!(
        replica
            .psql("select pg_is_in_recovery()")
            .expect("recovery"),
        "t"
    );
    assert_eq!(replica.psql("show max_connections").expect("show"), "50");

    primary.psql("insert into r values (2);").expect("write");
    assert!(
        eventually(10, || replica
            .psql("select count(*) from r")
            .ok()
            .as_deref()
            == Some("2")),
        "row never reached the replica"
    );
    assert!(
        replica.psql("insert into r values (3)").is_err(),
        "standby is read-only"
    );

    replica.promote().expect("promote");
    assert_eq!(
        replica
            .psql("select pg_is_in_recovery()")
            .expect("recovery"),
        "f"
    );
    replica
        .psql("insert into r values (3);")
        .expect("write after promote");
}

/// Env var that turns [`helper_owner_process_for_watchdog_test`] into a cluster owner.
const WATCHDOG_CHILD: &str = "PGSCALE_LOCAL_CLUSTER_WATCHDOG_CHILD";

/// Not a test of its own: the watchdog test re-runs this binary to execute it, with the env var set,
/// as a process owning a cluster that then gets SIGKILLed.
#[test]
fn helper_owner_process_for_watchdog_test() {
    if std::env::var_os(WATCHDOG_CHILD).is_none() {
        return;
    }
    let pg = LocalPostgres::start(&ClusterOptions::default()).expect("start");
    // The harness prints "test <name> ... " without a newline first; start a line of our own.
    println!("\nCLUSTER {} {}", pg.port(), pg.data_dir().display());
    std::thread::sleep(Duration::from_secs(120));
    drop(pg);
}

#[test]
fn watchdog_cleans_up_after_owner_is_sigkilled() {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_owner_process_for_watchdog_test",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(WATCHDOG_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn owner");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("read line"))
        .find_map(|l| Some(l.split_once("CLUSTER ")?.1.to_string()))
        .expect("owner printed its cluster");
    let mut fields = line.split_whitespace();
    let port: u16 = fields.next().expect("port").parse().expect("port number");
    let data = PathBuf::from(fields.next().expect("data dir"));
    assert!(accepts_connections(port));
    assert!(data.exists());

    child.kill().expect("SIGKILL owner");
    child.wait().expect("reap owner");
    assert!(
        eventually(15, || !data.exists() && !accepts_connections(port)),
        "watchdog left the server on port {port} or {} behind",
        data.display()
    );
}
