//! Sharded routing under client message sequences that drivers send but simple tests do not: named
//! statements parsed and run in one unit, Flush-ended units, deferred transactions that fail early,
//! portal Close in a fan-out, pipelining, FunctionCall, COPY of an unsharded table, RETURNING of a
//! split INSERT and a two-phase commit whose phase one fails. Each test asserts what a plain
//! Postgres answers (or pgscale's documented refusal), against three real shards; every read from
//! the proxy has a timeout, so a hang fails the test.

mod common;

use common::raw::{
    bind, close, describe, execute, flush, frame, function_call, parse, query_frame, sync,
};
use common::{within, Env};
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};
use tokio_postgres::types::ToSql;

/// Three shards with the sample schema, usable by the raw client's `trustuser` too.
async fn start() -> Env {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;
    env.exec_on_all_shards("GRANT ALL ON users, pitches TO trustuser")
        .await;
    env
}

/// Parse (as `statement`), Bind with `params`, Execute, then `end` (Sync or Flush): one unit.
fn unit(statement: &str, sql: &str, params: &[&str], end: Vec<u8>) -> Vec<u8> {
    let mut out = parse(statement, sql);
    out.extend(bind("", statement, params));
    out.extend(execute());
    out.extend(end);
    out
}

const INSERT_USER: &str = "INSERT INTO users (id, name) VALUES ($1, 'x')";

/// A named statement parsed, bound and executed in one unit (pgjdbc past `prepareThreshold`,
/// node-postgres `name:`) is routed by its key on first use: each row lands on its key's shard,
/// inside `BEGIN` it is rolled back by `ROLLBACK`, and a key-less read sent that way fans out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statement_parsed_and_run_in_one_unit_is_routed_by_its_key() {
    let env = start().await;
    let mut c = env.raw().await;
    let keys: Vec<i64> = (0..3).map(|shard| env.user_key_on(shard, 100)).collect();
    for (i, key) in keys.iter().enumerate() {
        let named = unit(&format!("ins{i}"), INSERT_USER, &[&key.to_string()], sync());
        assert_eq!(
            c.round_trip(&named).await,
            "1 2 C(INSERT 0 1) Z(I)",
            "key {key}"
        );
        assert_eq!(
            env.shards_with_user(*key).await,
            vec![env.user_shard(*key)],
            "key {key} is on its shard only"
        );
    }
    let read = unit(
        "read",
        "SELECT id FROM users WHERE id = $1",
        &[&keys[2].to_string()],
        sync(),
    );
    assert_eq!(
        c.round_trip(&read).await,
        format!("1 2 D({}) C(SELECT 1) Z(I)", keys[2])
    );

    // Inside a transaction: the row is the transaction's, and ROLLBACK takes it away.
    let key = env.user_key_on(1, 1_000);
    assert_eq!(c.round_trip(&query_frame("BEGIN")).await, "C(BEGIN) Z(T)");
    let named = unit("tx_ins", INSERT_USER, &[&key.to_string()], sync());
    assert_eq!(c.round_trip(&named).await, "1 2 C(INSERT 0 1) Z(T)");
    assert_eq!(
        c.round_trip(&query_frame("ROLLBACK")).await,
        "C(ROLLBACK) Z(I)"
    );
    assert_eq!(env.shards_with_user(key).await, Vec::<usize>::new());

    // A key-less read: every shard's rows, merged in order.
    let all = unit("all", "SELECT id FROM users ORDER BY id", &[], sync());
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let rows: Vec<String> = sorted.iter().map(|k| format!("D({k})")).collect();
    assert_eq!(
        c.round_trip(&all).await,
        format!("1 2 {} C(SELECT 3) Z(I)", rows.join(" "))
    );
    env.stop().await;
}

/// A unit ended by Flush keeps its server (and so its shard) until Sync: the next unit, for
/// another shard, is refused (0A000) rather than written to the first shard, and neither row is
/// committed anywhere (the refusal fails the implicit transaction, as any error before Sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_for_another_shard_after_a_flush_is_refused() {
    let env = start().await;
    let (a, b) = (env.user_key_on(1, 200), env.user_key_on(2, 200));
    let mut c = env.raw().await;
    c.send(&unit("", INSERT_USER, &[&a.to_string()], flush()))
        .await;
    assert_eq!(c.trace_until(b'C').await, "1 2 C(INSERT 0 1)");
    let second = unit("", INSERT_USER, &[&b.to_string()], sync());
    assert_eq!(c.round_trip(&second).await, "E(0A000) Z(I)");
    assert_eq!(
        env.shards_with_user(b).await,
        Vec::<usize>::new(),
        "the refused row is nowhere"
    );
    assert_eq!(
        env.shards_with_user(a).await,
        Vec::<usize>::new(),
        "the flushed row went with the failed implicit transaction"
    );
    assert_eq!(c.query("SELECT 1").await, Ok(vec!["1".to_string()]));
    env.stop().await;
}

