//! What one client leaves behind must never reach the next one on the same server connection: an
//! extended-protocol unit cut off before its `Sync`, a FATAL of its own server, a cancel request
//! that arrives after its query finished. `pool_size` 1 makes every hand-over deterministic.

mod common;

use std::time::Duration;

use common::raw::{self, RawClient};
use common::{sqlstate, within, Env};
use pgscale::config::PoolMode;
use tokio_postgres::NoTls;

/// A client whose extended unit failed (error read after `Flush`) and who left before `Sync`: the
/// server skips everything up to a `Sync`, so handing it on as it is hangs the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errored_unit_cut_off_before_sync_is_not_handed_on() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let env = Env::start(mode, 1).await;
        let failing_units: [(&str, Vec<u8>); 2] = [
            ("parse", [raw::parse("", "selec 1"), raw::flush()].concat()),
            (
                "bind",
                [
                    raw::parse("", "select $1::int"),
                    raw::bind("", "", &["not a number"]),
                    raw::flush(),
                ]
                .concat(),
            ),
        ];
        for (what, unit) in failing_units {
            let mut first = env.raw().await;
            first.send(&unit).await;
            let trace = first.trace_until(b'E').await;
            assert!(trace.ends_with(")"), "{mode:?} {what}: {trace}");
            assert!(!trace.contains("TIMEOUT"), "{mode:?} {what}: {trace}");
            drop(first);

            let mut next = env.raw().await;
            let answer = within(
                &format!("{mode:?} {what}: next client"),
                next.query("select 1"),
            )
            .await;
            assert_eq!(answer, Ok(vec!["1".to_string()]), "{mode:?} {what}");
            let trace = next
                .round_trip(
                    &[
                        raw::parse("", "select 2"),
                        raw::bind("", "", &[]),
                        raw::execute(),
                        raw::sync(),
                    ]
                    .concat(),
                )
                .await;
            assert_eq!(trace, "1 2 D(2) C(SELECT 1) Z(I)", "{mode:?} {what}");
        }
        env.stop().await;
    }
}

/// A unit that ran without error but never reached its `Sync` is still an open (implicit)
/// transaction: the next client must neither run inside it nor commit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_unit_of_a_gone_client_is_neither_reused_nor_committed() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    env.app()
        .await
        .batch_execute("create table handoff_t (id int); grant all on handoff_t to public")
        .await
        .expect("create");
    let mut first = env.raw().await;
    first
        .send(
            &[
                raw::parse("", "insert into handoff_t values (1)"),
                raw::bind("", "", &[]),
                raw::execute(),
                raw::flush(),
            ]
            .concat(),
        )
        .await;
    assert_eq!(first.trace_until(b'C').await, "1 2 C(INSERT 0 1)");
    drop(first);

    let mut next = env.raw().await;
    let count = within("next client", next.query("select count(*) from handoff_t")).await;
    assert_eq!(
        count,
        Ok(vec!["0".to_string()]),
        "saw the gone client's row"
    );
    let direct = env.direct().await;
    let row = direct
        .query_one("select count(*) from handoff_t", &[])
        .await
        .expect("count");
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the gone client's insert was committed"
    );
    env.stop().await;
}

/// The backend pid of the server connection `client` holds (it must be inside a transaction).
async fn backend_pid(client: &mut RawClient) -> i32 {
    let rows = client
        .query("select pg_backend_pid()")
        .await
        .expect("backend pid");
    rows[0].parse().expect("pid")
}

/// Counts `ErrorResponse`s (by SQLSTATE) until the proxy closes the connection.
async fn errors_until_eof(client: &mut RawClient) -> Vec<String> {
    let mut codes = Vec::new();
    within("errors until EOF", async {
        while let Some((tag, body)) = raw::read_msg(&mut client.stream).await {
            if tag == b'E' {
                codes.push(raw::error_code(&body));
            }
        }
    })
    .await;
    codes
}

/// The server's own FATAL reaches the client once, and nothing of the proxy's follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fatal_is_forwarded_once() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let env = Env::start(mode, 2).await;
        let direct = env.direct().await;
        let mut client = env.raw().await;
        assert_eq!(client.query("begin").await, Ok(vec![]));
        let pid = backend_pid(&mut client).await;
        direct
            .execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        let codes = errors_until_eof(&mut client).await;
        assert_eq!(codes, vec!["57P01".to_string()], "{mode:?}");
        env.stop().await;
    }
}

