//! `COPY sharded_table FROM STDIN` through pgscale: rows split to their shards (text and CSV,
//! from psql and from tokio-postgres), committed on every shard or on none.

mod common;

use bytes::Bytes;
use common::{pg_tool, run_command, simple_rows, sqlstate, Env, APP_PASSWORD};
use futures_util::SinkExt;
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};

/// Per shard, the user ids it holds.
async fn users_by_shard(env: &Env) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for shard in 0..env.shard_count() {
        let direct = env.direct_to_shard(shard).await;
        out.push(
            direct
                .query("select id from users order by id", &[])
                .await
                .expect("users")
                .iter()
                .map(|r| r.get(0))
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_rows_go_to_their_shards_all_or_nothing() {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(SAMPLE_SCHEMA).await;

    // psql, text format, 3000 rows with escapes in a text column.
    let data: String = (1..=3000)
        .map(|id| format!("{id}\tuser\\t{id}\n"))
        .collect();
    let input = std::env::temp_dir().join(format!("pgscale-copy-{}.tsv", env.port));
    std::fs::write(&input, &data).expect("write data");
    let mut psql = std::process::Command::new(pg_tool("psql"));
    psql.arg(env.url("app", APP_PASSWORD, "app"))
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy users (id, name) from '{}'",
            input.display()
        ));
    let output = run_command(psql).await;
    let _ = std::fs::remove_file(&input);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("COPY 3000"),
        "{output:?}"
    );
    let placed = users_by_shard(&env).await;
    assert_eq!(placed.iter().map(Vec::len).sum::<usize>(), 3000);
    for (shard, ids) in placed.iter().enumerate() {
        assert!(ids.len() > 700, "shard {shard}: {}", ids.len());
        assert!(
            ids.iter().all(|id| env.user_shard(*id) == shard),
            "shard {shard}"
        );
    }
    let app = env.app().await;
    let name = simple_rows(&app, "select name from users where id = 42")
        .await
        .expect("read back");
    assert_eq!(name, vec![vec![Some("user\t42".to_string())]]);

    // tokio-postgres (extended protocol), CSV with a header and quoted fields, in chunks that cut
    // rows in two.
    let sink = app
        .copy_in("COPY pitches (user_id, id, title) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    let mut csv = String::from("user_id,id,title\n");
    for user in 1..=300 {
        csv.push_str(&format!("{user},1,\"pitch, \"\"{user}\"\"\nline two\"\n"));
    }
    for chunk in csv.as_bytes().chunks(97) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .expect("send");
    }
    let copied = sink.finish().await.expect("finish");
    assert_eq!(copied, 300);
    for shard in 0..3 {
        let direct = env.direct_to_shard(shard).await;
        for row in direct
            .query("select user_id, title from pitches", &[])
            .await
            .expect("pitches")
        {
            let (user, title): (i64, String) = (row.get(0), row.get(1));
            assert_eq!(env.user_shard(user), shard, "pitch of {user}");
            assert_eq!(title, format!("pitch, \"{user}\"\nline two"));
        }
    }

    // A row that one shard refuses (a duplicate key) rolls the COPY back on every shard.
    let before = users_by_shard(&env).await;
    let clash = "5001\tnew\n5002\tnew\n42\tduplicate\n5003\tnew\n";
    let sink = app
        .copy_in("COPY users (id, name) FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(clash.as_bytes()))
        .await
        .expect("send");
    let e = sink.finish().await.expect_err("duplicate key");
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    assert_eq!(
        users_by_shard(&env).await,
        before,
        "nothing committed anywhere"
    );

    // A row without a key is refused before anything commits.
    let sink = app
        .copy_in("COPY users (id, name) FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"6001\tok\n\\N\tno key\n"))
        .await
        .expect("send");
    let e = sink.finish().await.expect_err("null key");
    assert_eq!(sqlstate(&e).as_deref(), Some("22P04"), "{e}");
    assert_eq!(
        users_by_shard(&env).await,
        before,
        "nothing committed anywhere"
    );
    // The client goes on.
    let count = simple_rows(&app, "select count(*) from users")
        .await
        .expect("count");
    assert_eq!(count, vec![vec![Some("3000".to_string())]]);
    env.stop().await;
}

/// Unsharded tables keep working next to sharded ones: `pgbench -i` (CREATE on every shard,
/// `COPY … FREEZE` and the data on the default shard, VACUUM) and a pgbench run through a sharded
/// pgscale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_on_the_default_shard_of_a_sharded_topology() {
    let env = Env::start_with_shards(3, 0, SAMPLE_SHARDING, |_| {}).await;
    let url = env.url("app", APP_PASSWORD, "app");
    let mut init = std::process::Command::new(pg_tool("pgbench"));
    init.args(["-i", "-s", "1", "-q"]).arg(&url);
    let output = run_command(init).await;
    assert!(output.status.success(), "{output:?}");
    let mut bench = std::process::Command::new(pg_tool("pgbench"));
    bench
        .args(["-c", "4", "-j", "2", "-t", "200", "-M", "prepared"])
        .arg(&url);
    let output = run_command(bench).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    // Its tables were created on every shard; their rows are on the default shard only.
    assert_eq!(
        env.shards_with_table("pgbench_accounts").await,
        vec![0, 1, 2]
    );
    for shard in 0..3 {
        let rows: i64 = env
            .direct_to_shard(shard)
            .await
            .query_one("select count(*) from pgbench_accounts", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, if shard == 0 { 100_000 } else { 0 }, "shard {shard}");
    }
    env.stop().await;
}