/// `COPY FROM STDIN` into a table not in `[sharding]` (created through the proxy, so on the
/// default shard) runs there to completion instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_an_unsharded_table_completes_on_the_default_shard() {
    let env = start().await;
    let app = within("connect", env.app()).await;
    for sql in [
        "CREATE TABLE notes (id int, body text)",
        "GRANT ALL ON notes TO trustuser",
    ] {
        within(sql, app.batch_execute(sql)).await.expect(sql);
    }
    let mut c = env.raw().await;
    c.send(&query_frame("COPY notes FROM STDIN")).await;
    assert_eq!(c.trace_until(b'G').await, "G");
    let mut data = frame(b'd', b"1\thello\n2\tworld\n");
    data.extend(frame(b'c', b""));
    assert_eq!(c.round_trip(&data).await, "C(COPY 2) Z(I)");
    assert_eq!(
        c.query("SELECT body FROM notes ORDER BY id").await,
        Ok(vec!["hello".to_string(), "world".to_string()])
    );
    // Created on every shard (one schema everywhere); its rows are on the default shard only.
    assert_eq!(env.shards_with_table("notes").await, vec![0, 1, 2]);
    for shard in 0..3 {
        let rows = env.shard_i64(shard, "select count(*) from notes").await;
        assert_eq!(rows, if shard == 0 { 2 } else { 0 }, "shard {shard}");
    }
    env.stop().await;
}

/// Runs a multi-row INSERT … RETURNING id of users `keys` (in that order) through the proxy;
/// returns the trace of its answer.
async fn insert_returning(env: &Env, keys: &[i64]) -> String {
    let values: Vec<String> = keys.iter().map(|k| format!("({k}, 'r')")).collect();
    env.raw()
        .await
        .round_trip(&query_frame(&format!(
            "INSERT INTO users (id, name) VALUES {} RETURNING id",
            values.join(", ")
        )))
        .await
}

/// A multi-row INSERT … RETURNING whose rows span shards (split, two-phase commit) returns every
/// inserted row and the total count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_insert_returning_returns_every_row() {
    let env = start().await;
    let keys: Vec<i64> = (0..3).map(|shard| env.user_key_on(shard, 300)).collect();
    let trace = insert_returning(&env, &keys).await;
    let rows = trace
        .strip_prefix("T ")
        .and_then(|t| t.strip_suffix(" C(INSERT 0 3) Z(I)"))
        .unwrap_or_else(|| panic!("{trace}"));
    let mut returned: Vec<&str> = rows.split(' ').collect();
    returned.sort_unstable();
    let mut expected: Vec<String> = keys.iter().map(|k| format!("D({k})")).collect();
    expected.sort_unstable();
    assert_eq!(returned, expected, "{trace}");
    for key in keys {
        assert_eq!(env.shards_with_user(key).await, vec![env.user_shard(key)]);
    }
    env.stop().await;
}

/// A split INSERT … RETURNING returns its rows in the order of its VALUES, as Postgres does (ORMs
/// such as Django's `bulk_create` pair returned ids with their objects by position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_insert_returning_keeps_the_values_order() {
    let env = start().await;
    let keys: Vec<i64> = [2, 0, 1, 2, 0]
        .iter()
        .zip(1..)
        .map(|(shard, i)| env.user_key_on(*shard, 100 * i))
        .collect();
    let rows: Vec<String> = keys.iter().map(|k| format!("D({k})")).collect();
    assert_eq!(
        insert_returning(&env, &keys).await,
        format!("T {} C(INSERT 0 5) Z(I)", rows.join(" "))
    );
    env.stop().await;
}

