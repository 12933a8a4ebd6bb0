//! Fan-out reads under the proxy-wide memory budget (`sharding.fanout_memory_budget_bytes`), on
//! two real shards: rows stream (a read much larger than the budget succeeds, in order, and its
//! first rows reach the client while a shard is still working), an aggregation whose groups pass
//! the budget fails with 54000 and leaves every connection usable, and the budget is shared by
//! all clients.

mod common;

use std::time::Duration;

use common::raw::{self, query_frame, read_msg};
use common::{simple_rows, sqlstate, Env};
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};

/// A small budget: 20 MB of rows can only stream through it; it holds ~4500 narrow groups.
const BUDGET: usize = 3 << 20;
/// Pitches per shard: ~155 bytes each on the wire, ~20 MB over both shards.
const PITCHES_PER_SHARD: i64 = 70_000;
/// Users per shard; names repeat across shards (3500 distinct).
const USERS_PER_SHARD: i64 = 3_500;
/// Held by the test on shard 1 to stop a `gate(id)` query at the shard's last row.
const LOCK: i64 = 4242;

/// Two shards with a fan-out budget of `budget` bytes, pitches 1..140000 (shard 0 holds the first half) and
/// users 1..7000, and `gate(id)`, which waits for [`LOCK`] at the last row of each table.
async fn start(budget: usize) -> Env {
    let env = Env::start_with_shards(2, 0, SAMPLE_SHARDING, |c| {
        c.sharding.fanout_memory_budget_bytes = budget;
    })
    .await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    let last_pitch = 2 * PITCHES_PER_SHARD;
    let last_user = 2 * USERS_PER_SHARD;
    env.exec_on_all_shards(&format!(
        "CREATE FUNCTION gate(bigint) RETURNS boolean LANGUAGE plpgsql STABLE AS $$ BEGIN \
         IF $1 IN ({last_pitch}, {last_user}) THEN PERFORM pg_advisory_lock_shared({LOCK}); \
         PERFORM pg_advisory_unlock_shared({LOCK}); END IF; RETURN true; END $$; \
         GRANT SELECT ON pitches, users TO trustuser"
    ))
    .await;
    for shard in 0..2i64 {
        let direct = env.direct_to_shard(shard as usize).await;
        let (from, to) = (
            shard * PITCHES_PER_SHARD + 1,
            (shard + 1) * PITCHES_PER_SHARD,
        );
        direct
            .batch_execute(&format!(
                "INSERT INTO pitches (id, user_id, title, amount) SELECT g, g, 'pitch ' || g || \
                 repeat('x', 120), 1.50 FROM generate_series({from}, {to}) g"
            ))
            .await
            .expect("pitches");
        let (from, to) = (shard * USERS_PER_SHARD + 1, (shard + 1) * USERS_PER_SHARD);
        direct
            .batch_execute(&format!(
                "INSERT INTO users (id, name) SELECT g, 'n' || (g % {USERS_PER_SHARD}) \
                 FROM generate_series({from}, {to}) g; ANALYZE"
            ))
            .await
            .expect("users");
    }
    env
}

/// Awaits `future` for at most a minute (big reads in a debug build on a busy machine).
async fn slowly<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 60 s"))
}

fn expected_sum(n: i64) -> i64 {
    n * (n + 1) / 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_larger_than_the_budget_stream_and_too_many_groups_fail_cleanly() {
    let env = start(BUDGET).await;
    let app = env.app().await;
    let total = 2 * PITCHES_PER_SHARD;

    // Concatenation, simple protocol: ~20 MB through a 3 MiB budget.
    let rows = slowly(
        "concatenated read",
        simple_rows(&app, "SELECT id, title FROM pitches"),
    )
    .await
    .expect("a read larger than the budget streams");
    assert_eq!(rows.len() as i64, total);
    let sum: i64 = (rows.iter())
        .map(|r| r[0].as_deref().expect("id").parse::<i64>().expect("int"))
        .sum();
    assert_eq!(sum, expected_sum(total));

    // The k-way merge, extended protocol: every row, in order.
    let rows = slowly(
        "ordered read",
        app.query("SELECT id, title FROM pitches ORDER BY id DESC", &[]),
    )
    .await
    .expect("an ordered read larger than the budget streams");
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids.len() as i64, total);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "descending order");
    assert_eq!(ids.iter().sum::<i64>(), expected_sum(total));
    let title: String = rows[0].get(1);
    assert!(title.starts_with(&format!("pitch {total}x")), "{title}");

    // ORDER BY … LIMIT stops early.
    let rows = within_rows(&app, "SELECT id FROM pitches ORDER BY id LIMIT 3 OFFSET 2").await;
    assert_eq!(rows, vec!["3", "4", "5"]);

    // 7000 groups need more than the budget: 54000, with what to do.
    let err = match slowly(
        "too many groups",
        simple_rows(&app, "SELECT id, count(*) FROM users GROUP BY id"),
    )
    .await
    {
        Ok(rows) => panic!("{} groups over the budget were merged", rows.len()),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err:?}");
    let message = err.as_db_error().map(|d| d.message().to_string());
    let message = message.unwrap_or_default();
    assert!(
        message.contains("sharding.fanout_memory_budget_bytes") && message.contains("LIMIT"),
        "{message}"
    );

    // The same client, a new client, keyed and fan-out statements all work afterwards.
    assert_eq!(
        within_rows(&app, "SELECT count(*) FROM pitches").await,
        vec![total.to_string()]
    );
    let other = env.app().await;
    assert_eq!(
        within_rows(&other, "SELECT name FROM users WHERE id = 7").await,
        vec!["n7"]
    );
    assert_eq!(
        within_rows(&other, "SELECT count(*) FROM (SELECT 1) s").await,
        vec!["1"]
    );
    // 3500 groups fit.
    let groups = slowly(
        "groups within the budget",
        simple_rows(&other, "SELECT name, count(*) FROM users GROUP BY name"),
    )
    .await
    .expect("fits");
    assert_eq!(groups.len() as i64, USERS_PER_SHARD);
    // No shard is still working on the refused query: its connections were closed or drained.
    for shard in 0..2 {
        let direct = env.direct_to_shard(shard).await;
        let mut busy = 1;
        for _ in 0..100 {
            busy = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' \
                     AND query ILIKE '%GROUP BY id%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("activity")
                .get::<_, i64>(0);
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(busy, 0, "shard {shard} still runs the refused query");
    }
}

