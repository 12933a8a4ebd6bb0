//! `pgscale reshard` end to end against real servers: 2 shards -> 3 (plan, copy, catch-up, verify,
//! cleanup), an interrupted copy resuming, and inputs that must be refused.

#[path = "common/reshard.rs"]
mod reshard_env;

use pgscale::sharding::reshard::sync::Sources;
use pgscale::sharding::reshard::{Phase, Reshard, ReshardArgs, Run, Shards};
use reshard_env::{ok, owner, rows_where, stderr, stdout, ReshardEnv};

/// Rows of `table` on shard2 equal the sources' rows that the NEW ring gives shard2, exactly.
async fn assert_target_matches(env: &ReshardEnv, table: &str) -> usize {
    let new = env.new_ring();
    let want = rows_where(env, &[0, 1], table, |k| owner(&new, k) == 2).await;
    let got = rows_where(env, &[2], table, |_| true).await;
    assert!(!want.is_empty(), "{table}: nothing moves?");
    assert_eq!(got.len(), want.len(), "{table}: row count on shard2");
    assert!(got == want, "{table}: shard2 differs from the moving rows");
    got.len()
}

/// The countries on `server` as sorted JSON texts.
async fn countries(env: &ReshardEnv, server: usize) -> Vec<String> {
    let client = env.client(server).await;
    let mut rows: Vec<String> = client
        .query("SELECT to_jsonb(c)::text FROM countries c", &[])
        .await
        .expect("countries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

/// The first `n` keys from `from` that move from old shard `source` to shard2.
fn moving_keys(env: &ReshardEnv, source: usize, from: i64, n: usize) -> Vec<i64> {
    let (old, new) = (env.old_ring(), env.new_ring());
    (from..)
        .filter(|&k| owner(&old, k) == source && owner(&new, k) == 2)
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_catch_up_verify_and_cleanup_move_exactly_the_new_shards_rows() {
    let env = ReshardEnv::start("flow").await;
    env.load(20_000).await;
    let new = env.new_ring();
    let moving_users = (1..=20_000).filter(|&k| owner(&new, k) == 2).count();

    let plan = ok("plan", &env.cli("plan", &[], &[]).await);
    let share: f64 = plan
        .split("moving: ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no share in:\n{plan}"));
    assert!(
        (25.0..42.0).contains(&share),
        "moving share {share}%:\n{plan}"
    );
    for line in [
        "move shard0 -> shard2",
        "move shard1 -> shard2",
        "table users on shard0: ~",
        "table pitches on shard1: ~",
        "reference table countries: copied whole from shard0 to shard2",
        "new shard shard2: schema ready",
    ] {
        assert!(plan.contains(line), "`{line}` missing from:\n{plan}");
    }

    // Cleanup before any cutover is refused.
    let early = env.cli("cleanup", &[], &[]).await;
    assert!(!early.status.success(), "{}", stdout(&early));

    let copied = ok("copy", &env.cli("copy", &[], &[]).await);
    assert!(
        copied.contains(&format!("copied users: {moving_users} row(s)")),
        "{copied}"
    );
    assert_eq!(assert_target_matches(&env, "users").await, moving_users);
    assert_target_matches(&env, "pitches").await;
    assert_eq!(countries(&env, 2).await, countries(&env, 0).await);
    assert_eq!(countries(&env, 2).await.len(), 20);
    let verified = ok("verify", &env.cli("verify", &[], &[]).await);
    assert!(!verified.contains("DIFFERENT"), "{verified}");
    assert!(verified.contains("users"), "{verified}");

    // Writes on the sources after the copy reach shard2 through the catch-up: inserts, updates
    // (also of a key's pitches), deletes; a write to a key that stays does not.
    let s0 = env.client(0).await;
    let s1 = env.client(1).await;
    let on0 = moving_keys(&env, 0, 1, 3);
    let on1 = moving_keys(&env, 1, 1, 2);
    let fresh = moving_keys(&env, 0, 1_000_000, 1)[0];
    let staying = (1..)
        .find(|&k| owner(&env.old_ring(), k) == 1 && owner(&new, k) == 1)
        .expect("a staying key");
    s0.batch_execute(&format!(
        "UPDATE users SET name = 'renamed' WHERE id = {a};
         DELETE FROM pitches WHERE user_id = {b}; DELETE FROM users WHERE id = {b};
         UPDATE pitches SET amount = 99.99 WHERE user_id = {c};
         INSERT INTO users (id, name) VALUES ({fresh}, 'fresh');
         INSERT INTO pitches (id, user_id, title) VALUES (1, {fresh}, 'fresh pitch');",
        a = on0[0],
        b = on0[1],
        c = on0[2],
    ))
    .await
    .expect("writes on shard0");
    s1.batch_execute(&format!(
        "BEGIN; UPDATE users SET email = NULL WHERE id = {d}; UPDATE users SET name = 'stays' WHERE id = {staying}; COMMIT;",
        d = on1[0],
    ))
    .await
    .expect("writes on shard1");
    let caught = ok(
        "catchup",
        &env.cli("catchup", &["--until-lag-bytes", "0"], &[]).await,
    );
    assert!(caught.contains("caught up"), "{caught}");
    assert_eq!(assert_target_matches(&env, "users").await, moving_users);
    assert_target_matches(&env, "pitches").await;
    let s2 = env.client(2).await;
    let renamed: i64 = s2
        .query_one(
            "SELECT count(*) FROM users WHERE name IN ('renamed', 'fresh')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(renamed, 2);
    let verified = ok("verify", &env.cli("verify", &[], &[]).await);
    assert!(!verified.contains("DIFFERENT"), "{verified}");

    // A changed row and a missing row on the target: verify names the table and exits 3.
    s2.batch_execute(&format!(
        "UPDATE users SET name = 'tampered' WHERE id = {}; DELETE FROM pitches WHERE user_id = {};",
        on1[1], on0[0]
    ))
    .await
    .expect("tamper");
    let bad = env.cli("verify", &[], &[]).await;
    assert_eq!(bad.status.code(), Some(3), "{}", stdout(&bad));
    let report = stdout(&bad);
    let line_of = |table: &str, from: &str| {
        report
            .lines()
            .find(|l| l.starts_with(table) && l.contains(from) && l.contains("DIFFERENT"))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no DIFFERENT line for {table} {from}:\n{report}"))
    };
    // table from to source target missing extra differing status
    assert_eq!(line_of("users", "shard1")[7], "1", "{report}");
    assert!(line_of("pitches", "shard0")[5] != "0", "{report}");
    // Put them back: the copy is idempotent and fills what is missing.
    s2.batch_execute("DELETE FROM users; DELETE FROM pitches; DELETE FROM countries")
        .await
        .expect("reset target");
    s0.batch_execute(
        "UPDATE pgscale_reshard.copy_progress SET done = false, last_pk = NULL, rows_copied = 0",
    )
    .await
    .expect("reset progress");
    ok("copy again", &env.cli("copy", &[], &[]).await);
    ok("verify again", &env.cli("verify", &[], &[]).await);

    // Cleanup refuses before cutover; after the phase says switched it deletes exactly the moved
    // rows from the sources and drops the slots and publications.
    let refused = env.cli("cleanup", &[], &[]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("cutover"), "{}", stderr(&refused));
    let before: Vec<usize> = {
        let mut counts = Vec::new();
        for i in 0..2 {
            counts.push(
                rows_where(&env, &[i], "users", |k| owner(&new, k) == i)
                    .await
                    .len(),
            );
        }
        counts
    };
    s0.execute("UPDATE pgscale_reshard.runs SET phase = 'switched'", &[])
        .await
        .expect("switch phase");
    let cleaned = ok("cleanup", &env.cli("cleanup", &[], &[]).await);
    assert!(cleaned.contains("deleted users:"), "{cleaned}");
    for (i, client) in [(0, &s0), (1, &s1)] {
        let left = rows_where(&env, &[i], "users", |_| true).await;
        assert_eq!(
            left.len(),
            before[i],
            "shard{i} keeps exactly its own users"
        );
        assert!(rows_where(&env, &[i], "pitches", |k| owner(&new, k) != i)
            .await
            .is_empty());
        let replication: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgscale_reshard%') \
                 + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pgscale_reshard%')",
                &[],
            )
            .await
            .expect("slots")
            .get(0);
        assert_eq!(replication, 0, "shard{i} still has slots or publications");
    }
    assert_eq!(countries(&env, 0).await.len(), 20, "reference rows stay");
    let status = ok("status", &env.cli("status", &[], &[]).await);
    assert!(status.contains("phase done"), "{status}");
    let late = env.cli("verify", &[], &[]).await;
    assert!(!late.status.success());
    assert!(stderr(&late).contains("after cutover"), "{}", stderr(&late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_where_it_stopped_without_duplicates() {
    let env = ReshardEnv::start("resume").await;
    env.load(6_000).await;
    let new = env.new_ring();
    let moving_users = (1..=6_000).filter(|&k| owner(&new, k) == 2).count();
    let knobs = [
        ("PGSCALE_RESHARD_BATCH_ROWS", "500"),
        ("PGSCALE_RESHARD_STOP_AFTER_BATCHES", "4"),
    ];
    let stopped = env.cli("copy", &[], &knobs).await;
    assert!(!stopped.status.success());
    assert!(
        stderr(&stopped).contains("stopped after 4 batch(es)"),
        "{}",
        stderr(&stopped)
    );
    let status = ok("status", &env.cli("status", &[], &[]).await);
    assert!(
        status.contains("phase copying") && status.contains("in progress"),
        "{status}"
    );
    let partial = rows_where(&env, &[2], "users", |_| true).await.len();
    assert!(
        partial > 0 && partial < moving_users,
        "{partial} of {moving_users}"
    );

    // A write between the runs to a row the first run already copied: the slot made before the
    // first read keeps it, and the resumed copy's catch-up brings it over.
    let first = moving_keys(&env, 0, 1, 1)[0];
    env.client(0)
        .await
        .execute(
            "UPDATE users SET name = 'changed between runs' WHERE id = $1",
            &[&first],
        )
        .await
        .expect("update");

    let resumed = ok(
        "resumed copy",
        &env.cli("copy", &[], &[("PGSCALE_RESHARD_BATCH_ROWS", "500")])
            .await,
    );
    assert!(
        resumed.contains(&format!("copied users: {moving_users} row(s)")),
        "{resumed}"
    );
    assert_eq!(assert_target_matches(&env, "users").await, moving_users);
    assert_target_matches(&env, "pitches").await;
    let name: String = env
        .client(2)
        .await
        .query_one("SELECT name FROM users WHERE id = $1", &[&first])
        .await
        .expect("moved row")
        .get(0);
    assert_eq!(name, "changed between runs");
    ok("verify", &env.cli("verify", &[], &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_nonzero_exit() {
    let env = ReshardEnv::start("bad").await;
    let write = |name: &str, text: &str| {
        let path = env.dir.join(name);
        std::fs::write(&path, text).expect("write config");
        path
    };
    let run_with = |old: std::path::PathBuf, new: std::path::PathBuf, sub: &'static str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgscale"));
        command
            .args(["reshard", sub, "--config"])
            .arg(old)
            .arg("--to")
            .arg(new);
        reshard_env::run(command)
    };
    let expect_error = |out: &std::process::Output, needle: &str| {
        assert!(!out.status.success(), "{}", stdout(out));
        assert!(
            stderr(out).contains(needle),
            "`{needle}` not in:\n{}",
            stderr(out)
        );
    };

    // Rules that differ.
    let other_rules =
        reshard_env::sharding_toml("").replace("vnodes_per_shard = 256", "vnodes_per_shard = 128");
    let differ = write(
        "rules.toml",
        &reshard_env::config_text(&env.servers, 3, &other_rules),
    );
    let out = run_with(env.old_path.clone(), differ, "plan").await;
    expect_error(&out, "differ in more than [[shards]]");
    assert!(stderr(&out).contains("sharding"), "{}", stderr(&out));
    // A shard dropped from NEW.
    let sharding = reshard_env::sharding_toml("");
    let fewer = write(
        "fewer.toml",
        &reshard_env::config_text(&env.servers, 1, &sharding),
    );
    expect_error(
        &run_with(env.old_path.clone(), fewer, "plan").await,
        "`shard1`",
    );
    // Verify before any copy.
    expect_error(&env.cli("verify", &[], &[]).await, "reshard copy");

    // A table missing on the new shard.
    env.client(2)
        .await
        .batch_execute("DROP TABLE pitches")
        .await
        .expect("drop");
    let out = env.cli("copy", &[], &[]).await;
    expect_error(&out, "table `pitches` does not exist on shard `shard2`");
    let plan = ok("plan", &env.cli("plan", &[], &[]).await);
    assert!(plan.contains("missing table(s) pitches"), "{plan}");

    // Tables without a primary key, or whose key lacks the shard key column.
    for i in 0..3 {
        env.client(i)
            .await
            .batch_execute(
                "CREATE TABLE events (user_id bigint, note text); \
                 CREATE TABLE likes (id bigint PRIMARY KEY, user_id bigint NOT NULL);",
            )
            .await
            .expect("create");
    }
    for (table, column, needle) in [
        (
            "events",
            "user_id",
            "`events` on shard `shard0` has no primary key",
        ),
        (
            "likes",
            "user_id",
            "does not contain its shard key column `user_id`",
        ),
    ] {
        let extra = format!("[[sharding.tables]]\nname = \"{table}\"\ncolumn = \"{column}\"\n");
        let sharding = reshard_env::sharding_toml(&extra);
        let old = write(
            &format!("{table}-old.toml"),
            &reshard_env::config_text(&env.servers, 2, &sharding),
        );
        let new = write(
            &format!("{table}-new.toml"),
            &reshard_env::config_text(&env.servers, 3, &sharding),
        );
        expect_error(&run_with(old, new, "plan").await, needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_the_copy_reach_the_new_shard() {
    let env = std::sync::Arc::new(ReshardEnv::start("concurrent").await);
    env.load(6_000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A writer on both sources (each key on the shard the OLD ring gives): updates, inserts and
    // deletes, many of them to moving keys, until the copy has finished.
    let writer = {
        let (env, stop) = (env.clone(), stop.clone());
        tokio::spawn(async move {
            let old = env.old_ring();
            let clients = [env.client(0).await, env.client(1).await];
            let mut writes = 0u64;
            let mut next_id = 500_000i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || writes < 300 {
                let id = 1 + (writes as i64 * 7919) % 6_000;
                let client = &clients[owner(&old, id)];
                let sql = match writes % 4 {
                    0 => format!("UPDATE users SET name = 'w{writes}' WHERE id = {id}"),
                    1 => format!("UPDATE pitches SET amount = {writes} WHERE user_id = {id}"),
                    2 => format!(
                        "BEGIN; DELETE FROM pitches WHERE user_id = {id}; DELETE FROM users WHERE id = {id}; COMMIT"
                    ),
                    _ => {
                        next_id += 1;
                        let client = &clients[owner(&old, next_id)];
                        client
                            .batch_execute(&format!(
                                "INSERT INTO users (id, name) VALUES ({next_id}, 'new'); \
                                 INSERT INTO pitches (id, user_id, title) VALUES (1, {next_id}, 'p')"
                            ))
                            .await
                            .expect("insert");
                        writes += 1;
                        continue;
                    }
                };
                client.batch_execute(&sql).await.expect("write");
                writes += 1;
            }
            writes
        })
    };
    ok(
        "copy",
        &env.cli("copy", &[], &[("PGSCALE_RESHARD_BATCH_ROWS", "100")])
            .await,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = tokio::time::timeout(std::time::Duration::from_secs(120), writer)
        .await
        .expect("writer finishes")
        .expect("writer");
    assert!(writes >= 300, "{writes}");
    // The library API cutover builds on: the run, the shards, and a drain of every change
    // written before it (the writer has stopped and each of its writes was acknowledged).
    let args = ReshardArgs {
        config: env.old_path.clone(),
        to: env.new_path.clone(),
        database: "postgres".into(),
        user: None,
        password: None,
    };
    let reshard = Reshard::load(&args).expect("load configs");
    let shards = Shards::connect(&reshard).await.expect("connect shards");
    let state = reshard.connect_state().await.expect("state");
    let run = Run::require(&reshard, &state).await.expect("run");
    assert_eq!(run.phase, Phase::Copied);
    let sources = Sources::load(&reshard, &shards).await.expect("sources");
    sources
        .drain(&reshard, &shards, std::time::Duration::from_secs(60))
        .await
        .expect("drain");
    assert_target_matches(&env, "users").await;
    assert_target_matches(&env, "pitches").await;
    let verified = ok("verify", &env.cli("verify", &[], &[]).await);
    assert!(!verified.contains("DIFFERENT"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_copy_resumes_and_copies_every_row_once() {
    let env = ReshardEnv::start("killed").await;
    env.load(6_000).await;
    let new = env.new_ring();
    let moving_users = (1..=6_000).filter(|&k| owner(&new, k) == 2).count();
    // Small batches make the copy long enough to be killed in the middle.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgscale"))
        .args(["reshard", "copy", "--config"])
        .arg(&env.old_path)
        .arg("--to")
        .arg(&env.new_path)
        .env("PGSCALE_RESHARD_BATCH_ROWS", "10")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start copy");
    let state = env.client(0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let exists: bool = state
            .query_one(
                "SELECT to_regclass('pgscale_reshard.copy_progress') IS NOT NULL",
                &[],
            )
            .await
            .expect("state table")
            .get(0);
        let copied: i64 = if exists {
            state
                .query_one(
                    "SELECT coalesce(sum(rows_copied), 0)::bigint FROM pgscale_reshard.copy_progress",
                    &[],
                )
                .await
                .expect("progress")
                .get(0)
        } else {
            0
        };
        if copied > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().expect("kill the copy");
    let _ = child.wait();
    let status = ok("status", &env.cli("status", &[], &[]).await);
    assert!(status.contains("in progress"), "killed too late?\n{status}");

    let resumed = ok("resumed copy", &env.cli("copy", &[], &[]).await);
    assert!(
        resumed.contains(&format!("copied users: {moving_users} row(s)")),
        "{resumed}"
    );
    assert_eq!(assert_target_matches(&env, "users").await, moving_users);
    assert_target_matches(&env, "pitches").await;
    ok("verify", &env.cli("verify", &[], &[]).await);
}
