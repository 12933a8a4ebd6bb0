//! Online resharding end to end: 2 → 3 shards while writers keep writing through a running proxy.
//! Every write the writers saw acknowledged must be on the shard the new ring gives, exactly once,
//! with the value written last, after copy, verify, cutover and cleanup.

#[path = "common/reshard.rs"]
mod reshard_env;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgscale::config::Config;
use reshard_env::{ok, owner, stdout, ReshardEnv, PASSWORD};
use tokio_postgres::{Client, NoTls};
use xxhash_rust::xxh3::xxh3_64;

const INITIAL_USERS: i64 = 6_000;
const WRITERS: i64 = 4;

/// What a writer saw acknowledged, per user id: the name it holds, or None once deleted.
type Log = BTreeMap<i64, Option<String>>;

/// Adds the admin console (same in both configs, as reshard requires) and pooling settings.
fn with_admin(path: &std::path::Path) {
    let mut text = std::fs::read_to_string(path).expect("read config");
    text.push_str("\n[admin]\nusers = [\"postgres\"]\n\n[pool]\npool_size = 8\n");
    std::fs::write(path, text).expect("write config");
}

async fn connect(port: u16, database: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname={database}"),
        NoTls,
    )
    .await
    .expect("connect through the proxy");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A writer owning the ids ≡ `me` (mod WRITERS): inserts new ids, renames and deletes its own,
/// one autocommit statement at a time, logging each acknowledged one. Returns its log and how many
/// statements failed (a failure's outcome is unknown, so the test wants none).
async fn writer(port: u16, me: i64, stop: Arc<AtomicBool>) -> (Log, u64, u64) {
    let client = connect(port, "postgres").await;
    let mut log = Log::new();
    for id in (1..=INITIAL_USERS).filter(|id| id % WRITERS == me) {
        log.insert(id, Some(format!("user {id}")));
    }
    let (mut next_new, mut step, mut failures, mut writes) =
        (INITIAL_USERS + 1 + me, 0u64, 0u64, 0u64);
    while next_new % WRITERS != me {
        next_new += 1;
    }
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        // A pseudo-random existing id of ours (spread over the whole key range).
        let pick = {
            let n = (INITIAL_USERS / WRITERS) as u64;
            let k = xxh3_64(&(step ^ (me as u64) << 40).to_le_bytes()) % n;
            k as i64 * WRITERS + me
        };
        let pick = if pick == 0 { WRITERS } else { pick };
        let result = match step % 10 {
            0..=3 => {
                let name = format!("new {next_new}");
                let r = client
                    .execute(
                        "INSERT INTO users (id, name) VALUES ($1, $2)",
                        &[&next_new, &name],
                    )
                    .await;
                if r.is_ok() {
                    log.insert(next_new, Some(name));
                }
                next_new += WRITERS;
                r.map(drop)
            }
            4..=8 => {
                let name = format!("renamed {pick} at {step}");
                let r = client
                    .execute("UPDATE users SET name = $2 WHERE id = $1", &[&pick, &name])
                    .await;
                if let Ok(n) = r {
                    if n == 1 {
                        log.insert(pick, Some(name));
                    }
                }
                r.map(drop)
            }
            _ => {
                let r = client
                    .execute("DELETE FROM users WHERE id = $1", &[&pick])
                    .await;
                if r.is_ok() {
                    log.insert(pick, None);
                }
                r.map(drop)
            }
        };
        match result {
            Ok(()) => writes += 1,
            Err(e) => {
                failures += 1;
                eprintln!("writer {me}: {e:?}");
            }
        }
    }
    (log, failures, writes)
}

