//! The `pgscale check` command line: exit codes and every problem named with its field.

use std::path::Path;
use std::process::{Command, Output};

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