/// Clients' own backends terminated by an administrator are not a failing primary: the breaker
/// stays closed and the next client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_do_not_open_the_breaker() {
    let threshold = pgscale::config::HealthConfig::default().failure_threshold as usize;
    let n = threshold + 2;
    let env = Env::start(PoolMode::Transaction, n + 1).await;
    let direct = env.direct().await;
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = env.raw().await;
        assert_eq!(client.query("begin").await, Ok(vec![]));
        let pid = backend_pid(&mut client).await;
        clients.push((client, pid));
    }
    // All at once, as an administrator clearing sessions would.
    let pids: Vec<i32> = clients.iter().map(|(_, pid)| *pid).collect();
    direct
        .execute(
            "select pg_terminate_backend(p) from unnest($1::int[]) p",
            &[&pids],
        )
        .await
        .expect("terminate");
    // Each session saw its FATAL and ended before the breaker is looked at.
    let mut first_errors = Vec::new();
    for (client, _) in &mut clients {
        first_errors.push(errors_until_eof(client).await.first().cloned());
    }
    let fresh = within(
        "fresh client login",
        common::try_connect(&env.conn_str(
            common::APP_USER,
            common::APP_PASSWORD,
            common::APP_USER,
        )),
    )
    .await
    .unwrap_or_else(|e| {
        let message = e.as_db_error().map(|d| d.message().to_string());
        panic!("fresh client refused: {:?} {message:?}", sqlstate(&e))
    });
    let rows = within("fresh client", common::simple_rows(&fresh, "select 1"))
        .await
        .unwrap_or_else(|e| panic!("fresh client refused: {e} ({:?})", sqlstate(&e)));
    assert_eq!(rows, vec![vec![Some("1".to_string())]]);
    let admin = env.admin().await;
    let shards = common::simple_rows(&admin, "SHOW SHARDS")
        .await
        .expect("show shards");
    let primary = shards
        .iter()
        .find(|r| r[4].as_deref() == Some("primary"))
        .expect("primary row");
    assert_eq!(primary[9].as_deref(), Some("closed"), "{primary:?}");
    assert_eq!(primary[10].as_deref(), Some("0"), "{primary:?}");
    assert!(
        first_errors.iter().all(|e| e.as_deref() == Some("57P01")),
        "{first_errors:?}"
    );
    env.stop().await;
}

/// A cancel request sent just after the client's query returned must not cancel whatever the
/// next client runs on that same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_cancel_never_hits_the_next_client() {
    let env = Env::start(PoolMode::Transaction, 1).await;
    let canceller = env.app().await;
    let victim = env.app().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let victim_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = victim.simple_query("select pg_sleep(0.05)").await {
                    return Err(format!("victim's query {runs}: {e} ({:?})", sqlstate(&e)));
                }
                runs += 1;
            }
            Ok(runs)
        })
    };
    let token = canceller.cancel_token();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut cancels = 0u32;
    while tokio::time::Instant::now() < deadline && !victim_task.is_finished() {
        // The cancel comes after the canceller's query returned (it is idle in its transaction)
        // and races its COMMIT: once that is done the connection serves the victim.
        within("canceller's begin", canceller.simple_query("begin"))
            .await
            .expect("begin");
        let (own, sent) = within("canceller", async {
            tokio::join!(canceller.simple_query("commit"), token.cancel_query(NoTls))
        })
        .await;
        sent.expect("send cancel");
        if let Err(e) = own {
            // A cancel that reached the COMMIT itself stopped the canceller's own query: fair.
            assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "canceller: {e}");
            within("rollback", canceller.simple_query("rollback"))
                .await
                .expect("rollback");
        }
        cancels += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = within("victim", victim_task)
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("after {cancels} late cancels: {e}"));
    assert!(runs > 10 && cancels > 10, "runs {runs}, cancels {cancels}");
    env.stop().await;
}

/// A cancel of a query that is running still stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_query_still_works() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let env = Env::start(mode, 1).await;
        let client = env.app().await;
        let token = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(10)").await });
        let direct = env.direct().await;
        within("sleep running", async {
            loop {
                let row = direct
                    .query_one(
                        "select count(*) from pg_stat_activity where query = 'select pg_sleep(10)'",
                        &[],
                    )
                    .await
                    .expect("activity");
                if row.get::<_, i64>(0) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        within("cancel", token.cancel_query(NoTls))
            .await
            .expect("send cancel");
        let err = within("cancelled query", sleeper)
            .await
            .expect("join")
            .expect_err("query cancelled");
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{mode:?}: {err}");
        env.stop().await;
    }
}
