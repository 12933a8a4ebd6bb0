//! Differential test of sharded reads: the same data in three shards behind pgscale and in one
//! plain database; a few hundred generated queries of every supported shape must give the same
//! rows both ways (in order where the query orders them totally), and unsupported shapes must be
//! refused rather than answer differently.

mod common;

use common::{connect, simple_rows, sqlstate, Env};
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};
use rand::{Rng, SeedableRng};

const TITLES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

/// The same rows as INSERT statements (users, then pitches), deterministic.
fn data() -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut statements = Vec::new();
    let users: Vec<String> = (1..=600i64)
        .map(|id| {
            let email = if id % 10 == 0 {
                "NULL".to_string()
            } else {
                format!("'u{id}@x'")
            };
            format!("({id}, 'user{:03}', {email})", id % 97)
        })
        .collect();
    for chunk in users.chunks(100) {
        statements.push(format!(
            "INSERT INTO users (id, name, email) VALUES {}",
            chunk.join(", ")
        ));
    }
    let mut pitches = Vec::new();
    for id in 1..=2_000i64 {
        let user = rng.gen_range(1..=600i64);
        let title = TITLES[rng.gen_range(0..TITLES.len())];
        let amount = if id % 13 == 0 {
            "NULL".to_string()
        } else {
            format!("{}.{:02}", rng.gen_range(0..5_000), rng.gen_range(0..100))
        };
        pitches.push(format!("({id}, {user}, '{title}', {amount})"));
    }
    for chunk in pitches.chunks(100) {
        statements.push(format!(
            "INSERT INTO pitches (id, user_id, title, amount) VALUES {}",
            chunk.join(", ")
        ));
    }
    statements
}

/// Generated queries: (text, whether its order is total so rows must match in order).
fn queries() -> Vec<(String, bool)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for _ in 0..25 {
        let k = rng.gen_range(1..=600);
        let k2 = rng.gen_range(1..=600);
        let a = rng.gen_range(0..5_000);
        let n = rng.gen_range(1..30);
        let m = rng.gen_range(0..20);
        let t = TITLES[rng.gen_range(0..TITLES.len())];
        out.extend([
            // Keyed.
            (format!("select id, name, email from users where id = {k}"), false),
            (format!("select id, title, amount from pitches where user_id = {k} order by id"), true),
            (format!("select u.name, p.title from users u join pitches p on p.user_id = u.id where u.id = {k}"), false),
            // IN lists: a subset of shards.
            (format!("select id, name from users where id in ({k}, {k2}, 3)"), false),
            // Fan-out: concatenation.
            (format!("select id, user_id from pitches where amount > {a}"), false),
            (format!("select id from users where name = 'user{:03}'", k % 97), false),
            // Fan-out: ORDER BY … LIMIT/OFFSET.
            (format!("select id, amount from pitches where amount is not null order by amount desc, id limit {n} offset {m}"), true),
            (format!("select id, name from users order by id limit {n}"), true),
            (format!("select id, user_id from pitches order by user_id, id desc limit {n} offset {m}"), true),
            // Aggregates, with and without GROUP BY.
            ("select count(*) from pitches".to_string(), false),
            (format!("select count(*), count(amount), sum(amount), min(amount), max(amount) from pitches where amount < {a}"), false),
            (format!("select count(email), min(id), max(id), sum(id) from users where id > {k}"), false),
            (format!("select avg(amount) from pitches where title = '{t}'"), false),
            ("select avg(id) from users".to_string(), false),
            ("select title, count(*), sum(amount), min(amount), max(amount), avg(amount) from pitches group by title".to_string(), false),
            (format!("select title, count(*) from pitches where amount > {a} group by title order by title"), true),
            (format!("select user_id, count(*) from pitches where user_id < {k} group by user_id order by user_id limit {n}"), true),
            (format!("select sum(amount) from pitches where user_id = {k}"), false),
            ("select count(*) from pitches where amount is null".to_string(), false),
        ]);
    }
    out
}

/// Shapes pgscale cannot merge: they must be refused, never answered differently.
const REFUSED: [&str; 6] = [
    "select distinct title from pitches",
    "select count(distinct user_id) from pitches",
    "select id, row_number() over (order by id) from users",
    "select title, count(*) from pitches group by title having count(*) > 10",
    "select string_agg(title, ',') from pitches",
    "select id from users union select user_id from pitches",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_reads_match_one_plain_database() {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    let plain_server = tokio::task::spawn_blocking(common::start_postgres)
        .await
        .expect("join");
    let plain = connect(&format!(
        "host=127.0.0.1 port={} user=app password={} dbname=app",
        plain_server.port(),
        common::APP_PASSWORD
    ))
    .await;
    plain
        .batch_execute(SAMPLE_SCHEMA)
        .await
        .expect("plain schema");
    let app = env.app().await;
    for statement in data() {
        plain.batch_execute(&statement).await.expect("plain insert");
        app.batch_execute(&statement).await.expect("sharded insert");
    }

    let mut compared = 0;
    for (sql, ordered) in queries() {
        let expected = simple_rows(&plain, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got = match simple_rows(&app, &sql).await {
            Ok(got) => got,
            Err(e) => panic!("pgscale refused a supported shape: {sql}: {e}"),
        };
        if ordered {
            assert_eq!(got, expected, "{sql}");
        } else {
            let (mut got, mut expected) = (got, expected);
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "{sql}");
        }
        compared += 1;
    }
    assert!(compared >= 400, "{compared} queries compared");

    for sql in REFUSED {
        let e = simple_rows(&app, sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e}");
    }
    // The client is still usable after refusals.
    assert_eq!(
        simple_rows(&app, "select 1").await.expect("select 1"),
        vec![vec![Some("1".to_string())]]
    );

    // The same through the extended protocol with binary results and parameters.
    let total: i64 = app
        .query_one(
            "select count(*) from pitches where amount::float8 > $1",
            &[&100.0f64],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let plain_total: i64 = plain
        .query_one(
            "select count(*) from pitches where amount::float8 > $1",
            &[&100.0f64],
        )
        .await
        .expect("plain")
        .get(0);
    assert_eq!(total, plain_total);
    let top = app
        .query(
            "select id, user_id from pitches order by id desc limit $1",
            &[&5i64],
        )
        .await;
    // LIMIT given as a parameter cannot be merged: refused, not answered wrongly.
    if let Err(e) = &top {
        assert_eq!(sqlstate(e).as_deref(), Some("0A000"), "{e}");
    } else {
        let ids: Vec<i64> = top.expect("rows").iter().map(|r| r.get(0)).collect();
        assert_eq!(ids, vec![2000, 1999, 1998, 1997, 1996]);
    }
    let mine = app
        .prepare("select id from pitches where user_id = any($1) order by id")
        .await
        .expect("prepare");
    let keys: Vec<i64> = vec![1, 2, 3, 50, 400];
    let got: Vec<i64> = app
        .query(&mine, &[&keys])
        .await
        .expect("any")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = plain
        .query(
            "select id from pitches where user_id = any($1) order by id",
            &[&keys],
        )
        .await
        .expect("plain any")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, expected);
    drop(plain_server);
    env.stop().await;
}
