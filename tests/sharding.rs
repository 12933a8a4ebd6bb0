//! Sharded routing against three real shard primaries: rows land on the shard `pgscale shard-of`
//! names, keyed statements reach their shard in both protocols, a transaction stays on one shard,
//! DDL reaches every shard, and multi-shard statements are run or refused with a reason.

mod common;

use common::{simple_rows, sqlstate, Env};
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};

async fn start() -> Env {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_land_on_the_shard_shard_of_names() {
    let env = start().await;
    let app = env.app().await;
    // Multi-row inserts (split per shard, two-phase commit) for users, and one prepared,
    // binary-parameter insert per pitch.
    for chunk in (1..=10_000i64).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("({id}, 'user {id}', 'u{id}@example.com')"))
            .collect();
        let sql = format!(
            "INSERT INTO users (id, name, email) VALUES {}",
            values.join(", ")
        );
        app.batch_execute(&sql).await.expect("split insert");
    }
    let insert = app
        .prepare("INSERT INTO pitches (id, user_id, title, amount) VALUES ($1, $2, $3, 1.50)")
        .await
        .expect("prepare");
    for user in (1..=10_000i64).step_by(7) {
        app.execute(&insert, &[&(user * 10), &user, &format!("pitch of {user}")])
            .await
            .expect("insert pitch");
    }

    let mut total_users = 0;
    let mut total_pitches = 0;
    for shard in 0..3 {
        let direct = env.direct_to_shard(shard).await;
        let ids: Vec<i64> = direct
            .query("select id from users", &[])
            .await
            .expect("users")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(ids.len() > 2_500, "shard {shard} has {} users", ids.len());
        for id in &ids {
            assert_eq!(env.user_shard(*id), shard, "user {id} is on shard {shard}");
        }
        let users_of_pitches: Vec<i64> = direct
            .query("select user_id from pitches", &[])
            .await
            .expect("pitches")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for user in &users_of_pitches {
            assert_eq!(
                env.user_shard(*user),
                shard,
                "pitch of user {user} is on shard {shard}"
            );
        }
        total_users += ids.len();
        total_pitches += users_of_pitches.len();
    }
    assert_eq!(total_users, 10_000, "every user exactly once");
    assert_eq!(total_pitches, (1..=10_000).step_by(7).count());

    // The command-line tool names the same shards.
    let config_path = std::env::temp_dir().join(format!("pgscale-sharding-{}.toml", env.port));
    let mut toml = String::from("[[users]]\nname = \"app\"\npassword = \"app\"\n");
    for shard in 0..3 {
        toml.push_str(&format!(
            "[[shards]]\nname = \"shard{shard}\"\nprimary = \"postgres://127.0.0.1:{}\"\n",
            env.shard_primary(shard).port()
        ));
    }
    toml.push_str(SAMPLE_SHARDING);
    std::fs::write(&config_path, toml).expect("write config");
    for key in [1i64, 2, 3, 42, 777, 9_999, 10_000] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgscale"))
            .args(["shard-of", "--config"])
            .arg(&config_path)
            .arg(key.to_string())
            .output()
            .expect("run shard-of");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let name = stdout.split_whitespace().next().unwrap_or_default();
        assert_eq!(name, format!("shard{}", env.user_shard(key)), "key {key}");
        let direct = env.direct_to_shard(env.user_shard(key)).await;
        let found: i64 = direct
            .query_one("select count(*) from users where id = $1", &[&key])
            .await
            .expect("count")
            .get(0);
        assert_eq!(found, 1, "user {key} is where shard-of says");
    }
    let _ = std::fs::remove_file(&config_path);
    env.stop().await;
}

