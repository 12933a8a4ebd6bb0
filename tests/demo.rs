//! `pgscale demo` as a newcomer runs it: it prints the URLs, serves psql, and leaves nothing running
//! after SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn demo_prints_urls_serves_queries_and_cleans_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .args(["demo", "--replicas", "1", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut database_url = None;
    let mut backends = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(url) = line.strip_prefix("DATABASE_URL=") {
            database_url = Some(url.to_string());
        }
        if let Some(rest) = line.strip_prefix("BACKEND ") {
            backends.push(rest.to_string());
        }
        if line.contains("is running") {
            break;
        }
    }
    let url = database_url.expect("DATABASE_URL line");
    assert!(url.contains(&format!(":{port}/")), "{url}");
    assert_eq!(backends.len(), 2, "{backends:?}");
    assert!(
        backends[0].starts_with("0 primary postgres://"),
        "{backends:?}"
    );
    assert!(
        backends[1].starts_with("0 replica postgres://"),
        "{backends:?}"
    );
    let replica_port = backends[1]
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
        .to_string();
    let backend_url = backends[0].trim_start_matches("0 primary ").to_string();

    let out = Command::new(common::pg_tool("psql"))
        .arg(&url)
        .args(["-X", "-A", "-t", "-c", "select current_user"])
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reads go to the replica (once its first health poll is in).
    let mut on_replica = false;
    for _ in 0..50 {
        let out = Command::new(common::pg_tool("psql"))
            .arg(&url)
            .args([
                "-X",
                "-A",
                "-t",
                "-c",
                "select pg_is_in_recovery(), inet_server_port()",
            ])
            .output()
            .expect("psql");
        if String::from_utf8_lossy(&out.stdout).trim() == format!("t|{replica_port}") {
            on_replica = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(on_replica, "a read through the demo runs on its replica");

    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut waited = 0;
    while child.try_wait().expect("wait").is_none() {
        assert!(waited < 300, "demo did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    let after = Command::new(common::pg_tool("psql"))
        .arg(&backend_url)
        .args(["-X", "-c", "select 1"])
        .output()
        .expect("psql");
    assert!(!after.status.success(), "the demo's Postgres is stopped");
}
