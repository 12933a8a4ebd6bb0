//! Read/write splitting against a real primary and two streaming replicas: where statements land (as
//! the servers themselves report it), read-only transactions, hints, volatile functions, and
//! read-your-writes with replay paused on every replica.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Env;
use pgscale::config::PoolMode;
use tokio_postgres::Client;

/// Where a query ran, as the server says: (in recovery, port).
async fn where_simple(client: &Client, sql: &str) -> (bool, i32) {
    let rows = client.simple_query(sql).await.expect(sql);
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql}"));
    let in_recovery = row.get(0).expect("column 0") == "t";
    let port = row.get(1).expect("column 1").parse().expect("port");
    (in_recovery, port)
}

/// Repeats `sql` (which reports `pg_is_in_recovery()` first) until it runs on a replica (`on_replica`)
/// or on the primary, for up to 10 s; `what` says what failed otherwise.
async fn wait_until_routed(client: &Client, sql: &str, on_replica: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while where_simple(client, sql).await.0 != on_replica {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rw_env() -> Env {
    Env::start_with_replicas(2, |_| {}, PoolMode::Transaction, 10).await
}

fn replica_ports(env: &Env) -> HashSet<i32> {
    env.replicas.iter().map(|r| i32::from(r.port())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_land_where_their_kind_says() {
    let env = rw_env().await;
    let primary_port = i32::from(env.pg.port());
    let replicas = replica_ports(&env);
    env.prepare_replicated(
            "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a');
             CREATE SEQUENCE s;
             CREATE FUNCTION where_am_i() RETURNS bool LANGUAGE sql VOLATILE AS 'select pg_is_in_recovery()';
             CREATE FUNCTION stable_where() RETURNS bool LANGUAGE sql STABLE AS 'select pg_is_in_recovery()';
             GRANT ALL ON ALL TABLES IN SCHEMA public TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;",
        ).await;
    let direct = env.direct().await;
    // `app` writes; `reader` never does, so read-your-writes never holds its reads on the primary.
    let app = env.app().await;
    let reader = env.app().await;
    let here = "pg_is_in_recovery(), inet_server_port()";

    for sql in [
        format!("select {here}"),
        format!("select {here} from t where id = 1"),
        format!("with x as (select * from t) select {here} from x"),
        format!("select {here} union all select {here} limit 1"),
        "select stable_where(), inet_server_port()".to_string(),
    ] {
        let (recovery, port) = where_simple(&reader, &sql).await;
        assert!(
            recovery && replicas.contains(&port),
            "read on a replica: {sql}"
        );
    }
    for sql in [
        format!("select {here} from t for update"),
        format!("select {here} from (select * from t for share) x"),
        format!("with i as (insert into t values (2, 'b') returning id) select {here} from i"),
        format!("select {here}, nextval('s')"),
        "select where_am_i(), inet_server_port()".to_string(),
        format!("/* pgscale: primary */ select {here}"),
    ] {
        let (recovery, port) = where_simple(&app, &sql).await;
        assert!(!recovery && port == primary_port, "on the primary: {sql}");
    }
    let (recovery, _) = where_simple(
        &reader,
        "/* pgscale: replica */ select where_am_i(), inet_server_port()",
    )
    .await;
    assert!(recovery, "a replica hint wins over a volatile function");

    // Extended protocol (tokio-postgres prepares named statements): decided at Parse, reused at Bind.
    for _ in 0..3 {
        let row = reader
            .query_one("select pg_is_in_recovery(), inet_server_port()", &[])
            .await
            .expect("extended read");
        assert!(row.get::<_, bool>(0), "extended read on a replica");
        let row = app
            .query_one(
                "select pg_is_in_recovery(), inet_server_port(), nextval('s')",
                &[],
            )
            .await
            .expect("extended write-ish read");
        assert!(!row.get::<_, bool>(0), "nextval on the primary");
    }

    // Transactions: read-only ones to a replica, others to the primary, whole.
    let (recovery, _) = where_simple(&app, &format!("begin; select {here}; commit")).await;
    assert!(!recovery, "a plain transaction runs on the primary");
    reader
        .batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin");
    let (recovery, first) = where_simple(&reader, &format!("select {here}")).await;
    let (_, second) = where_simple(&reader, &format!("select {here}")).await;
    reader.batch_execute("COMMIT").await.expect("commit");
    assert!(
        recovery && first == second,
        "a read-only transaction stays on one replica"
    );
    let (recovery, _) = where_simple(
        &reader,
        &format!("begin; set transaction read only; select {here}; commit"),
    )
    .await;
    assert!(recovery, "SET TRANSACTION READ ONLY in the same query");
    reader
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .expect("set");
    reader.batch_execute("BEGIN").await.expect("begin");
    let (recovery, _) = where_simple(&reader, &format!("select {here}")).await;
    reader.batch_execute("COMMIT").await.expect("commit");
    assert!(
        recovery,
        "default_transaction_read_only makes BEGIN read-only"
    );
    reader
        .batch_execute("RESET default_transaction_read_only")
        .await
        .expect("reset");

    // Writes land on the primary and are visible there.
    app.batch_execute("INSERT INTO t VALUES (10, 'written')")
        .await
        .expect("insert through the proxy");
    let n: i64 = direct
        .query_one("select count(*) from t where id = 10", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);

    // Hot standbys refuse SERIALIZABLE: such a client's reads stay on the primary (and work).
    let serializable = env.app().await;
    serializable
        .batch_execute("SET default_transaction_isolation = 'serializable'")
        .await
        .expect("set isolation");
    let (recovery, _) = where_simple(&serializable, &format!("select {here}")).await;
    assert!(!recovery, "a SERIALIZABLE client reads from the primary");
    let (recovery, _) = where_simple(
        &reader,
        &format!("begin isolation level serializable read only; select {here}; commit"),
    )
    .await;
    assert!(
        !recovery,
        "a SERIALIZABLE read-only transaction runs on the primary"
    );

    // A statement sqlparser cannot parse goes to the primary and is counted.
    let shared = env.proxy.as_ref().expect("proxy").shared().clone();
    let before = shared.plans.stats().unparsable;
    let (recovery, _) = where_simple(
        &reader,
        &format!("select {here} from t, lateral rows from (generate_series(1, 2)) x limit 1"),
    )
    .await;
    assert!(!recovery, "unparsable statements go to the primary");
    assert!(shared.plans.stats().unparsable > before, "and are counted");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_created_through_the_proxy_is_learnt() {
    let env = rw_env().await;
    let app = env.app().await;
    app.batch_execute(
        "CREATE FUNCTION later_fn() RETURNS bool LANGUAGE sql VOLATILE AS 'select pg_is_in_recovery()'",
    )
    .await
    .expect("create function through the proxy");
    env.wait_replicas_caught_up().await;
    // The catalog is re-read in the background after function DDL; within a few seconds the function
    // counts as a write.
    wait_until_routed(
        &app,
        "select later_fn(), inet_server_port()",
        false,
        "later_fn() never reached the primary",
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_own_writes_while_replicas_are_paused() {
    let env = rw_env().await;
    env.prepare_replicated("CREATE TABLE ryw (id int primary key); GRANT ALL ON ryw TO app")
        .await;
    let mut replica_clients = Vec::new();
    for replica in &env.replicas {
        let c = env.direct_to(replica).await;
        c.batch_execute("select pg_wal_replay_pause()")
            .await
            .expect("pause replay");
        replica_clients.push(c);
    }
    let app = env.app().await;
    let bystander = env.app().await;
    let mut on_primary = 0;
    for i in 0..50i32 {
        app.execute("INSERT INTO ryw VALUES ($1)", &[&i])
            .await
            .expect("insert");
        let row = app
            .query_one(
                "select count(*), pg_is_in_recovery() from ryw where id = $1",
                &[&i],
            )
            .await
            .expect("read back");
        assert_eq!(
            row.get::<_, i64>(0),
            1,
            "read {i} missed the client's own write"
        );
        if !row.get::<_, bool>(1) {
            on_primary += 1;
        }
    }
    assert_eq!(
        on_primary, 50,
        "with replay paused, own-write reads go to the primary"
    );
    // A client that wrote nothing still reads from a replica (it sees the paused snapshot).
    let row = bystander
        .query_one("select count(*), pg_is_in_recovery() from ryw", &[])
        .await
        .expect("bystander read");
    assert!(
        row.get::<_, bool>(1),
        "a client without writes reads from replicas"
    );
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the paused replicas have none of the rows"
    );

    for c in &replica_clients {
        c.batch_execute("select pg_wal_replay_resume()")
            .await
            .expect("resume replay");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = app
            .query_one("select count(*), pg_is_in_recovery() from ryw", &[])
            .await
            .expect("read after resume");
        assert_eq!(row.get::<_, i64>(0), 50, "every write visible");
        if row.get::<_, bool>(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads never went back to the replicas"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_consistency_reads_from_replicas_right_after_a_write() {
    let env = Env::start_with_replicas(
        1,
        |c| c.routing.consistency = pgscale::config::Consistency::Eventual,
        PoolMode::Transaction,
        10,
    )
    .await;
    env.prepare_replicated("CREATE TABLE ev (id int); GRANT ALL ON ev TO app")
        .await;
    let app = env.app().await;
    app.batch_execute("INSERT INTO ev VALUES (1)")
        .await
        .expect("insert");
    let (recovery, _) = where_simple(&app, "select pg_is_in_recovery(), inet_server_port()").await;
    assert!(
        recovery,
        "eventual: the read after a write goes to the replica"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_and_writes_each_find_their_server() {
    // Eventual consistency, so the reads really go to replicas right after this client's writes.
    let env = Env::start_with_replicas(
        2,
        |c| c.routing.consistency = pgscale::config::Consistency::Eventual,
        PoolMode::Transaction,
        10,
    )
    .await;
    env.prepare_replicated("CREATE TABLE pipe (id int primary key); GRANT ALL ON pipe TO app")
        .await;
    // tokio-postgres pipelines concurrent queries on one connection: a read's batch and a write's
    // batch arrive back to back, and the write must not follow the read to a replica.
    let client = env.app().await;
    let write = client
        .prepare("INSERT INTO pipe VALUES ($1)")
        .await
        .expect("prepare write");
    let read = client
        .prepare("SELECT pg_is_in_recovery() FROM pipe LIMIT 1")
        .await
        .expect("prepare read");
    for i in 0..200i32 {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&i];
        let (r, w, r2) = tokio::join!(
            client.query(&read, &[]),
            client.execute(&write, &params),
            client.simple_query("SELECT 1"),
        );
        r.expect("pipelined read");
        w.unwrap_or_else(|e| panic!("pipelined write {i}: {e}"));
        r2.expect("pipelined simple read");
    }
    let n: i64 = env
        .direct()
        .await
        .query_one("select count(*) from pipe", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 200);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_take_no_reads_until_they_catch_up() {
    let env = Env::start_with_replicas(
        2,
        |c| {
            // Only the byte limit acts here (no time limit), so this test shows that one.
            c.routing.max_replica_lag_bytes = 64 * 1024;
            c.routing.max_replica_lag_ms = 0;
        },
        PoolMode::Transaction,
        10,
    )
    .await;
    env.prepare_replicated("CREATE TABLE lag (id int, pad text); GRANT ALL ON lag TO app")
        .await;
    let reader = env.app().await;
    let (recovery, _) =
        where_simple(&reader, "select pg_is_in_recovery(), inet_server_port()").await;
    assert!(recovery, "fresh replicas take reads");
    let mut paused = Vec::new();
    for replica in &env.replicas {
        let c = env.direct_to(replica).await;
        c.batch_execute("select pg_wal_replay_pause()")
            .await
            .expect("pause replay");
        paused.push(c);
    }
    // About 1 MB of WAL the replicas do not replay: far over the 64 kB limit.
    env.direct()
        .await
        .batch_execute("INSERT INTO lag SELECT g, repeat('x', 500) FROM generate_series(1, 2000) g")
        .await
        .expect("write WAL");
    wait_until_routed(
        &reader,
        "select pg_is_in_recovery(), inet_server_port()",
        false,
        "lagging replicas kept taking reads",
    )
    .await;
    for c in &paused {
        c.batch_execute("select pg_wal_replay_resume()")
            .await
            .expect("resume replay");
    }
    wait_until_routed(
        &reader,
        "select pg_is_in_recovery(), inet_server_port()",
        true,
        "caught-up replicas never took reads again",
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_fail_refuses_reads_clearly_when_none_qualifies() {
    let env = Env::start_with_replicas(
        1,
        |c| c.routing.no_replica = pgscale::config::NoReplica::Fail,
        PoolMode::Transaction,
        10,
    )
    .await;
    env.prepare_replicated("CREATE TABLE nr (id int); GRANT ALL ON nr TO app")
        .await;
    let reader = env.app().await;
    reader
        .simple_query("select count(*) from nr")
        .await
        .expect("read while the replica is up");
    env.replicas[0].kill9().expect("kill the only replica");
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match reader.simple_query("select count(*) from nr").await {
            Err(e) if common::sqlstate(&e).as_deref() == Some("57P03") => break e,
            Err(e) => panic!("unexpected error: {e}"),
            // Until the breaker opens, a failed connect moves the read on; with no replica left and
            // no_replica = "fail", the read is refused.
            Ok(_) => {
                assert!(Instant::now() < deadline, "reads never refused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("no replica"), "{message}");
    // The session stays usable, and writes still go to the primary.
    reader
        .batch_execute("INSERT INTO nr VALUES (1)")
        .await
        .expect("write after a refused read");
    env.stop().await;
}