/// Two user keys on different shards.
fn keys_on_two_shards(env: &Env) -> (i64, i64) {
    let a = 1i64;
    let b = (2..1000)
        .find(|k| env.user_shard(*k) != env.user_shard(a))
        .expect("another shard");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_statements_reach_their_shard_and_transactions_stay_on_one() {
    let env = start().await;
    let mut app = env.app().await;
    let (a, b) = keys_on_two_shards(&env);
    let port_of = |k: i64| i32::from(env.shard_primary(env.user_shard(k)).port());

    // Simple protocol, literal key; extended protocol, binary parameter; prepared once, run on
    // several shards.
    app.batch_execute(&format!(
        "INSERT INTO users (id, name) VALUES ({a}, 'a'); INSERT INTO users (id, name) VALUES ({b}, 'b')"
    ))
    .await
    .expect_err("two shards in one query string are refused");
    app.batch_execute(&format!("INSERT INTO users (id, name) VALUES ({a}, 'a')"))
        .await
        .expect("insert a");
    app.execute("INSERT INTO users (id, name) VALUES ($1, $2)", &[&b, &"b"])
        .await
        .expect("insert b");
    let where_is = app
        .prepare("select inet_server_port(), name from users where id = $1")
        .await
        .expect("prepare");
    for key in [a, b, a, b] {
        let row = app.query_one(&where_is, &[&key]).await.expect("keyed read");
        let (port, name): (i32, String) = (row.get(0), row.get(1));
        assert_eq!(port, port_of(key), "key {key}");
        assert_eq!(name, if key == a { "a" } else { "b" });
    }
    let text = simple_rows(
        &app,
        &format!("select inet_server_port() from users where id = {b}"),
    )
    .await
    .expect("simple keyed read");
    assert_eq!(text, vec![vec![Some(port_of(b).to_string())]]);
    // A join of co-located tables on the key.
    app.execute(
        "INSERT INTO pitches (id, user_id, title) VALUES (1, $1, 'p')",
        &[&b],
    )
    .await
    .expect("pitch");
    let joined = simple_rows(
        &app,
        &format!("select u.name, p.title from users u join pitches p on p.user_id = u.id where u.id = {b}"),
    )
    .await
    .expect("join");
    assert_eq!(joined, vec![vec![Some("b".into()), Some("p".into())]]);

    // A transaction binds to its first keyed statement's shard; another shard is refused, the
    // transaction is aborted like any failed one, and ROLLBACK leaves the client usable.
    app.batch_execute("BEGIN").await.expect("begin");
    app.execute("UPDATE users SET name = 'a2' WHERE id = $1", &[&a])
        .await
        .expect("update a");
    let refused = app
        .execute("UPDATE users SET name = 'b2' WHERE id = $1", &[&b])
        .await
        .expect_err("another shard inside the transaction");
    assert_eq!(sqlstate(&refused).as_deref(), Some("0A000"), "{refused}");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("cannot make one transaction span shards"),
        "{message}"
    );
    let after = app
        .execute("select 1", &[])
        .await
        .expect_err("aborted transaction");
    assert_eq!(sqlstate(&after).as_deref(), Some("25P02"), "{after}");
    app.batch_execute("ROLLBACK").await.expect("rollback");
    let names = simple_rows(
        &app,
        &format!("select name from users where id in ({a}, {b}) order by name"),
    )
    .await
    .expect("names");
    assert_eq!(
        names,
        vec![vec![Some("a".into())], vec![Some("b".into())]],
        "nothing changed"
    );

    // A committed transaction on one shard.
    let tx = app.transaction().await.expect("begin");
    tx.execute("UPDATE users SET name = 'b3' WHERE id = $1", &[&b])
        .await
        .expect("update");
    tx.execute(
        "INSERT INTO pitches (id, user_id, title) VALUES (2, $1, 'q')",
        &[&b],
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
    let direct = env.direct_to_shard(env.user_shard(b)).await;
    let name: String = direct
        .query_one("select name from users where id = $1", &[&b])
        .await
        .expect("direct")
        .get(0);
    assert_eq!(name, "b3");

    // Key-less writes and cross-shard writes are refused with a reason.
    for sql in [
        "UPDATE users SET name = 'x'".to_string(),
        format!("DELETE FROM users WHERE id IN ({a}, {b})"),
        "INSERT INTO users (id, name) SELECT 5, 'x'".to_string(),
    ] {
        let e = app.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e}");
    }
    // A client that got refusals is still usable.
    let one = simple_rows(&app, "select 1").await.expect("select 1");
    assert_eq!(one, vec![vec![Some("1".into())]]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_reaches_every_shard_and_partial_failures_say_where() {
    // DDL reaches every shard, for unlisted (unsharded) tables too: the schema stays the same
    // everywhere, while an unsharded table's rows live on the default shard only.
    let sharding = format!(
        "{SAMPLE_SHARDING}\n[[sharding.tables]]\nname = \"notes\"\ncolumn = \"user_id\"\n\
         [[sharding.tables]]\nname = \"clash\"\ncolumn = \"x\"\n"
    );
    let env = Env::start_with_shards(3, 0, &sharding, |_| {}).await;
    let app = env.app().await;
    app.batch_execute("CREATE TABLE notes (user_id bigint, body text)")
        .await
        .expect("create through the proxy");
    app.batch_execute("CREATE TABLE local_only (x int); INSERT INTO local_only VALUES (1), (2)")
        .await
        .expect_err("DDL over several shards must be sent on its own");
    app.batch_execute("CREATE TABLE local_only (x int)")
        .await
        .expect("create an unlisted table");
    assert_eq!(env.shards_with_table("local_only").await, vec![0, 1, 2]);
    app.batch_execute("INSERT INTO local_only VALUES (1), (2)")
        .await
        .expect("insert into the unlisted table");
    for shard in 0..3 {
        let rows: i64 = env
            .direct_to_shard(shard)
            .await
            .query_one("select count(*) from local_only", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(
            rows,
            if shard == 0 { 2 } else { 0 },
            "rows on the default shard only"
        );
    }
    assert_eq!(
        env.shards_with_table("notes").await,
        vec![0, 1, 2],
        "every shard has the sharded table"
    );
    // One shard already has the next table: the client is told which shards have it.
    env.direct_to_shard(1)
        .await
        .batch_execute("CREATE TABLE clash (x int); ALTER TABLE clash OWNER TO app")
        .await
        .expect("create on shard 1");
    let e = app
        .batch_execute("CREATE TABLE clash (x int)")
        .await
        .expect_err("shard 1 refuses");
    assert_eq!(sqlstate(&e).as_deref(), Some("42P07"), "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("failed on shard(s) 1") && message.contains("applied on shard(s) 0, 2"),
        "{message}"
    );
    env.stop().await;
}

/// Shard `i`'s replicas.
fn shard_replicas(env: &Env, i: usize) -> &[pgscale::local_cluster::LocalPostgres] {
    match i {
        0 => &env.replicas,
        _ => &env.other_shards[i - 1].replicas,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_keeps_its_replicas_and_read_write_split() {
    let env = Env::start_with_shards(2, 1, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    let app = env.app().await;
    let (a, b) = keys_on_two_shards(&env);
    for key in [a, b] {
        app.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&key])
            .await
            .expect("keyed insert");
    }
    let where_is = app
        .prepare("select inet_server_port(), pg_is_in_recovery() from users where id = $1")
        .await
        .expect("prepare");
    for key in [a, b] {
        let shard = env.user_shard(key);
        let replica_port = i32::from(shard_replicas(&env, shard)[0].port());
        // Right after the write, read-your-writes keeps this client on the primary until the
        // replica has replayed it; then its reads go to the shard's own replica.
        let mut on_replica = false;
        for _ in 0..100 {
            let rows = app.query(&where_is, &[&key]).await.expect("keyed read");
            if let Some(row) = rows.first() {
                let (port, standby): (i32, bool) = (row.get(0), row.get(1));
                if standby {
                    assert_eq!(port, replica_port, "key {key}: its own shard's replica");
                    on_replica = true;
                    break;
                }
                assert_eq!(
                    port,
                    i32::from(env.shard_primary(shard).port()),
                    "key {key}: else its own shard's primary"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(on_replica, "key {key}: reads reach shard {shard}'s replica");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_writes_run_on_every_shard_when_allowed() {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |config| {
        config.sharding.allow_broadcast_writes = true;
    })
    .await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    let app = env.app().await;
    let values: Vec<String> = (1..=30).map(|id| format!("({id}, 'old')")).collect();
    app.batch_execute(&format!(
        "INSERT INTO users (id, name) VALUES {}",
        values.join(", ")
    ))
    .await
    .expect("split insert");
    let updated = app
        .execute("UPDATE users SET name = 'new' WHERE name = 'old'", &[])
        .await
        .expect("broadcast update");
    assert_eq!(updated, 30, "the counts of every shard, summed");
    for shard in 0..3 {
        let direct = env.direct_to_shard(shard).await;
        let old: i64 = direct
            .query_one("select count(*) from users where name <> 'new'", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(old, 0, "shard {shard}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_table_writes_reach_every_copy_or_none() {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |config| {
        config.sharding.reference_tables = vec!["countries".to_string()];
    })
    .await;
    let app = env.app().await;
    app.batch_execute("CREATE TABLE countries (id int PRIMARY KEY, name text)")
        .await
        .expect("create on every shard");
    app.batch_execute("INSERT INTO countries VALUES (1, 'France'), (2, 'Germany')")
        .await
        .expect("simple-protocol insert");
    let updated = app
        .execute(
            "UPDATE countries SET name = $1 WHERE id = $2",
            &[&"Deutschland", &2i32],
        )
        .await
        .expect("extended-protocol update");
    assert_eq!(updated, 1, "one row, as on one database");
    let expected = vec![(1, "France".to_string()), (2, "Deutschland".to_string())];
    assert_eq!(
        countries_on_each_shard(&env).await,
        vec![expected.clone(); 3],
        "every copy alike"
    );

    // One copy refuses the next row (it already has id 3): no copy keeps it, nothing stays prepared.
    env.direct_to_shard(2)
        .await
        .batch_execute("INSERT INTO countries VALUES (3, 'only here')")
        .await
        .expect("direct insert on shard 2");
    let e = app
        .batch_execute("INSERT INTO countries VALUES (3, 'Italy')")
        .await
        .expect_err("shard 2 refuses");
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    let all = countries_on_each_shard(&env).await;
    assert_eq!(all[0], expected, "shard 0 rolled back");
    assert_eq!(all[1], expected, "shard 1 rolled back");
    for shard in 0..3 {
        let prepared: i64 = env
            .direct_to_shard(shard)
            .await
            .query_one("select count(*) from pg_prepared_xacts", &[])
            .await
            .expect("prepared")
            .get(0);
        assert_eq!(prepared, 0, "shard {shard}");
    }
    // Reads come from any one copy; a write mixing in a sharded table is refused.
    let name = simple_rows(&app, "select name from countries where id = 1")
        .await
        .expect("read");
    assert_eq!(name, vec![vec![Some("France".to_string())]]);
    let e = app
        .batch_execute("INSERT INTO countries SELECT id::int, name FROM users")
        .await
        .expect_err("reads a sharded table");
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    env.stop().await;
}

/// Each shard's copy of `countries`, straight from the shards.
async fn countries_on_each_shard(env: &Env) -> Vec<Vec<(i32, String)>> {
    let mut all = Vec::new();
    for shard in 0..env.shard_count() {
        let rows = env
            .direct_to_shard(shard)
            .await
            .query("select id, name from countries order by id", &[])
            .await
            .expect("read copy");
        all.push(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    }
    all
}

/// Issue 11: what clients read in refusals. The key-less write hint names the written table's own
/// shard-key column (it said `user_id` for every table), and a refusal inside a transaction, which
/// the server raises for the proxy, carries no `CONTEXT: PL/pgSQL function …` from that mechanism.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_tables_key_and_carry_no_plpgsql_context() {
    let env = start().await;
    let app = env.app().await;
    let e = app
        .batch_execute("UPDATE users SET name = 'x'")
        .await
        .expect_err("a key-less write");
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "0A000", "{e}");
    assert!(db.message().contains("WHERE id = …"), "{}", db.message());
    assert!(!db.message().contains("user_id"), "{}", db.message());

    let (a, b) = (env.user_key_on(0, 1), env.user_key_on(1, 1));
    for (protocol, statement) in [
        (
            "simple",
            format!("UPDATE users SET name = 'b' WHERE id = {b}"),
        ),
        (
            "extended",
            "UPDATE users SET name = 'b' WHERE id = $1".into(),
        ),
        ("simple", "UPDATE users SET name = 'x'".into()),
    ] {
        app.batch_execute("BEGIN").await.expect("begin");
        app.execute("UPDATE users SET name = 'a' WHERE id = $1", &[&a])
            .await
            .expect("first shard");
        let refused = match protocol {
            "simple" => app.batch_execute(&statement).await.err(),
            _ => app.execute(&statement, &[&b]).await.err(),
        }
        .unwrap_or_else(|| panic!("{statement}: refused inside the transaction"));
        let db = refused.as_db_error().expect("an ErrorResponse");
        assert_eq!(db.code().code(), "0A000", "{refused}");
        assert_eq!(
            db.where_(),
            None,
            "{protocol} {statement}: no CONTEXT field"
        );
        assert!(!db.message().contains("PL/pgSQL"), "{}", db.message());
        let aborted = app
            .batch_execute("SELECT 1")
            .await
            .expect_err("the transaction is aborted");
        assert_eq!(sqlstate(&aborted).as_deref(), Some("25P02"), "{aborted}");
        app.batch_execute("ROLLBACK").await.expect("rollback");
    }
    env.stop().await;
}