/// A statement refused as the first of a transaction (a key-less read inside `BEGIN`) leaves the
/// transaction aborted, as a failed statement does in Postgres: `Z(E)`, then 25P02 for the next
/// statement, `ROLLBACK` back to `Z(I)`, and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_first_statement_aborts_the_transaction() {
    let env = start().await;
    let key = env.user_key_on(1, 400);
    let mut c = env.raw().await;
    assert_eq!(c.round_trip(&query_frame("BEGIN")).await, "C(BEGIN) Z(T)");
    let refused = c
        .round_trip(&query_frame("SELECT count(*) FROM users"))
        .await;
    assert_eq!(refused, "E(0A000) Z(E)");
    let insert = format!("INSERT INTO users (id, name) VALUES ({key}, 'after-error')");
    assert_eq!(c.round_trip(&query_frame(&insert)).await, "E(25P02) Z(E)");
    assert_eq!(
        c.round_trip(&query_frame("ROLLBACK")).await,
        "C(ROLLBACK) Z(I)"
    );
    assert_eq!(env.shards_with_user(key).await, Vec::<usize>::new());
    assert_eq!(
        c.round_trip(&query_frame(&insert)).await,
        "C(INSERT 0 1) Z(I)"
    );
    env.stop().await;
}

/// After `BEGIN` (deferred until a statement names a shard), a prepare-only unit, a lone Sync and
/// `COMMIT AND CHAIN` report the transaction as open (`Z(T)`), as Postgres does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_transaction_reports_in_transaction_to_prepare_and_sync() {
    let env = start().await;
    let mut c = env.raw().await;
    assert_eq!(c.round_trip(&query_frame("BEGIN")).await, "C(BEGIN) Z(T)");
    let mut prepare = parse("p1", "SELECT name FROM users WHERE id = $1");
    prepare.extend(describe(b'S', "p1"));
    prepare.extend(sync());
    assert_eq!(c.round_trip(&prepare).await, "1 t T Z(T)");
    assert_eq!(c.round_trip(&sync()).await, "Z(T)");
    assert_eq!(
        c.round_trip(&query_frame("COMMIT AND CHAIN")).await,
        "C(COMMIT) Z(T)"
    );
    assert_eq!(
        c.round_trip(&query_frame("ROLLBACK")).await,
        "C(ROLLBACK) Z(I)"
    );
    env.stop().await;
}

/// Inside a transaction bound to one shard, a Flush-ended unit for another shard is refused at
/// once; the client's Sync then reports the transaction failed (`Z(E)`) and `COMMIT` is answered
/// `ROLLBACK`: the transaction's earlier row is not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_flush_unit_inside_a_transaction_fails_it_at_sync() {
    let env = start().await;
    let (a, b) = (env.user_key_on(1, 500), env.user_key_on(2, 500));
    let mut c = env.raw().await;
    let begin = format!("BEGIN; INSERT INTO users (id, name) VALUES ({a}, 'tx-a')");
    assert_eq!(
        c.round_trip(&query_frame(&begin)).await,
        "C(BEGIN) C(INSERT 0 1) Z(T)"
    );
    c.send(&unit("", INSERT_USER, &[&b.to_string()], flush()))
        .await;
    assert_eq!(c.trace_until(b'E').await, "E(0A000)");
    assert_eq!(c.round_trip(&sync()).await, "Z(E)");
    assert_eq!(
        c.round_trip(&query_frame("COMMIT")).await,
        "C(ROLLBACK) Z(I)"
    );
    assert_eq!(env.shards_with_user(a).await, Vec::<usize>::new());
    assert_eq!(env.shards_with_user(b).await, Vec::<usize>::new());
    env.stop().await;
}

/// A fan-out read whose unit describes, executes and closes its portal gets every answer, in the
/// order Postgres sends them: ParseComplete, BindComplete, RowDescription, the merged row,
/// CommandComplete, CloseComplete, ReadyForQuery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_read_with_a_portal_close_answers_in_order() {
    let env = start().await;
    let keys: Vec<i64> = (0..3).map(|shard| env.user_key_on(shard, 600)).collect();
    let app = within("connect", env.app()).await;
    for key in &keys {
        within("insert", app.execute(INSERT_USER, &[key]))
            .await
            .expect("insert");
    }
    let mut c = env.raw().await;
    let mut read = parse("", "SELECT count(*) FROM users");
    read.extend(bind("", "", &[]));
    read.extend(describe(b'P', ""));
    read.extend(execute());
    read.extend(close(b'P', ""));
    read.extend(sync());
    assert_eq!(c.round_trip(&read).await, "1 2 T D(3) C(SELECT 1) 3 Z(I)");
    env.stop().await;
}