/// `id: name` lines of every live row in `log`, sorted, and their xxh3.
fn checksum(lines: &[String]) -> u64 {
    xxh3_64(lines.join("\n").as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_to_three_shards_under_writes_loses_and_duplicates_nothing() {
    let env = ReshardEnv::start("online").await;
    env.load(INITIAL_USERS).await;
    with_admin(&env.old_path);
    with_admin(&env.new_path);
    let old = Config::load(&env.old_path).expect("old config loads");
    let new_ring = Config::load(&env.new_path)
        .expect("new config loads")
        .ring()
        .expect("new ring");
    let proxy = pgscale::listener::start_from_file(old, env.old_path.clone())
        .await
        .expect("start the proxy on the old config");
    let port = proxy.local_addr.port();
    let admin_url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/pgscale");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|me| tokio::spawn(writer(port, me, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let copied = ok("reshard copy", &env.cli("copy", &[], &[]).await);
    println!("--- copy\n{copied}");
    let verified = ok("reshard verify", &env.cli("verify", &[], &[]).await);
    println!("--- verify\n{verified}");
    let cut = ok(
        "reshard cutover",
        &env.cli(
            "cutover",
            &["--proxy", &admin_url, "--timeout-ms", "10000"],
            &[],
        )
        .await,
    );
    println!("--- cutover\n{cut}");
    let pause_ms: u64 = cut
        .split("paused ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("cutover printed no pause: {cut}"));
    // Writes go on after the switch, now reaching the new shard for moved keys.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut log = Log::new();
    let (mut failures, mut writes) = (0, 0);
    for w in writers {
        let (l, f, n) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writer stops")
            .expect("writer task");
        log.extend(l);
        failures += f;
        writes += n;
    }
    let cleaned = ok("reshard cleanup", &env.cli("cleanup", &[], &[]).await);
    println!("--- cleanup\n{cleaned}");

    // Every shard's users, by id, with where each was found.
    let mut found: BTreeMap<i64, Vec<(usize, String)>> = BTreeMap::new();
    for shard in 0..3 {
        let client = env.client(shard).await;
        for row in client
            .query("SELECT id, name FROM users", &[])
            .await
            .expect("read users")
        {
            found
                .entry(row.get(0))
                .or_default()
                .push((shard, row.get(1)));
        }
    }
    let mut misplaced = Vec::new();
    let mut duplicated = Vec::new();
    let mut lost = Vec::new();
    let mut wrong_value = Vec::new();
    for (id, expected) in &log {
        let copies = found.get(id).map_or(&[][..], Vec::as_slice);
        match (expected, copies) {
            (None, []) => {}
            (None, _) => wrong_value.push(*id),
            (Some(_), []) => lost.push(*id),
            (Some(name), [(shard, got)]) => {
                if *shard != owner(&new_ring, *id) {
                    misplaced.push(*id);
                }
                if got != name {
                    wrong_value.push(*id);
                }
            }
            (Some(_), _) => duplicated.push(*id),
        }
    }
    let unexpected: Vec<i64> = found
        .keys()
        .filter(|id| !log.contains_key(id))
        .copied()
        .collect();
    let expected_lines: Vec<String> = log
        .iter()
        .filter_map(|(id, name)| name.as_ref().map(|n| format!("{id}: {n}")))
        .collect();
    let found_lines: Vec<String> = found
        .iter()
        .flat_map(|(id, copies)| copies.iter().map(move |(_, n)| format!("{id}: {n}")))
        .collect();
    let on_new_shard = found
        .values()
        .flatten()
        .filter(|(shard, _)| *shard == 2)
        .count();
    println!(
        "writes acknowledged: {writes}, failed: {failures}; rows expected: {}, found: {} \
         ({on_new_shard} on shard2); checksum expected {:016x}, found {:016x}; cutover pause {pause_ms} ms",
        expected_lines.len(),
        found_lines.len(),
        checksum(&expected_lines),
        checksum(&found_lines),
    );
    assert_eq!(failures, 0, "writes failed during the resharding");
    assert!(writes > 100, "the writers hardly wrote ({writes})");
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    assert!(duplicated.is_empty(), "rows on two shards: {duplicated:?}");
    assert!(
        misplaced.is_empty(),
        "rows not where the new ring puts them: {misplaced:?}"
    );
    assert!(
        wrong_value.is_empty(),
        "rows with another value than written last: {wrong_value:?}"
    );
    assert!(unexpected.is_empty(), "rows nobody wrote: {unexpected:?}");
    assert_eq!(checksum(&expected_lines), checksum(&found_lines));
    assert!(on_new_shard > 1000, "shard2 got only {on_new_shard} users");
    assert!(pause_ms < 10_000, "pause {pause_ms} ms");

    // The proxy routes on the new ring: a fresh moved key's write lands on shard2.
    let app = connect(port, "postgres").await;
    let moved = (10_000_000i64..)
        .find(|k| owner(&new_ring, *k) == 2)
        .expect("a key of shard2");
    app.execute(
        "INSERT INTO users (id, name) VALUES ($1, 'after')",
        &[&moved],
    )
    .await
    .expect("insert after cutover");
    let on2 = env.client(2).await;
    let n: i64 = on2
        .query_one("SELECT count(*) FROM users WHERE id = $1", &[&moved])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "a write after the cutover reached shard2");
    let status = stdout(&env.cli("status", &[], &[]).await);
    assert!(status.contains("done"), "status after cleanup: {status}");
    drop(proxy);
}
