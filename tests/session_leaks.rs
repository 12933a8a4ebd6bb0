//! State the statement lexer cannot follow must not reach the next client on a server connection
//! (transaction pooling, pool_size 1 so the next client gets the same server): a client leaving in the
//! middle of a transaction, `DO` blocks and `SELECT … INTO TEMP`, and a client's own operators
//! aimed at the proxy's settings read-back.

mod common;

use common::{simple_rows, within, Env};
use pgscale::config::PoolMode;
use tokio_postgres::Client;

/// The first column of the first row of a simple query.
async fn one(client: &Client, sql: &str) -> String {
    let rows = within(sql, simple_rows(client, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default()
}

async fn exec(client: &Client, sql: &str) {
    within(sql, client.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const DEFAULT_PATH: &str = "\"$user\", public";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_transaction_leaves_no_lock_or_statement() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let a = env.app().await;
    // Session advisory locks and SQL PREPARE outlive the ROLLBACK the proxy sends when A goes.
    exec(
        &a,
        "BEGIN; SELECT pg_advisory_lock(5); PREPARE q AS SELECT 1; SELECT 1",
    )
    .await;
    drop(a);
    let direct = env.direct().await;
    let mut locks = String::new();
    for _ in 0..50 {
        locks = one(
            &direct,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await;
        if locks == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        locks, "0",
        "the departed client's advisory lock is still held"
    );
    let b = env.app().await;
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0",
        "the departed client's statement is on the next client's server"
    );
    assert_eq!(one(&b, "SELECT pg_try_advisory_lock(5)").await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_blocks_and_select_into_temp_pin_the_client_and_leak_nothing() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    exec(&env.direct().await, "CREATE SCHEMA elsewhere").await;
    let a = env.app().await;
    exec(
        &a,
        "DO $$BEGIN SET search_path = elsewhere, public; END$$; \
         SELECT 1 AS x INTO TEMP t_of_a",
    )
    .await;
    // A keeps its server, so its state stays its own across transactions.
    assert_eq!(
        one(&a, "SHOW search_path").await,
        "elsewhere, public",
        "the DO block's setting"
    );
    assert_eq!(one(&a, "SELECT count(*) FROM t_of_a").await, "1");
    drop(a);
    let b = within("the next client's login", async { env.app().await }).await;
    assert_eq!(one(&b, "SHOW search_path").await, DEFAULT_PATH);
    assert_eq!(
        one(&b, "SELECT count(*) FROM pg_class WHERE relname = 't_of_a'").await,
        "0",
        "the temp table of the previous client is visible"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_operator_cannot_fool_the_settings_read_back() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let a = env.app().await;
    // app owns its database, so it may create an `=` that beats pg_catalog's on its search_path.
    exec(
        &a,
        "CREATE FUNCTION public.never(text, text) RETURNS bool LANGUAGE sql AS 'SELECT false'; \
         CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.never)",
    )
    .await;
    exec(
        &a,
        "SET search_path = public, pg_catalog; SELECT set_config('x.y', '1', false)",
    )
    .await;
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let b = env.app().await;
    assert_eq!(
        one(&b, "SHOW search_path").await,
        DEFAULT_PATH,
        "the previous client's search_path reached the next client"
    );
}