/// Pipelined statements of one tokio-postgres client (sent before the first is answered) are
/// routed one at a time: keyed reads for three shards each get their own row, and inside a
/// transaction statements for its shard all run (no hang) and commit there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_are_routed_one_at_a_time() {
    let env = start().await;
    let keys: Vec<i64> = (0..3).map(|shard| env.user_key_on(shard, 700)).collect();
    let mut app = within("connect", env.app()).await;
    let insert = within(
        "prepare",
        app.prepare("INSERT INTO users (id, name) VALUES ($1, $2)"),
    )
    .await
    .expect("prepare insert");
    for key in &keys {
        within(
            "insert",
            app.execute(&insert, &[key, &format!("user {key}")]),
        )
        .await
        .expect("insert");
    }
    let select = within(
        "prepare",
        app.prepare("SELECT name FROM users WHERE id = $1"),
    )
    .await
    .expect("prepare select");
    let params: Vec<[&(dyn ToSql + Sync); 1]> = keys.iter().map(|k| [k as _]).collect();
    let (r0, r1, r2) = within("pipelined reads", async {
        tokio::join!(
            app.query_one(&select, &params[0]),
            app.query_one(&select, &params[1]),
            app.query_one(&select, &params[2]),
        )
    })
    .await;
    for (key, row) in keys.iter().zip([r0, r1, r2]) {
        let name: String = row.expect("pipelined keyed read").get(0);
        assert_eq!(name, format!("user {key}"));
    }

    // A transaction on shard 1, then three pipelined statements for that shard.
    let (k1, k2) = (keys[1], env.user_key_on(1, keys[1] + 1));
    let count = within(
        "prepare",
        app.prepare("SELECT count(*) FROM pitches WHERE user_id = $1"),
    )
    .await
    .expect("prepare");
    let tx = within("begin", app.transaction()).await.expect("begin");
    within(
        "update",
        tx.execute("UPDATE users SET name = 'tx' WHERE id = $1", &[&k1]),
    )
    .await
    .expect("first statement binds the shard");
    let insert_params: [&(dyn ToSql + Sync); 2] = [&k2, &"pipelined"];
    let select_params: [&(dyn ToSql + Sync); 1] = [&k1];
    let (inserted, read, counted) = within("pipelined statements in a transaction", async {
        tokio::join!(
            tx.execute(&insert, &insert_params),
            tx.query_one(&select, &select_params),
            tx.query_one(&count, &select_params),
        )
    })
    .await;
    assert_eq!(inserted.expect("pipelined insert"), 1);
    assert_eq!(read.expect("pipelined read").get::<_, String>(0), "tx");
    assert_eq!(counted.expect("pipelined count").get::<_, i64>(0), 0);
    within("commit", tx.commit()).await.expect("commit");
    assert_eq!(env.shards_with_user(k2).await, vec![1]);
    env.stop().await;
}

/// Creates the table `notes` and the functions `one()` and `bump()` (which writes a note) on every
/// shard; returns their oids, the same on every shard.
async fn create_functions(env: &Env) -> (u32, u32) {
    env.exec_on_all_shards(
        "CREATE TABLE notes (id int, body text); GRANT ALL ON notes TO trustuser;\
         CREATE FUNCTION one() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS \
         $$ INSERT INTO notes VALUES (42, 'fn') RETURNING 1 $$",
    )
    .await;
    let mut oids = Vec::new();
    for shard in 0..env.shard_count() {
        let row = env
            .direct_to_shard(shard)
            .await
            .query_one("select 'one'::regproc::oid, 'bump'::regproc::oid", &[])
            .await
            .expect("oids");
        oids.push((row.get(0), row.get(1)));
    }
    assert!(oids.windows(2).all(|w| w[0] == w[1]), "{oids:?}");
    oids[0]
}

/// The notes on each shard's primary.
async fn notes_by_shard(env: &Env) -> Vec<i64> {
    let mut counts = Vec::new();
    for shard in 0..env.shard_count() {
        counts.push(env.shard_i64(shard, "select count(*) from notes").await);
    }
    counts
}

/// A FunctionCall message (libpq `PQfn`, large objects) outside a transaction is answered —
/// FunctionCallResponse or an ErrorResponse, then ReadyForQuery — instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_answered() {
    let env = start().await;
    let (one, _) = create_functions(&env).await;
    let mut c = env.raw().await;
    let answer = c.round_trip(&function_call(one)).await;
    assert!(
        answer == "V Z(I)" || (answer.starts_with("E(") && answer.ends_with(") Z(I)")),
        "{answer}"
    );
    assert_eq!(c.query("SELECT 1").await, Ok(vec!["1".to_string()]));
    env.stop().await;
}

