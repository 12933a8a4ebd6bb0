//! The proxy's side of a resharding cutover: `RESHARD FREEZE` holds writes to the keys the new
//! config moves (only those), `RESHARD SWITCH` routes them to the new shard, `RESHARD ABORT` and
//! the freeze's own timeout release them on the old ring; refusals carry their SQLSTATEs.

mod common;
#[path = "common/reshard_proxy.rs"]
mod reshard_proxy;

use std::time::Duration;

use common::{simple_rows, sqlstate, within};
use reshard_proxy::{show_reshard, Reshard};
use tokio::task::JoinHandle;

/// A held INSERT of user `id` on its own client, in the background.
async fn insert_in_background(
    r: &Reshard,
    id: i64,
) -> JoinHandle<Result<u64, tokio_postgres::Error>> {
    let client = r.env.app().await;
    tokio::spawn(async move {
        client
            .execute("INSERT INTO users (id, name) VALUES ($1, 'held')", &[&id])
            .await
    })
}

/// Waits until SHOW RESHARD counts `n` waiting sessions.
async fn until_waiting(admin: &tokio_postgres::Client, n: i64) {
    within("waiting sessions", async {
        loop {
            if show_reshard(admin).await.2 == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn freeze_holds_only_moving_writes_and_switch_sends_them_to_the_new_shard() {
    let r = Reshard::start().await;
    let admin = r.env.admin().await;
    let app = r.env.app().await;
    assert_eq!(show_reshard(&admin).await.0, "idle");
    let moving = r.moving_key(1);
    let staying = r.staying_key(0, 1);

    let frozen = within("FREEZE", simple_rows(&admin, &r.freeze_sql(60_000)))
        .await
        .expect("FREEZE");
    assert_eq!(frozen[0][0].as_deref(), Some("frozen"));
    let moving_ranges: i64 = frozen[0][1]
        .as_deref()
        .expect("ranges")
        .parse()
        .expect("int");
    assert!(moving_ranges > 0);

    let held = insert_in_background(&r, moving).await;
    until_waiting(&admin, 1).await;
    // Also held: the simple protocol, a multi-row insert with one moving row, and DDL (every shard).
    let (simple_key, split_key) = (r.moving_key(moving + 1), r.moving_key(moving + 1000));
    let staying_row = r.staying_key(1, 5_000);
    let mut others = Vec::new();
    for sql in [
        format!("INSERT INTO users (id, name) VALUES ({simple_key}, 'simple')"),
        format!(
            "INSERT INTO users (id, name) VALUES ({split_key}, 'split'), ({staying_row}, 'split')"
        ),
        "CREATE INDEX users_name ON users (name)".to_string(),
    ] {
        let client = r.env.app().await;
        others.push(tokio::spawn(async move {
            client.simple_query(&sql).await.map(drop)
        }));
    }
    until_waiting(&admin, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the write of a moving key waits");
    // Writes of keys that stay, and reads of keys that move, go on.
    within(
        "staying insert",
        app.execute(
            "INSERT INTO users (id, name) VALUES ($1, 'stays')",
            &[&staying],
        ),
    )
    .await
    .expect("a staying key is written during the freeze");
    let read = within(
        "moving read",
        app.query("SELECT id FROM users WHERE id = $1", &[&moving]),
    )
    .await
    .expect("reads of moving keys are not held");
    assert!(read.is_empty());
    let (state, ranges, waiting, frozen_ms, last) = show_reshard(&admin).await;
    assert_eq!(
        (state.as_str(), ranges, waiting, last),
        ("frozen", moving_ranges, 4, None)
    );
    assert!(others.iter().all(|o| !o.is_finished()));
    assert!(frozen_ms >= 500, "{frozen_ms}");
    assert!(!held.is_finished());

    let switched = within("SWITCH", simple_rows(&admin, "RESHARD SWITCH"))
        .await
        .expect("SWITCH");
    assert_eq!(switched[0][0].as_deref(), Some("switched"));
    assert_eq!(switched[0][2].as_deref(), Some("3"));
    let pause_ms: i64 = switched[0][1]
        .as_deref()
        .expect("pause")
        .parse()
        .expect("int");
    assert!(pause_ms >= 500, "{pause_ms}");
    assert_eq!(
        within("held insert", held)
            .await
            .expect("join")
            .expect("insert"),
        1
    );
    assert_eq!(
        r.holders(moving).await,
        vec![2],
        "the held write went to shard2"
    );
    for other in others {
        within("held statement", other)
            .await
            .expect("join")
            .expect("held statement runs after SWITCH");
    }
    assert_eq!(r.holders(simple_key).await, vec![2]);
    assert_eq!(r.holders(split_key).await, vec![2]);
    assert_eq!(r.holders(staying_row).await, vec![1]);
    assert_eq!(
        r.with_index("users_name").await,
        vec![0, 1, 2],
        "the held DDL ran on the new shard too"
    );
    assert_eq!(r.holders(staying).await, vec![0]);

    // Afterwards: moving keys live on shard2 (for an old client too), the others stay.
    let moving2 = r.moving_key(split_key + 1);
    let staying1 = r.staying_key(1, 1);
    for id in [moving2, staying1] {
        app.execute("INSERT INTO users (id, name) VALUES ($1, 'after')", &[&id])
            .await
            .expect("insert after the switch");
    }
    assert_eq!(r.holders(moving2).await, vec![2]);
    assert_eq!(r.holders(staying1).await, vec![1]);
    let name: String = app
        .query_one("SELECT name FROM users WHERE id = $1", &[&moving])
        .await
        .expect("read on the new ring")
        .get(0);
    assert_eq!(name, "held");

    let (state, _, waiting, frozen_ms, last) = show_reshard(&admin).await;
    assert_eq!((state.as_str(), waiting, frozen_ms), ("switched", 0, 0));
    assert_eq!(last, Some(pause_ms));
    // The new file is the config now: RELOAD reads it without refusing the new shard.
    admin
        .simple_query("RELOAD")
        .await
        .expect("RELOAD after SWITCH");
    let again = admin
        .simple_query("RESHARD SWITCH")
        .await
        .expect_err("not frozen");
    assert_eq!(sqlstate(&again).as_deref(), Some("55000"));
    r.env.stop().await;
}

#[tokio::test]
async fn abort_timeout_cancel_and_disconnect_release_on_the_old_ring() {
    let r = Reshard::start().await;
    let admin = r.env.admin().await;
    let e = admin
        .simple_query("RESHARD ABORT")
        .await
        .expect_err("nothing frozen");
    assert_eq!(sqlstate(&e).as_deref(), Some("55000"));

    // ABORT: the held write goes to the key's old owner.
    let moving = r.moving_key(1);
    simple_rows(&admin, &r.freeze_sql(60_000))
        .await
        .expect("FREEZE");
    let held = insert_in_background(&r, moving).await;
    until_waiting(&admin, 1).await;
    let aborted = simple_rows(&admin, "RESHARD ABORT").await.expect("ABORT");
    assert_eq!(aborted[0][0].as_deref(), Some("aborted"));
    within("held insert", held)
        .await
        .expect("join")
        .expect("insert");
    assert_eq!(r.holders(moving).await, vec![r.env.user_shard(moving)]);
    assert_eq!(show_reshard(&admin).await.0, "aborted");

    // COPY FROM cannot tell its keys in advance: it waits too.
    let copied = r.moving_key(moving + 1);
    simple_rows(&admin, &r.freeze_sql(60_000))
        .await
        .expect("FREEZE");
    let copier = r.env.app().await;
    let copy = tokio::spawn(async move {
        use futures_util::SinkExt;
        let sink = copier.copy_in("COPY users (id, name) FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(format!("{copied}\tcopied\n")))
            .await?;
        sink.finish().await
    });
    until_waiting(&admin, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!copy.is_finished(), "COPY FROM waits");
    simple_rows(&admin, "RESHARD ABORT").await.expect("ABORT");
    assert_eq!(within("copy", copy).await.expect("join").expect("copy"), 1);
    assert_eq!(r.holders(copied).await, vec![r.env.user_shard(copied)]);

    // A waiting client that cancels gets 57014 and stops waiting; one that leaves is not counted.
    let moving = r.moving_key(copied + 1);
    simple_rows(&admin, &r.freeze_sql(60_000))
        .await
        .expect("FREEZE");
    let canceller = r.env.app().await;
    let token = canceller.cancel_token();
    let held = tokio::spawn(async move {
        canceller
            .execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&moving])
            .await
    });
    until_waiting(&admin, 1).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let e = within("cancelled insert", held)
        .await
        .expect("join")
        .expect_err("cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    until_waiting(&admin, 0).await;
    r.env
        .exec_on_all_shards("GRANT ALL ON users TO trustuser")
        .await;
    let mut leaver = r.env.raw().await;
    leaver
        .send(&common::raw::query_frame(&format!(
            "INSERT INTO users (id, name) VALUES ({moving}, 'x')"
        )))
        .await;
    until_waiting(&admin, 1).await;
    // The client disconnects while its insert waits.
    drop(leaver);
    until_waiting(&admin, 0).await;
    simple_rows(&admin, "RESHARD ABORT").await.expect("ABORT");
    assert!(r.holders(moving).await.is_empty(), "neither write ran");

    // Neither SWITCH nor ABORT: the freeze ends by itself after its timeout.
    simple_rows(&admin, &r.freeze_sql(1_000))
        .await
        .expect("FREEZE");
    let held = insert_in_background(&r, moving).await;
    within("auto-abort", held)
        .await
        .expect("join")
        .expect("insert");
    let (state, _, waiting, _, last) = show_reshard(&admin).await;
    assert_eq!((state.as_str(), waiting), ("aborted", 0));
    assert!(last.is_some_and(|ms| ms >= 1_000), "{last:?}");
    assert_eq!(r.holders(moving).await, vec![r.env.user_shard(moving)]);
    r.env.stop().await;
}

#[tokio::test]
async fn freeze_returns_once_open_transactions_end_without_holding_them() {
    let r = Reshard::start().await;
    let admin = r.env.admin().await;
    // Two moving keys of one old shard: a transaction stays on one shard.
    let k1 = r.moving_key(1);
    let mut k2 = r.moving_key(k1 + 1);
    while r.env.user_shard(k2) != r.env.user_shard(k1) {
        k2 = r.moving_key(k2 + 1);
    }
    let mut open = r.env.app().await;
    let tx = open.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO users (id, name) VALUES ($1, 'tx')", &[&k1])
        .await
        .expect("insert before the freeze");
    let freezing = {
        let admin = r.env.admin().await;
        let sql = r.freeze_sql(60_000);
        tokio::spawn(async move { simple_rows(&admin, &sql).await })
    };
    within("freezing", async {
        while show_reshard(&admin).await.0 != "freezing" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !freezing.is_finished(),
        "FREEZE waits for the open transaction"
    );
    // The open transaction's statements are not held, even writes of moving keys.
    within(
        "insert in the open transaction",
        tx.execute("INSERT INTO users (id, name) VALUES ($1, 'tx')", &[&k2]),
    )
    .await
    .expect("not held");
    within("commit", tx.commit()).await.expect("COMMIT");
    let frozen = within("FREEZE", freezing)
        .await
        .expect("join")
        .expect("FREEZE returns once the transaction ended");
    assert_eq!(frozen[0][0].as_deref(), Some("frozen"));
    simple_rows(&admin, "RESHARD ABORT").await.expect("ABORT");
    let old = r.env.user_shard(k1);
    assert_eq!(r.holders(k1).await, vec![old]);

    // A transaction that does not end in time: FREEZE fails and aborts itself.
    let tx = open.transaction().await.expect("BEGIN");
    tx.execute("SELECT 1 FROM users WHERE id = $1", &[&k1])
        .await
        .expect("read");
    let e = within("FREEZE timeout", admin.simple_query(&r.freeze_sql(500)))
        .await
        .expect_err("times out");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    assert_eq!(show_reshard(&admin).await.0, "aborted");
    tx.rollback().await.expect("ROLLBACK");
    r.env.stop().await;
}

#[tokio::test]
async fn bad_freezes_and_out_of_turn_commands_are_refused() {
    let env = common::Env::start_with_shards(2, 0, pgscale::demo::SAMPLE_SHARDING, |_| {}).await;
    let admin = env.admin().await;
    let path = env.config_path.with_extension("bad.toml");
    let mut bad = env.read_config();
    bad.sharding.vnodes_per_shard = 16;
    bad.shards.push(pgscale::config::ShardConfig {
        name: Some("shard2".into()),
        primary: "postgres://127.0.0.1:1".into(),
        replicas: Vec::new(),
        sslmode: None,
        sslrootcert: None,
    });
    common::write_config(&path, &bad);
    let e = admin
        .simple_query(&format!("RESHARD FREEZE '{}'", path.display()))
        .await
        .expect_err("rules differ");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("[sharding]"), "{message}");
    let mut renamed = env.read_config();
    renamed.shards[1].name = Some("other".into());
    common::write_config(&path, &renamed);
    let e = admin
        .simple_query(&format!("RESHARD FREEZE '{}'", path.display()))
        .await
        .expect_err("renamed shard");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
    let e = admin
        .simple_query("RESHARD FREEZE '/nonexistent/pgscale.toml'")
        .await
        .expect_err("no file");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
    assert_eq!(show_reshard(&admin).await.0, "idle", "nothing frozen");
    // The extended protocol too (drivers).
    let row = admin
        .query_one("SHOW RESHARD", &[])
        .await
        .expect("extended");
    assert_eq!(row.get::<_, String>("state"), "idle");
    assert_eq!(row.get::<_, Option<i64>>("last_pause_ms"), None);
    let e = admin
        .query("RESHARD ABORT", &[])
        .await
        .expect_err("not frozen");
    assert_eq!(sqlstate(&e).as_deref(), Some("55000"));
    // Writes go on.
    env.exec_on_all_shards(pgscale::demo::SAMPLE_SCHEMA).await;
    let app = env.app().await;
    within(
        "insert",
        app.execute("INSERT INTO users (id, name) VALUES (1, 'a')", &[]),
    )
    .await
    .expect("not frozen");

    for (sql, code) in [
        ("RESHARD SWITCH", "55000"),
        ("RESHARD ABORT", "55000"),
        ("RESHARD FREEZE", "42601"),
        ("RESHARD FREEZE 'x' TIMEOUT soon", "42601"),
    ] {
        let e = admin.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}: {e}");
    }
    // A stats user may look, not act.
    let stats = common::connect(&env.conn_str("md5user", "md5-secret", "pgscale")).await;
    show_reshard(&stats).await;
    for sql in [
        "RESHARD SWITCH",
        "RESHARD ABORT",
        "RESHARD FREEZE '/tmp/x.toml'",
    ] {
        let e = stats.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}");
    }
    let _ = std::fs::remove_file(&path);
    env.stop().await;
}
