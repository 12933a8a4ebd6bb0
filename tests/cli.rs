//! The `pgscale check` and `pgscale shard-of` command lines: exit codes, every problem named with
//! its field, and shard-of agreeing with the library's ring.

use std::path::Path;
use std::process::{Command, Output};

use pgscale::sharding::{hash_key, Ring, ShardKey};

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run check")
}

#[test]
fn check_accepts_the_sample_and_lists_every_problem_of_a_bad_config() {
    let ok = Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/shards.toml"),
        ])
        .output()
        .expect("run check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let dir = std::env::temp_dir().join(format!("pgscale-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\naddress = \"nowhere\"\n[pool]\npool_size = 0\n[[users]]\nname = \"a\"\nauth = \"md5\"\n\
         [[shards]]\nprimary = \"mysql://x\"\n",
    )
    .expect("write");
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "listen.address",
        "pool.pool_size",
        "users[0].password",
        "shards[0].primary",
    ] {
        assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
    }
    std::fs::write(&bad, "[pool]\npool_sise = 3\n").expect("write");
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool_sise"));
    let _ = std::fs::remove_dir_all(&dir);
}

const SHARDED: &str = r#"
[sharding]
vnodes_per_shard = 256
reference_tables = ["countries"]
[[sharding.tables]]
name = "users"
column = "id"
[[sharding.tables]]
name = "sessions"
column = "token"
key_type = "text"
[[users]]
name = "app"
password = "app"
[[shards]]
name = "alpha"
primary = "postgres://127.0.0.1:5432"
[[shards]]
name = "beta"
primary = "postgres://app:secret@127.0.0.1:5433/app"
[[shards]]
name = "gamma"
primary = "postgres://127.0.0.1:5434"
"#;

fn shard_of(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .arg("shard-of")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run shard-of")
}

/// The line shard-of must print for `key`, computed with the library's ring.
fn expected_line(key: &ShardKey) -> String {
    let names = ["alpha", "beta", "gamma"];
    let ring = Ring::new(&names, 256).expect("ring");
    let hash = hash_key(key);
    let index = ring.owner(hash);
    format!(
        "{} (index {index}, postgres://127.0.0.1:{}) hash={hash:#018x}",
        names[index],
        5432 + index
    )
}

#[test]
fn shard_of_names_the_rings_owner_and_check_counts_sharded_tables() {
    let dir = std::env::temp_dir().join(format!("pgscale-shard-of-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("sharded.toml");
    std::fs::write(&config, SHARDED).expect("write");

    let out = check(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 sharded table(s), 1 reference table(s) over 3 shard(s)"),
        "{stdout}"
    );

    // Enough keys that every shard owns some of them.
    let mut owners = std::collections::HashSet::new();
    for key in ["42", "-42", "0", "1", "7", "100", "9000", "123456789"] {
        let out = shard_of(&config, &[key]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: i64 = key.parse().expect("int");
        let want = expected_line(&ShardKey::Int(value));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
        owners.insert(want.split_whitespace().next().map(str::to_string));
    }
    assert!(owners.len() > 1, "keys spread over shards: {owners:?}");
    let out = shard_of(&config, &["--table", "Public.Sessions", "abc"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected_line(&ShardKey::Text("abc".into()))
    );

    for (args, message) in [
        (&["x42"][..], "not a bigint key"),
        (&["--table", "orders", "1"][..], "not sharded"),
        (&["--table", "countries", "1"][..], "reference table"),
    ] {
        let out = shard_of(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
