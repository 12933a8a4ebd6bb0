//! The resharding catch-up (`pgscale::sharding::catchup`) against real servers: a source with
//! `wal_level = logical` and a plain target. Changes made directly on the source are replayed on
//! the target for the keys the route selects (hash even), with the source's exact values.

mod common;

use common::{connect, within};
use pgscale::local_cluster::{ClusterOptions, LocalPostgres};
use pgscale::sharding::catchup::{self, CatchupError, CatchupTable, KeyType};
use pgscale::sharding::{hash_key, ShardKey};
use tokio_postgres::Client;

const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text, bio text);\
    ALTER TABLE users ALTER COLUMN bio SET STORAGE EXTERNAL;\
    CREATE TABLE pitches (user_id bigint, id bigint, title text, amount numeric,\
        PRIMARY KEY (user_id, id));";

fn tables() -> Vec<CatchupTable> {
    vec![
        CatchupTable {
            schema: "public".into(),
            name: "users".into(),
            key_column: "id".into(),
            key_type: KeyType::BigInt,
        },
        CatchupTable {
            schema: "public".into(),
            name: "pitches".into(),
            key_column: "user_id".into(),
            key_type: KeyType::BigInt,
        },
    ]
}

fn routed(key: i64) -> bool {
    let key = ShardKey::from_text(KeyType::BigInt, key.to_string().as_bytes()).expect("key");
    hash_key(&key).is_multiple_of(2)
}

fn route(_table: &str, hash: u64) -> Option<usize> {
    hash.is_multiple_of(2).then_some(0)
}

/// Starts a server (blocking work off the runtime) and connects as the superuser.
async fn server(logical: bool) -> (LocalPostgres, Client) {
    let mut opts = ClusterOptions::default();
    if logical {
        opts.extra_conf = vec![
            ("wal_level".into(), "logical".into()),
            ("max_replication_slots".into(), "10".into()),
            ("max_wal_senders".into(), "10".into()),
        ];
    }
    let pg = tokio::task::spawn_blocking(move || LocalPostgres::start(&opts).expect("start"))
        .await
        .expect("join");
    let client = within("connect", connect(&pg.superuser_url("postgres"))).await;
    (pg, client)
}

