//! `pgscale demo` as a newcomer runs it: it prints the URLs, serves psql, and leaves nothing running
//! after SIGTERM; `--shards N` starts N primaries with the sample schema and a config to match.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgscale::config::Config;
use pgscale::sharding::{KeyType, ShardKey};

/// Starts `pgscale demo ARGS` and returns it with the lines it printed before saying it runs.
fn start_demo(args: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let running = line.contains("is running");
        lines.push(line);
        if running {
            break;
        }
    }
    (child, lines)
}

/// SIGTERM, then waits up to 30 s for the demo to exit.
fn stop_demo(mut child: Child) {
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
}

/// The values of lines `PREFIX…`, prefix removed.
fn values<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new(common::pg_tool("psql"))
        .arg(url)
        .args(["-X", "-A", "-t", "-c", sql])
        .output()
        .expect("psql")
}

#[test]
fn demo_prints_urls_serves_queries_and_cleans_up() {
    let port = free_port();
    let (child, lines) = start_demo(&["--replicas", "1", "--port", &port.to_string()]);
    let url = values(&lines, "DATABASE_URL=")
        .first()
        .expect("DATABASE_URL line")
        .to_string();
    assert!(url.contains(&format!(":{port}/")), "{url}");
    let backends = values(&lines, "BACKEND ");
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

    let out = psql(&url, "select current_user");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reads go to the replica (once its first health poll is in).
    let mut on_replica = false;
    for _ in 0..50 {
        let out = psql(&url, "select pg_is_in_recovery(), inet_server_port()");
        if String::from_utf8_lossy(&out.stdout).trim() == format!("t|{replica_port}") {
            on_replica = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(on_replica, "a read through the demo runs on its replica");

    // The admin console and the metrics endpoint it prints.
    let admin = values(&lines, "ADMIN_URL=")
        .first()
        .expect("ADMIN_URL line")
        .to_string();
    assert!(admin.ends_with(&format!(":{port}/pgscale")), "{admin}");
    let out = psql(&admin, "SHOW VERSION");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pgscale "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = values(&lines, "METRICS_URL=")
        .first()
        .expect("METRICS_URL line")
        .to_string();
    let address = metrics
        .strip_prefix("http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .expect("http://host:port/metrics");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("pgscale_queries_total{database=\"app\",route=\"replica\"}"),
        "{response}"
    );

    stop_demo(child);
    let after = psql(&backend_url, "select 1");
    assert!(!after.status.success(), "the demo's Postgres is stopped");
}

#[test]
fn demo_with_shards_writes_a_sharded_config_and_the_schema_on_every_shard() {
    let (child, lines) = start_demo(&["--shards", "3", "--port", &free_port().to_string()]);
    let config_path = values(&lines, "CONFIG=")
        .first()
        .expect("CONFIG line")
        .to_string();
    let config = Config::load(config_path.as_ref()).expect("the demo's config loads");
    assert_eq!(config.shards.len(), 3);
    let rules = config.sharding_rules();
    for (table, column) in [("users", "id"), ("pitches", "user_id")] {
        assert_eq!(
            rules.sharded(table).map(|t| t.column.as_str()),
            Some(column),
            "{table}"
        );
    }

    let backends = values(&lines, "BACKEND ");
    assert_eq!(backends.len(), 3, "{backends:?}");
    for (i, backend) in backends.iter().enumerate() {
        let url = backend
            .strip_prefix(&format!("{i} primary "))
            .unwrap_or_else(|| panic!("BACKEND {i} primary …: {backends:?}"));
        let app_db = format!("{}/app", url.trim_end_matches("/postgres"));
        let out = psql(
            &app_db,
            "select count(*) from users join pitches on pitches.user_id = users.id",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "shard {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .args(["shard-of", "--config", &config_path, "42"])
        .output()
        .expect("shard-of");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ring = config.ring().expect("ring");
    let key = ShardKey::from_text(KeyType::BigInt, b"42").expect("key");
    let owner = &ring.shards()[ring.shard_of(&key)];
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.split_whitespace().next(),
        Some(owner.as_str()),
        "{stdout}"
    );

    stop_demo(child);
    assert!(
        !std::path::Path::new(&config_path).exists(),
        "the demo deletes its config on exit"
    );
}

#[test]
fn demo_tls_prints_sslmode_require_urls_that_psql_uses() {
    let port = free_port();
    let (child, lines) = start_demo(&["--tls", "--port", &port.to_string()]);
    let url = values(&lines, "DATABASE_URL=")
        .first()
        .expect("DATABASE_URL line")
        .to_string();
    assert!(url.ends_with("?sslmode=require"), "{url}");
    let out = psql(&url, "select current_user");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate verifies against the printed CA.
    let ca = values(&lines, "CA_CERT=")
        .first()
        .expect("CA_CERT line")
        .to_string();
    let verify = format!(
        "{}&sslrootcert={ca}",
        url.replace("@127.0.0.1:", "@localhost:")
            .replace("sslmode=require", "sslmode=verify-full")
    );
    let out = psql(&verify, "select 'verified'");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verified",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plaintext is refused.
    let out = psql(
        &url.replace("sslmode=require", "sslmode=disable"),
        "select 1",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sslmode=require"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = values(&lines, "ADMIN_URL=")
        .first()
        .expect("ADMIN_URL")
        .to_string();
    assert!(admin.ends_with("/pgscale?sslmode=require"), "{admin}");
    let out = psql(&admin, "SHOW VERSION");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pgscale "));
    let config = values(&lines, "CONFIG=")
        .first()
        .expect("CONFIG")
        .to_string();
    let dir = std::path::Path::new(&config)
        .parent()
        .expect("dir")
        .to_path_buf();
    assert!(dir.join("server.key").exists());
    stop_demo(child);
    assert!(
        !dir.exists(),
        "the demo's certificates are deleted with its config"
    );
}
