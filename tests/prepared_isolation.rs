//! Prepared statements under transaction pooling: no client sees another client's statements, and
//! each client's statements behave as on a direct connection (schema changes, `DEALLOCATE ALL`,
//! SQL-level `PREPARE`).

mod common;

use common::{sqlstate, within, Env};
use pgscale::config::PoolMode;
use tokio_postgres::Client;

/// Prepares `select * from t` before an `ALTER TABLE` adds a column, then runs it again, prepares
/// it afresh and runs that. Returns (old statement's SQLSTATE or column count, fresh column count).
async fn old_and_fresh_after_alter(
    client: &Client,
    other: &Client,
    alter: &str,
) -> (String, usize) {
    let old = within("prepare", client.prepare("select * from t"))
        .await
        .expect("prepare before alter");
    within("old statement", client.query(&old, &[]))
        .await
        .expect("run before alter");
    within("alter", other.batch_execute(alter))
        .await
        .expect("alter");
    let old_outcome = match within("old statement", client.query(&old, &[])).await {
        Ok(rows) => rows.first().map_or(0, |r| r.len()).to_string(),
        Err(e) => sqlstate(&e).unwrap_or_default(),
    };
    let fresh = within("prepare", client.prepare("select * from t"))
        .await
        .expect("fresh prepare after alter");
    let rows = within("fresh statement", client.query(&fresh, &[]))
        .await
        .expect("a fresh statement runs with the new shape");
    assert_eq!(rows[0].len(), fresh.columns().len());
    (old_outcome, fresh.columns().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_parse_after_a_schema_change_gets_the_new_shape() {
    // One server connection: every client's statements meet on it.
    let env = Env::start(PoolMode::Transaction, 1).await;
    let direct = env.direct().await;
    direct
        .batch_execute("create table t (a int); insert into t values (1); grant all on t to app;")
        .await
        .expect("setup");
    let a = env.app().await;
    let (direct_old, direct_fresh) =
        old_and_fresh_after_alter(&direct, &direct, "alter table t add column b int default 7")
            .await;
    let (proxy_old, proxy_fresh) =
        old_and_fresh_after_alter(&a, &direct, "alter table t add column c int default 8").await;
    assert_eq!(direct_old, "0A000", "Postgres refuses the old statement");
    assert_eq!(
        proxy_old, direct_old,
        "the old statement fails as on Postgres"
    );
    assert_eq!(direct_fresh, 2);
    assert_eq!(proxy_fresh, 3, "a fresh Parse sees the new column");

    // Another client preparing the same text after a further change: its own fresh shape, no
    // error caused by the statements client `a` left on the shared server connection.
    direct
        .batch_execute("alter table t add column d int default 9")
        .await
        .expect("alter");
    let b = env.app().await;
    let statement = within("prepare", b.prepare("select * from t"))
        .await
        .expect("prepare");
    let rows = within("query", b.query(&statement, &[]))
        .await
        .expect("another client's fresh statement runs");
    assert_eq!(statement.columns().len(), 4);
    assert_eq!(rows[0].len(), 4);
    let again = within("prepare", a.prepare("select * from t"))
        .await
        .expect("prepare");
    let rows = within("query", a.query(&again, &[])).await.expect("query");
    assert_eq!(rows[0].len(), 4);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_in_a_transaction_then_preparing_again_works() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let client = env.app().await;
    within("begin", client.batch_execute("begin"))
        .await
        .expect("begin");
    let first = within("prepare", client.prepare("select 41 + 1"))
        .await
        .expect("prepare");
    let v: i32 = within("query", client.query_one(&first, &[]))
        .await
        .expect("query")
        .get(0);
    assert_eq!(v, 42);
    within("deallocate", client.batch_execute("deallocate all"))
        .await
        .expect("deallocate all");
    // Gone on a direct connection too: 26000 (in a savepoint, so the transaction goes on).
    within("savepoint", client.batch_execute("savepoint s"))
        .await
        .expect("savepoint");
    let gone = within("old", client.query_one(&first, &[]))
        .await
        .expect_err("a deallocated statement is gone");
    assert_eq!(sqlstate(&gone).as_deref(), Some("26000"));
    within(
        "rollback to",
        client.batch_execute("rollback to savepoint s"),
    )
    .await
    .expect("rollback to savepoint");
    let again = within("prepare", client.prepare("select 41 + 1"))
        .await
        .expect("prepare again");
    let v: i32 = within("query", client.query_one(&again, &[]))
        .await
        .expect("the statement prepared again runs in the same transaction")
        .get(0);
    assert_eq!(v, 42);
    within("commit", client.batch_execute("commit"))
        .await
        .expect("commit");
    // And after the transaction, on whatever connection comes next.
    let v: i32 = within("query", client.query_one(&again, &[]))
        .await
        .expect("after commit")
        .get(0);
    assert_eq!(v, 42);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_prepared_statements_never_shows_another_clients_text() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let a = env.app().await;
    let b = env.app().await;
    let secret = within("prepare", a.prepare("select 'secret of a'::text"))
        .await
        .expect("prepare");
    within("query", a.query(&secret, &[])).await.expect("query");
    let mine = within("prepare", b.prepare("select 'mine of b'::text"))
        .await
        .expect("prepare");
    within("query", b.query(&mine, &[])).await.expect("query");
    let view = within(
        "prepare view",
        b.prepare("select statement from pg_prepared_statements"),
    )
    .await
    .expect("prepare view");
    let rows = within("view", b.query(&view, &[])).await.expect("view");
    let texts: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        !texts.iter().any(|t| t.contains("secret of a")),
        "b sees a's statement: {texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("mine of b")),
        "b's own statement is listed: {texts:?}"
    );
    // a prepares more after b prepared its look; b's prepared look still shows only b's.
    let second = within("prepare", a.prepare("select 'second secret of a'::text"))
        .await
        .expect("prepare");
    within("query", a.query(&second, &[])).await.expect("query");
    let rows = within("view", b.query(&view, &[])).await.expect("view");
    let texts: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        !texts.iter().any(|t| t.contains("secret of a")),
        "b's prepared look sees a's statement: {texts:?}"
    );
    // a's statement still works after b's look (prepared again where needed).
    let v: String = within("query", a.query_one(&secret, &[]))
        .await
        .expect("a's statement still runs")
        .get(0);
    assert_eq!(v, "secret of a");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepare_is_the_clients_alone() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let a = env.app().await;
    let b = env.app().await;
    within("prepare", a.batch_execute("prepare q as select 42"))
        .await
        .expect("sql prepare");
    // b keeps a transaction open meanwhile: a's statement must still be where a runs.
    within("begin", b.batch_execute("begin; select 1"))
        .await
        .expect("begin");
    for _ in 0..3 {
        let rows = within("execute", common::simple_rows(&a, "execute q"))
            .await
            .expect("a executes its statement");
        assert_eq!(rows[0][0].as_deref(), Some("42"));
    }
    within("commit", b.batch_execute("commit"))
        .await
        .expect("commit");
    let err = within("execute", b.batch_execute("execute q"))
        .await
        .expect_err("b never sees a's statement");
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"));
    within("prepare", b.batch_execute("prepare q as select 7"))
        .await
        .expect("b prepares its own q");
    let rows = within("execute", common::simple_rows(&b, "execute q"))
        .await
        .expect("execute");
    assert_eq!(rows[0][0].as_deref(), Some("7"));
    let rows = within("execute", common::simple_rows(&a, "execute q"))
        .await
        .expect("execute");
    assert_eq!(rows[0][0].as_deref(), Some("42"));
    within("deallocate", a.batch_execute("deallocate q"))
        .await
        .expect("deallocate");
    drop(a);
    // a gone: its server connection went with it; b's statement is still b's.
    let c = env.app().await;
    let err = within("execute", c.batch_execute("execute q"))
        .await
        .expect_err("c never sees others' statements");
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"));
    let rows = within("execute", common::simple_rows(&b, "execute q"))
        .await
        .expect("execute");
    assert_eq!(rows[0][0].as_deref(), Some("7"));
    env.stop().await;
}