/// A FunctionCall inside a transaction is part of it, deferred (`BEGIN` alone) or bound to a
/// shard: what the function writes is gone after `ROLLBACK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_inside_a_transaction_is_rolled_back_with_it() {
    let env = start().await;
    let (_, bump) = create_functions(&env).await;
    let key = env.user_key_on(1, 900);
    let mut c = env.raw().await;
    for begin in [
        "BEGIN".to_string(),
        format!("BEGIN; UPDATE users SET name = 'x' WHERE id = {key}"),
    ] {
        let begun = c.round_trip(&query_frame(&begin)).await;
        assert!(
            begun.starts_with("C(BEGIN) ") && begun.ends_with(" Z(T)"),
            "{begun}"
        );
        let answer = c.round_trip(&function_call(bump)).await;
        assert!(
            answer == "V Z(T)" || (answer.starts_with("E(") && answer.ends_with(") Z(E)")),
            "{begin}: {answer}"
        );
        assert_eq!(
            c.round_trip(&query_frame("ROLLBACK")).await,
            "C(ROLLBACK) Z(I)"
        );
        assert_eq!(
            notes_by_shard(&env).await,
            vec![0, 0, 0],
            "{begin}: rolled back"
        );
    }
    env.stop().await;
}

/// A statement that names no table (`SELECT 1`, as ORMs and pool checks send) inside a
/// transaction bound to a shard runs there, as it would on one Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_less_statement_runs_on_the_transaction_shard() {
    let env = start().await;
    let key = env.user_key_on(1, 900);
    let mut c = env.raw().await;
    let begin = format!("BEGIN; UPDATE users SET name = 'x' WHERE id = {key}");
    assert_eq!(
        c.round_trip(&query_frame(&begin)).await,
        "C(BEGIN) C(UPDATE 0) Z(T)"
    );
    assert_eq!(
        c.round_trip(&query_frame("SELECT 1")).await,
        "T D(1) C(SELECT 1) Z(T)"
    );
    let extended = unit("", "SELECT 1", &[], sync());
    assert_eq!(c.round_trip(&extended).await, "1 2 D(1) C(SELECT 1) Z(T)");
    assert_eq!(c.round_trip(&query_frame("COMMIT")).await, "C(COMMIT) Z(I)");
    env.stop().await;
}

/// Two-phase commit of a split INSERT whose phase one fails on one shard (its backend terminated
/// while it waits on a row lock): the client gets an error, no shard keeps a prepared transaction
/// or a row, and the same INSERT then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_phase_one_leaves_no_prepared_transaction() {
    let env = start().await;
    let (k0, k2) = (env.user_key_on(0, 800), env.user_key_on(2, 800));
    let blocker = env.direct_to_shard(2).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO users (id, name) VALUES ({k2}, 'blocker')"
        ))
        .await
        .expect("hold the row lock");
    let app = within("connect", env.app()).await;
    let sql = format!("INSERT INTO users (id, name) VALUES ({k0}, 'twophase'), ({k2}, 'twophase')");
    let insert = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let result = app.batch_execute(&sql).await;
            (app, result)
        })
    };
    // Shard 2's part waits for the blocker's row: end that backend.
    let watcher = env.direct_to_shard(2).await;
    let waiting = "select pid from pg_stat_activity \
                   where wait_event_type = 'Lock' and query like '%twophase%'";
    let mut found = false;
    for _ in 0..100 {
        if !watcher
            .query(waiting, &[])
            .await
            .expect("activity")
            .is_empty()
        {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "shard 2's part of the insert waits on the blocker's row"
    );
    watcher
        .batch_execute(&format!(
            "select pg_terminate_backend(pid) from ({waiting}) w"
        ))
        .await
        .expect("terminate");
    let (app, result) = within("the split insert", insert).await.expect("join");
    let error = result.expect_err("a shard failed in phase one");
    blocker.batch_execute("ROLLBACK").await.expect("release");
    for shard in 0..3 {
        let prepared = env
            .shard_i64(shard, "select count(*) from pg_prepared_xacts")
            .await;
        assert_eq!(
            prepared, 0,
            "shard {shard} keeps a prepared transaction ({error})"
        );
    }
    for key in [k0, k2] {
        assert_eq!(
            env.shards_with_user(key).await,
            Vec::<usize>::new(),
            "{key}"
        );
    }
    within("the retried insert", app.batch_execute(&sql))
        .await
        .expect("the retry succeeds");
    for key in [k0, k2] {
        assert_eq!(env.shards_with_user(key).await, vec![env.user_shard(key)]);
    }
    env.stop().await;
}
