//! No session state leaks between clients that share server connections, and a client keeps its own
//! settings when it moves to another server: `set_config`, rolled-back `SET`s, savepoints,
//! `SESSION AUTHORIZATION`/`ROLE`, `RESET` back to startup values, state that cannot move (LISTEN,
//! temp tables, SQL `PREPARE`, `WITH HOLD` cursors, advisory locks) pins the client, and session mode
//! hands the next client a fully reset connection.

mod common;

use common::{simple_rows, within, Env, APP_PASSWORD, APP_USER, SUPERUSER_PASSWORD};
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

async fn pid(client: &Client) -> String {
    one(client, "SELECT pg_backend_pid()").await
}

/// Opens a transaction on `client` on the server with backend pid `wanted` (the one another client
/// used last), so that client's next statement must run on another server. Idle connections are
/// reused last-in first-out, but the server goes back to the pool only after its client got the
/// answer, so on a loaded machine the first try may find it still out: retried. If pgscale closed
/// that server instead of pooling it (it does so when unsure of a server's state), the other client
/// moves anyway: then any server will do.
async fn begin_on_server(client: &Client, wanted: &str) {
    for _ in 0..100 {
        exec(client, "BEGIN").await;
        if pid(client).await == wanted {
            return;
        }
        let still_there = one(
            client,
            &format!("SELECT count(*)::text FROM pg_stat_activity WHERE pid = {wanted}"),
        )
        .await;
        if still_there == "0" {
            eprintln!("server {wanted} was closed rather than pooled");
            return;
        }
        exec(client, "ROLLBACK").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("never got the server with pid {wanted}");
}

/// With pool_size 2: `other` opens a transaction on the server `mover` used last (the only idle one,
/// idle connections are reused last-in first-out), so `mover`'s next statement runs on the other
/// server. Returns `other`, whose transaction must stay open while `mover` runs.
async fn occupy_server_of(env: &Env, mover: &Client) -> Client {
    let before = pid(mover).await;
    let other = env.app().await;
    begin_on_server(&other, &before).await;
    assert_ne!(pid(mover).await, before, "the mover is on another server");
    other
}

fn app_with_options(env: &Env, options: &str) -> String {
    format!(
        "{} options='{options}'",
        env.conn_str(APP_USER, APP_PASSWORD, APP_USER)
    )
}

const DEFAULT_PATH: &str = "\"$user\", public";

const APP_USER_ID: &str = "SELECT coalesce(current_setting('app.user_id', true), '')";

async fn create_role_r1(env: &Env) {
    let direct = env.direct().await;
    exec(
        &direct,
        "CREATE ROLE r1; GRANT r1 TO app; CREATE SCHEMA elsewhere; \
         CREATE FUNCTION public.tokyo() RETURNS text LANGUAGE sql \
         AS $$ SELECT pg_catalog.set_config('TimeZone', 'Asia/Tokyo', false) $$",
    )
    .await;
}

// ---- item 2: state changed outside SET ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_does_not_leak_to_the_next_client() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    create_role_r1(&env).await;
    let a = env.app().await;
    exec(
        &a,
        "SELECT set_config('default_transaction_read_only', 'on', false), \
                set_config('search_path', 'elsewhere', false)",
    )
    .await;
    exec(&a, "SELECT pg_catalog.SET_CONFIG('role', 'r1', false)").await;
    exec(&a, "SELECT set_config('app.user_id', '42', false)").await;
    // A function changes a reported setting: the statement does not show it, the server tells.
    exec(&a, "SELECT public.tokyo()").await;
    let a_pid = pid(&a).await;
    let b = env.app().await;
    assert_eq!(pid(&b).await, a_pid, "pool_size 1: the same server");
    assert_eq!(one(&b, "SHOW default_transaction_read_only").await, "off");
    assert_eq!(one(&b, "SHOW search_path").await, DEFAULT_PATH);
    assert_eq!(one(&b, "SELECT current_user").await, "app");
    assert_eq!(one(&b, APP_USER_ID).await, "");
    let fresh_zone = one(&env.app().await, "SHOW TimeZone").await;
    assert_ne!(fresh_zone, "Asia/Tokyo");
    assert_eq!(one(&b, "SHOW TimeZone").await, fresh_zone);
    assert_eq!(one(&a, APP_USER_ID).await, "42");
    assert_eq!(one(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    // A still has its own settings.
    assert_eq!(one(&a, "SHOW default_transaction_read_only").await, "on");
    assert_eq!(one(&a, "SHOW search_path").await, "elsewhere");
    assert_eq!(one(&a, "SELECT current_user").await, "r1");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_follows_the_client_to_another_server() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    create_role_r1(&env).await;
    let a = env.app().await;
    exec(
        &a,
        "SELECT set_config('default_transaction_read_only', 'on', false), \
                set_config('search_path', 'elsewhere', false), set_config('role', 'r1', false), \
                set_config('lock_timeout', '3s', true)",
    )
    .await;
    exec(&a, "SELECT set_config('app.user_id', '42', false)").await;
    // Non-literal arguments too.
    exec(
        &a,
        "SELECT set_config(name, value, false) FROM (VALUES ('statement_timeout', '9s')) v(name, value)",
    )
    .await;
    let other = occupy_server_of(&env, &a).await;
    assert_eq!(one(&a, "SHOW default_transaction_read_only").await, "on");
    assert_eq!(one(&a, "SHOW search_path").await, "elsewhere");
    assert_eq!(one(&a, "SHOW statement_timeout").await, "9s");
    assert_eq!(one(&a, "SHOW lock_timeout").await, "0", "is_local: gone");
    assert_eq!(one(&a, "SELECT current_user").await, "r1");
    assert_eq!(one(&a, APP_USER_ID).await, "42");
    // And back to defaults by set_config and RESET.
    exec(&a, "SELECT set_config('search_path', '', false)").await;
    exec(&a, "RESET role; RESET default_transaction_read_only").await;
    exec(&other, "COMMIT").await;
    let other2 = occupy_server_of(&env, &a).await;
    assert_eq!(one(&a, "SHOW search_path").await, "");
    assert_eq!(one(&a, "SHOW default_transaction_read_only").await, "off");
    assert_eq!(one(&a, "SELECT current_user").await, "app");
    drop(other2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_that_cannot_move_pins_the_client() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let a = env.app().await;
    exec(&a, "LISTEN chan").await;
    exec(
        &a,
        "CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (7)",
    )
    .await;
    exec(&a, "PREPARE sel AS SELECT 42").await;
    exec(
        &a,
        "BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT generate_series(1, 3); COMMIT",
    )
    .await;
    exec(&a, "SELECT pg_advisory_lock(4242)").await;
    let a_pid = pid(&a).await;
    // The other server is the only one left for everyone else while A is connected.
    let b = env.app().await;
    for _ in 0..3 {
        exec(&b, "BEGIN").await;
        assert_ne!(pid(&b).await, a_pid, "A's server was handed on");
        assert_eq!(
            one(&b, "SELECT count(*) FROM pg_listening_channels()").await,
            "0"
        );
        assert_eq!(
            one(&b, "SELECT count(*) FROM pg_prepared_statements").await,
            "0"
        );
        exec(&b, "COMMIT").await;
        // A keeps its server and its state.
        assert_eq!(pid(&a).await, a_pid);
        assert_eq!(one(&a, "SELECT x FROM mine").await, "7");
        assert_eq!(one(&a, "EXECUTE sel").await, "42");
        assert_eq!(
            one(&a, "SELECT count(*) FROM pg_listening_channels()").await,
            "1"
        );
    }
    assert_eq!(one(&a, "FETCH cur").await, "1");
    drop(a);
    // Once A is gone its server is reset (or closed) before anyone gets it.
    let direct = env.direct().await;
    for _ in 0..100 {
        let left = one(
            &direct,
            "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') \
                  + (SELECT count(*) FROM pg_class WHERE relname = 'mine')",
        )
        .await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let c = env.app().await;
    exec(&b, "BEGIN").await;
    exec(&c, "BEGIN").await;
    for other in [&b, &c] {
        assert_eq!(
            one(other, "SELECT count(*) FROM pg_listening_channels()").await,
            "0"
        );
        assert_eq!(
            one(other, "SELECT count(*) FROM pg_prepared_statements").await,
            "0"
        );
        assert_eq!(one(other, "SELECT count(*) FROM pg_cursors").await, "0");
        assert_eq!(
            one(
                other,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            )
            .await,
            "0"
        );
        assert_eq!(
            one(
                other,
                "SELECT count(*) FROM pg_class WHERE relname = 'mine'"
            )
            .await,
            "0"
        );
    }
    env.stop().await;
}

// ---- item 3: what SET really left behind ----

async fn check_rolled_back(client: &Client) {
    assert_eq!(one(client, "SHOW statement_timeout").await, "0");
    assert_eq!(one(client, "SHOW lock_timeout").await, "2s");
    assert_eq!(one(client, "SHOW work_mem").await, "4MB");
    assert_eq!(
        one(client, "SHOW idle_in_transaction_session_timeout").await,
        "0"
    );
    assert_eq!(one(client, "SHOW cursor_tuple_fraction").await, "0.4");
    assert_eq!(one(client, "SHOW vacuum_cost_limit").await, "200");
    assert_eq!(one(client, "SHOW vacuum_cost_delay").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_and_failed_sets_are_not_replayed() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let a = env.app().await;
    exec(&a, "BEGIN").await;
    exec(&a, "SET statement_timeout = '1s'").await;
    exec(&a, "ROLLBACK").await;
    // Savepoints: what came after the savepoint is undone, SET LOCAL never lasts.
    exec(&a, "BEGIN; SET lock_timeout = '2s'; SAVEPOINT s").await;
    exec(&a, "SET lock_timeout = '3s'; SET LOCAL work_mem = '1MB'").await;
    exec(&a, "ROLLBACK TO SAVEPOINT s").await;
    exec(&a, "SET LOCAL idle_in_transaction_session_timeout = '5min'").await;
    exec(&a, "COMMIT").await;
    // An error after a savepoint: only the part after it is lost.
    exec(&a, "BEGIN; SET cursor_tuple_fraction = 0.4; SAVEPOINT s").await;
    let err = within(
        "bad set",
        a.batch_execute("SET cursor_tuple_fraction = 'bogus'"),
    )
    .await;
    assert!(err.is_err(), "bad value refused");
    exec(&a, "ROLLBACK TO s; COMMIT").await;
    // A failed SET, alone and in a transaction.
    assert!(
        within("bad", a.batch_execute("SET vacuum_cost_delay = 'x'"))
            .await
            .is_err()
    );
    exec(&a, "BEGIN; SET vacuum_cost_limit = 300").await;
    assert!(
        within("bad", a.batch_execute("SET vacuum_cost_delay = 'x'"))
            .await
            .is_err()
    );
    exec(&a, "COMMIT").await; // really a ROLLBACK
    check_rolled_back(&a).await;
    let _other = occupy_server_of(&env, &a).await;
    check_rolled_back(&a).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_and_role_resets_are_understood() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let su = common::connect(&env.conn_str("postgres", SUPERUSER_PASSWORD, APP_USER)).await;
    exec(&su, "SET SESSION AUTHORIZATION app").await;
    exec(&su, "RESET SESSION AUTHORIZATION").await;
    exec(&su, "SET ROLE app").await;
    exec(&su, "RESET ROLE").await;
    let users = "SELECT session_user || ',' || current_user";
    assert_eq!(one(&su, users).await, "postgres,postgres");
    // Move it: a second superuser client takes its server.
    let before = pid(&su).await;
    let other = common::connect(&env.conn_str("postgres", SUPERUSER_PASSWORD, APP_USER)).await;
    begin_on_server(&other, &before).await;
    assert_ne!(pid(&su).await, before);
    assert_eq!(one(&su, users).await, "postgres,postgres");
    exec(
        &su,
        "SET SESSION AUTHORIZATION app; SET SESSION AUTHORIZATION DEFAULT",
    )
    .await;
    exec(&su, "SET ROLE app; SET ROLE NONE").await;
    exec(&other, "COMMIT").await;
    assert_eq!(one(&su, users).await, "postgres,postgres");
    // Still replayed while in force.
    exec(&su, "SET SESSION AUTHORIZATION app").await;
    let before = pid(&su).await;
    begin_on_server(&other, &before).await;
    assert_eq!(one(&su, users).await, "app,app");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_option_time_zone_and_reset_all_use_the_right_names_and_values() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let a = common::connect(&app_with_options(
        &env,
        "-c TimeZone=Asia/Tokyo -c statement_timeout=11s",
    ))
    .await;
    exec(&a, "SET XML OPTION DOCUMENT").await;
    let b = env.app().await;
    assert_eq!(one(&b, "SHOW xmloption").await, "content");
    assert_eq!(one(&a, "SHOW xmloption").await, "document");
    for reset in [
        "RESET TIME ZONE",
        "SET TIME ZONE DEFAULT",
        "SET TIME ZONE LOCAL",
        "RESET timezone",
        "RESET ALL",
    ] {
        exec(&a, "SET TIME ZONE 'UTC'; SET statement_timeout = '1s'").await;
        assert_eq!(
            one(&b, "SHOW TimeZone").await,
            one(&env.app().await, "SHOW TimeZone").await
        );
        exec(&a, reset).await;
        assert_eq!(one(&a, "SHOW TimeZone").await, "Asia/Tokyo", "{reset}");
        exec(&a, "RESET statement_timeout").await;
        assert_eq!(one(&a, "SHOW statement_timeout").await, "11s", "{reset}");
    }
    exec(
        &a,
        "SET TIME ZONE 'UTC'; SET statement_timeout = '1s'; SET xmloption = content",
    )
    .await;
    exec(&a, "RESET ALL").await;
    assert_eq!(one(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(one(&a, "SHOW statement_timeout").await, "11s");
    assert_eq!(one(&b, "SHOW statement_timeout").await, "0");
    env.stop().await;
}

// ---- item 8: session mode ----

/// Client A dirties its session in every way a server keeps; returns A's backend pid.
async fn dirty_session(a: &Client) -> String {
    exec(
        a,
        "SET application_name = 'client-a'; SET search_path = elsewhere, public; \
         SELECT set_config('statement_timeout', '7s', false); \
         CREATE TEMP TABLE mine (x int); PREPARE sel AS SELECT 1; LISTEN chan; \
         SELECT pg_advisory_lock(77); \
         BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
    )
    .await;
    pid(a).await
}

async fn assert_clean(b: &Client) {
    assert_eq!(one(b, "SHOW application_name").await, "");
    assert_eq!(one(b, "SHOW search_path").await, DEFAULT_PATH);
    assert_eq!(one(b, "SHOW statement_timeout").await, "0");
    assert_eq!(
        one(b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(
        one(b, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(one(b, "SELECT count(*) FROM pg_cursors").await, "0");
    assert_eq!(
        one(
            b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await,
        "0"
    );
    assert_eq!(
        one(b, "SELECT count(*) FROM pg_class WHERE relname = 'mine'").await,
        "0"
    );
}

/// Waits until A's session has been given back (its advisory lock released, or its backend gone).
async fn wait_released(env: &Env) {
    let direct = env.direct().await;
    for _ in 0..100 {
        let n = one(
            &direct,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await;
        if n == "0" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the first client's session was never given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_reset_leaves_nothing_of_the_previous_client() {
    let env = Env::start(PoolMode::Session, 1).await;
    exec(&env.direct().await, "CREATE SCHEMA elsewhere").await;
    let a = env.app().await;
    let a_pid = dirty_session(&a).await;
    drop(a);
    wait_released(&env).await;
    let b = env.app().await;
    assert_eq!(
        pid(&b).await,
        a_pid,
        "default reset: the connection is reused"
    );
    assert_clean(&b).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_server_reset_close_gives_a_fresh_backend() {
    let env = Env::start_with(
        |c| c.pool.server_reset = pgscale::config::ServerReset::Close,
        PoolMode::Session,
        1,
    )
    .await;
    exec(&env.direct().await, "CREATE SCHEMA elsewhere").await;
    let a = env.app().await;
    let a_pid = dirty_session(&a).await;
    drop(a);
    wait_released(&env).await;
    let b = env.app().await;
    assert_ne!(pid(&b).await, a_pid, "server_reset = close: a new backend");
    assert_clean(&b).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_write_splitting_a_pinned_client_reads_on_its_primary_server() {
    let env = Env::start_with_replicas(1, |_| {}, PoolMode::Transaction, 2).await;
    let a = env.app().await;
    // Plain reads may go to the replica before anything pins.
    exec(
        &a,
        "CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (7)",
    )
    .await;
    let a_pid = pid(&a).await;
    for _ in 0..5 {
        // A read of the temp table only works on the server that has it.
        assert_eq!(one(&a, "SELECT x FROM mine").await, "7");
        assert_eq!(one(&a, "SELECT pg_is_in_recovery()::text").await, "false");
        assert_eq!(pid(&a).await, a_pid);
    }
    let b = env.app().await;
    exec(&b, "BEGIN").await;
    assert_ne!(pid(&b).await, a_pid, "A's server was handed on");
    exec(&b, "COMMIT").await;
    env.stop().await;
}