/// The first column of a simple query's rows, within 10 s.
async fn within_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    common::within(sql, simple_rows(client, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_reach_the_client_while_a_shard_is_still_working() {
    let env = start(BUDGET).await;
    let holder = env.direct_to_shard(1).await;
    holder
        .execute(&format!("SELECT pg_advisory_lock({LOCK})"), &[])
        .await
        .expect("lock");
    let mut client = env.raw().await;
    client
        .send(&query_frame("SELECT id, title FROM pitches WHERE gate(id)"))
        .await;
    // Shard 1 waits at its last row; shard 0's rows (and shard 1's first) arrive anyway.
    let mut seen = 0;
    while seen < 1000 {
        match read_msg(&mut client.stream).await {
            Some((b'D', _)) => seen += 1,
            Some((b'T' | b'N' | b'S', _)) => {}
            Some((tag, body)) => panic!(
                "unexpected {} before the rows: {}",
                tag as char,
                raw::error_code(&body)
            ),
            None => panic!("no rows while shard 1 is still working (after {seen} rows)"),
        }
    }
    holder
        .execute(&format!("SELECT pg_advisory_unlock({LOCK})"), &[])
        .await
        .expect("unlock");
    let mut tag = None;
    loop {
        match slowly("the rest", read_msg(&mut client.stream)).await {
            Some((b'D', _)) => seen += 1,
            Some((b'C', body)) => tag = Some(String::from_utf8_lossy(&body).into_owned()),
            Some((b'Z', _)) => break,
            Some((b'E', body)) => panic!("error {}", raw::error_code(&body)),
            Some(_) => {}
            None => panic!("the read did not finish ({seen} rows)"),
        }
    }
    let total = 2 * PITCHES_PER_SHARD;
    assert_eq!(seen, total);
    assert_eq!(tag.as_deref(), Some(format!("SELECT {total}\0").as_str()));
    assert_eq!(client.query("SELECT 1").await, Ok(vec!["1".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_shared_by_every_client() {
    let env = start(6 << 20).await;
    // Shard 1 groups by id along its primary key, so it sends groups as it finds them and waits
    // at id 7000 with most of its groups sent.
    let holder = env.direct_to_shard(1).await;
    holder
        .batch_execute(
            "ALTER DATABASE app SET enable_hashagg = off; \
             ALTER DATABASE app SET enable_seqscan = off; ALTER DATABASE app SET enable_sort = off",
        )
        .await
        .expect("plan settings");
    holder
        .execute(&format!("SELECT pg_advisory_lock({LOCK})"), &[])
        .await
        .expect("lock");
    // A's 7000 groups (~4.8 MB as counted) fit the 6 MiB budget alone.
    let a = env.app().await;
    let a_read = tokio::spawn(async move {
        simple_rows(
            &a,
            "SELECT id, count(*) FROM users WHERE gate(id) GROUP BY id",
        )
        .await
    });
    // B's 3500 groups (~2.7 MB) fit alone, but not next to A's: refused (not made to wait).
    let b = env.app().await;
    let b_sql = "SELECT name, count(*), min(id) FROM users GROUP BY name";
    let mut refused = None;
    for _ in 0..200 {
        match common::within("B's read", simple_rows(&b, b_sql)).await {
            Ok(rows) => assert_eq!(rows.len() as i64, USERS_PER_SHARD),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if refused.is_none() {
        holder
            .execute(&format!("SELECT pg_advisory_unlock({LOCK})"), &[])
            .await
            .expect("unlock");
        let a = slowly("A's read", a_read).await.expect("join");
        panic!(
            "B was never refused while A held most of the budget; A: {:?}",
            a.map(|rows| rows.len())
        );
    }
    let refused = refused.expect("refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("54000"), "{refused:?}");
    holder
        .execute(&format!("SELECT pg_advisory_unlock({LOCK})"), &[])
        .await
        .expect("unlock");
    let a_rows = slowly("A's read", a_read)
        .await
        .expect("join")
        .expect("A's read fits the budget alone");
    assert_eq!(a_rows.len() as i64, 2 * USERS_PER_SHARD);
    // With A done, its share is back: B fits again.
    let rows = common::within("B again", simple_rows(&b, b_sql))
        .await
        .expect("B fits once A is done");
    assert_eq!(rows.len() as i64, USERS_PER_SHARD);
}