/// `(key, row text)` of every row, ordered by primary key.
async fn rows(client: &Client, table: &str) -> Vec<(i64, String)> {
    let sql = match table {
        "users" => "SELECT id, u::text FROM users u ORDER BY id",
        _ => "SELECT user_id, p::text FROM pitches p ORDER BY user_id, id",
    };
    within("read rows", client.query(sql, &[]))
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The target holds exactly the source's routed rows, value for value.
async fn assert_target_matches(source: &Client, target: &Client) {
    for table in ["users", "pitches"] {
        let expected: Vec<_> = rows(source, table)
            .await
            .into_iter()
            .filter(|(key, _)| routed(*key))
            .collect();
        let actual = rows(target, table).await;
        assert!(!expected.is_empty(), "{table}: the test routes some rows");
        assert_eq!(actual, expected, "{table} on the target");
    }
}

async fn round(source: &Client, target: &Client, upto: Option<&str>) -> catchup::Round {
    within(
        "apply_round",
        catchup::apply_round(source, &[target], "t1", 0, &tables(), &route, upto),
    )
    .await
    .expect("apply_round")
}

/// Rounds until the lag is 0 (the server writes some WAL of its own now and then).
async fn catch_up(source: &Client, target: &Client) -> catchup::Round {
    let mut total = catchup::Round::default();
    for _ in 0..20 {
        let r = round(source, target, None).await;
        total.changes_applied += r.changes_applied;
        total.changes_skipped += r.changes_skipped;
        total.lag_bytes = r.lag_bytes;
        if r.lag_bytes == 0 {
            return total;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!("lag never reached 0: {total:?}");
}

async fn exec(client: &Client, sql: &str) {
    within(sql, client.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_replays_routed_changes_idempotently() {
    let ((src_pg, source), (_dst_pg, target)) = tokio::join!(server(true), server(false));
    exec(&source, SCHEMA).await;
    exec(&target, SCHEMA).await;
    // Rows from before the slot: the copy's business, emulated below.
    exec(
        &source,
        "INSERT INTO users SELECT i, 'old' || i, (SELECT string_agg(md5(j::text || i), '') \
         FROM generate_series(1, 200) j) FROM generate_series(1, 20) i",
    )
    .await;
    let t = tables();
    within("prepare", catchup::prepare(&source, "t1", 0, &t))
        .await
        .expect("prepare");
    // Idempotent.
    within("prepare again", catchup::prepare(&source, "t1", 0, &t))
        .await
        .expect("prepare again");

    // The copy (emulated): every routed old row but two, `lost` and `gone`, which the target
    // lacks when their updates (with the TOASTed bio unchanged) are replayed.
    let old: Vec<i64> = (1..=20).filter(|&i| routed(i)).collect();
    assert!(old.len() >= 4, "enough routed keys among 1..=20");
    let (lost, gone) = (old[0], old[1]);
    for &id in &old[2..] {
        let row = source
            .query_one("SELECT name, bio FROM users WHERE id = $1", &[&id])
            .await
            .expect("read");
        let (name, bio): (String, String) = (row.get(0), row.get(1));
        target
            .execute("INSERT INTO users VALUES ($1, $2, $3)", &[&id, &name, &bio])
            .await
            .expect("copy");
    }

    // Changes after the slot.
    exec(
        &source,
        "BEGIN;\
         INSERT INTO users SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' || i END, 'short'\
             FROM generate_series(21, 60) i;\
         INSERT INTO pitches SELECT u, p, CASE WHEN p = 2 THEN NULL ELSE 't' || p END,\
             (u * 10 + p) / 3.0 FROM generate_series(21, 40) u, generate_series(1, 3) p;\
         COMMIT",
    )
    .await;
    exec(
        &source,
        "UPDATE users SET name = 'renamed' || id WHERE id <= 20",
    )
    .await; // bio 'u'
    exec(&source, &format!("DELETE FROM users WHERE id = {gone}")).await;
    exec(
        &source,
        "UPDATE users SET name = NULL, bio = NULL WHERE id = 22",
    )
    .await;
    // Quotes, backslashes, non-ASCII and a `$1` survive the trip.
    assert!([21, 36, 37, 38].into_iter().any(routed));
    exec(
        &source,
        r"UPDATE users SET name = E'o''brien \\ back\\slash \n ünï 🦀', bio = '$1 ''x'''
            WHERE id IN (21, 36, 37, 38)",
    )
    .await;
    exec(&source, "DELETE FROM users WHERE id IN (23, 24, 25)").await;
    exec(
        &source,
        "UPDATE users SET id = id + 1000 WHERE id BETWEEN 26 AND 35",
    )
    .await; // pk change
    exec(
        &source,
        "UPDATE pitches SET amount = NULL, title = 'x' WHERE id = 1",
    )
    .await;
    exec(
        &source,
        "UPDATE pitches SET user_id = user_id + 100 WHERE user_id BETWEEN 21 AND 26",
    )
    .await;
    exec(
        &source,
        "UPDATE pitches SET id = id + 10 WHERE user_id BETWEEN 27 AND 30",
    )
    .await;
    exec(&source, "DELETE FROM pitches WHERE id = 3").await;
    let rolled_back = (500..).find(|&i| routed(i)).expect("a routed key");
    exec(
        &source,
        &format!(
            "BEGIN; INSERT INTO users VALUES ({rolled_back}, 'rb', 'rb');\
             UPDATE users SET name = 'rb' WHERE id = 40; ROLLBACK"
        ),
    )
    .await;

    let first = catch_up(&source, &target).await;
    assert!(
        first.changes_applied > 0 && first.changes_skipped > 0,
        "{first:?}"
    );
    assert_target_matches(&source, &target).await;
    let lost_bio: Option<String> = target
        .query_one("SELECT bio FROM users WHERE id = $1", &[&lost])
        .await
        .expect("lost row")
        .get(0);
    assert!(
        lost_bio.is_some_and(|b| b.len() > 6000),
        "TOASTed bio filled from the source"
    );
    assert_eq!(catchup::lag_bytes(&source, "t1", 0).await.expect("lag"), 0);

    // A second round finds nothing to do.
    let again = catch_up(&source, &target).await;
    assert_eq!(
        (again.changes_applied, again.changes_skipped),
        (0, 0),
        "{again:?}"
    );
    assert_target_matches(&source, &target).await;

    // A crash after the targets committed but before the slot advanced replays the batch.
    exec(
        &source,
        "INSERT INTO users SELECT i, 'c' || i, NULL FROM generate_series(61, 80) i",
    )
    .await;
    exec(
        &source,
        "UPDATE users SET name = 'c2' WHERE id BETWEEN 61 AND 70; DELETE FROM users WHERE id > 75",
    )
    .await;
    let crashed = within(
        "crash",
        catchup::apply_batch_then_crash(&source, &[&target], "t1", 0, &tables(), &route),
    )
    .await
    .expect("crashed round");
    assert!(crashed.changes_applied > 0, "{crashed:?}");
    assert_target_matches(&source, &target).await;
    assert!(catchup::lag_bytes(&source, "t1", 0).await.expect("lag") > 0);
    let replayed = catch_up(&source, &target).await;
    assert_eq!(
        replayed.changes_applied, crashed.changes_applied,
        "the batch is replayed"
    );
    assert_target_matches(&source, &target).await;

    // `upto_lsn` stops there (current_lsn: the insert position, which unlike pg_current_wal_lsn()
    // covers the last commit under the harness' asynchronous commit).
    let mut next = (1000..).filter(|&i| routed(i) && !(1026..=1035).contains(&i));
    let (before, after) = (next.next().expect("key"), next.next().expect("key"));
    exec(
        &source,
        &format!("INSERT INTO users VALUES ({before}, 'before', NULL)"),
    )
    .await;
    let lsn = catchup::current_lsn(&source).await.expect("lsn");
    exec(
        &source,
        &format!("INSERT INTO users VALUES ({after}, 'after', NULL)"),
    )
    .await;
    let partial = round(&source, &target, Some(&lsn)).await;
    assert_eq!(partial.changes_applied, 1, "{partial:?}");
    assert!(partial.lag_bytes > 0);
    let has = |id: i64| {
        let target = &target;
        async move {
            target
                .query_opt("SELECT 1 FROM users WHERE id = $1", &[&id])
                .await
                .expect("query")
                .is_some()
        }
    };
    assert!(has(before).await && !has(after).await);
    catch_up(&source, &target).await;
    assert!(has(after).await);
    assert_target_matches(&source, &target).await;

    // A transaction open across a round (which moves the slot past its first change) is
    // replayed once it commits.
    let open_id = (3000..).find(|&i| routed(i)).expect("a routed key");
    let other = within("connect", connect(&src_pg.superuser_url("postgres"))).await;
    exec(
        &other,
        &format!("BEGIN; INSERT INTO users VALUES ({open_id}, 'open', 'x')"),
    )
    .await;
    catch_up(&source, &target).await;
    assert!(!has(open_id).await);
    exec(&other, "COMMIT").await;
    catch_up(&source, &target).await;
    assert!(has(open_id).await);

    // Many transactions: one round takes several bounded batches.
    exec(
        &source,
        "DO $$ BEGIN FOR i IN 1..40 LOOP \
         INSERT INTO pitches SELECT 2000 + i, p, 'bulk', p FROM generate_series(1, 100) p; \
         COMMIT; END LOOP; END $$",
    )
    .await;
    let bulk = catch_up(&source, &target).await;
    assert_eq!(
        bulk.changes_applied + bulk.changes_skipped,
        4000,
        "{bulk:?}"
    );
    assert_target_matches(&source, &target).await;

    // Cleanup is idempotent; afterwards the slot is gone.
    for _ in 0..2 {
        catchup::drop_slot(&source, "t1", 0)
            .await
            .expect("drop slot");
        catchup::drop_publication(&source, "t1")
            .await
            .expect("drop publication");
    }
    assert!(matches!(
        catchup::lag_bytes(&source, "t1", 0).await,
        Err(CatchupError::MissingSlot { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_refuses_what_it_cannot_replay() {
    let ((_src_pg, source), (_plain_pg, plain)) = tokio::join!(server(true), server(false));
    exec(&source, SCHEMA).await;
    exec(&plain, SCHEMA).await;

    // wal_level = replica.
    let err = catchup::prepare(&plain, "t2", 0, &tables())
        .await
        .expect_err("not logical");
    assert!(matches!(err, CatchupError::NotLogical { .. }), "{err}");
    assert!(err.to_string().contains("wal_level = logical"), "{err}");
    // No slot there.
    let err = catchup::apply_round(&plain, &[&source], "t2", 0, &tables(), &route, None)
        .await
        .expect_err("no slot");
    assert!(matches!(err, CatchupError::MissingSlot { .. }), "{err}");

    let err = catchup::prepare(&source, "t2", 0, &[])
        .await
        .expect_err("no tables");
    assert!(matches!(err, CatchupError::NoTables), "{err}");

    // Tables without a primary key containing the shard key, or missing.
    exec(
        &source,
        "CREATE TABLE nopk (user_id bigint, v text);\
         CREATE TABLE otherpk (user_id bigint, id bigint PRIMARY KEY);",
    )
    .await;
    for (name, expect_missing) in [("nopk", false), ("otherpk", false), ("absent", true)] {
        let mut t = tables();
        t.push(CatchupTable {
            schema: "public".into(),
            name: name.into(),
            key_column: "user_id".into(),
            key_type: KeyType::BigInt,
        });
        let err = catchup::prepare(&source, "t2", 0, &t)
            .await
            .expect_err(name);
        if expect_missing {
            assert!(matches!(err, CatchupError::MissingTable { .. }), "{err}");
        } else {
            assert!(
                matches!(err, CatchupError::NoReplicaIdentity { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("primary key"), "{err}");
        }
    }
    // A refused prepare created nothing.
    let slots: i64 = source
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .expect("slots")
        .get(0);
    assert_eq!(slots, 0);

    // TRUNCATE cannot be replayed; the slot stays where it was, so it keeps failing clearly.
    within("prepare", catchup::prepare(&source, "t2", 0, &tables()))
        .await
        .expect("prepare");
    exec(
        &source,
        "INSERT INTO users VALUES (1, 'a', 'b'); TRUNCATE pitches",
    )
    .await;
    for _ in 0..2 {
        let err = within(
            "truncate",
            catchup::apply_round(&source, &[&plain], "t2", 0, &tables(), &route, None),
        )
        .await
        .expect_err("truncate");
        assert!(matches!(err, CatchupError::Truncate { .. }), "{err}");
        assert!(err.to_string().contains("public.pitches"), "{err}");
    }
    catchup::drop_slot(&source, "t2", 0)
        .await
        .expect("drop slot");
    catchup::drop_publication(&source, "t2")
        .await
        .expect("drop publication");
}
