//! Helpers for `pgscale reshard` tests: three primaries with `wal_level = logical` (two shards and
//! an empty new one), OLD and NEW configs, data loaded on the shards the OLD ring gives, and the
//! CLI run as a child process.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use pgscale::config::Config;
use pgscale::local_cluster::{start_shards, ClusterOptions, LocalShard};
use pgscale::sharding::{hash_key, Ring, ShardKey};
use tokio_postgres::Client;

pub const PASSWORD: &str = "postgres";

/// The demo's tables (users, pitches sharded by user) plus a reference table, on every server.
pub const SCHEMA: &str = "\
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, \
created_at timestamptz DEFAULT now());
CREATE TABLE pitches (id bigint, user_id bigint NOT NULL, title text NOT NULL, \
amount numeric(12,2), created_at timestamptz DEFAULT now(), PRIMARY KEY (user_id, id));
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
";

/// Three primaries, the configs naming them `shard0`, `shard1` (OLD) and `shard2` (added in NEW).
pub struct ReshardEnv {
    pub servers: Vec<LocalShard>,
    pub dir: PathBuf,
    pub old_path: PathBuf,
    pub new_path: PathBuf,
    pub old: Config,
    pub new: Config,
}

/// `[sharding]` of both configs; `extra_tables` adds `[[sharding.tables]]` entries.
pub fn sharding_toml(extra_tables: &str) -> String {
    format!(
        "[sharding]\nkey_type = \"bigint\"\nvnodes_per_shard = 256\nreference_tables = [\"countries\"]\n\
         [[sharding.tables]]\nname = \"users\"\ncolumn = \"id\"\n\
         [[sharding.tables]]\nname = \"pitches\"\ncolumn = \"user_id\"\n{extra_tables}"
    )
}

/// A config over the first `n` servers.
pub fn config_text(servers: &[LocalShard], n: usize, sharding: &str) -> String {
    let mut text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{sharding}\n\
         [[users]]\nname = \"postgres\"\npassword = \"{PASSWORD}\"\n"
    );
    for (i, shard) in servers.iter().take(n).enumerate() {
        text.push_str(&format!(
            "[[shards]]\nname = \"shard{i}\"\nprimary = \"postgres://127.0.0.1:{}\"\n",
            shard.primary.port()
        ));
    }
    text
}

impl ReshardEnv {
    /// Starts the servers (logical WAL) with [`SCHEMA`] on all three and writes both configs.
    pub async fn start(tag: &str) -> ReshardEnv {
        let servers = tokio::task::spawn_blocking(|| {
            let options = ClusterOptions {
                superuser_password: PASSWORD.into(),
                extra_conf: vec![("wal_level".into(), "logical".into())],
                ..ClusterOptions::default()
            };
            start_shards(3, 0, &options, |_, pg| pg.psql(SCHEMA).map(drop))
        })
        .await
        .expect("join")
        .expect("start three primaries");
        let dir = std::env::temp_dir().join(format!(
            "pgscale-reshard-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sharding = sharding_toml("");
        let old_text = config_text(&servers, 2, &sharding);
        let new_text = config_text(&servers, 3, &sharding);
        let (old_path, new_path) = (dir.join("old.toml"), dir.join("new.toml"));
        std::fs::write(&old_path, &old_text).expect("write old");
        std::fs::write(&new_path, &new_text).expect("write new");
        ReshardEnv {
            old: Config::from_toml(&old_text).expect("old parses"),
            new: Config::from_toml(&new_text).expect("new parses"),
            servers,
            dir,
            old_path,
            new_path,
        }
    }

    /// Superuser connection to server `i` (database postgres).
    pub async fn client(&self, i: usize) -> Client {
        let port = self.servers[i].primary.port();
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=postgres"
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn old_ring(&self) -> Ring {
        self.old.ring().expect("old ring")
    }

    pub fn new_ring(&self) -> Ring {
        self.new.ring().expect("new ring")
    }

    /// Loads `users` ids `1..=n` (and one or two pitches each) and 20 countries, each row on the
    /// shard the OLD ring gives (countries on both).
    pub async fn load(&self, n: i64) {
        let ring = self.old_ring();
        let mut ids: Vec<Vec<i64>> = vec![Vec::new(), Vec::new()];
        for id in 1..=n {
            ids[ring.shard_of(&ShardKey::Int(id))].push(id);
        }
        for (shard, ids) in ids.iter().enumerate() {
            let client = self.client(shard).await;
            client
                .execute(
                    "INSERT INTO users (id, name, email) SELECT i, 'user ' || i, 'u' || i || '@example.com' \
                     FROM unnest($1::bigint[]) i",
                    &[ids],
                )
                .await
                .expect("load users");
            client
                .execute(
                    "INSERT INTO pitches (id, user_id, title, amount) \
                     SELECT i * 10 + k, i, 'pitch ' || k || ' of ' || i, (i % 1000) + k * 0.25 \
                     FROM unnest($1::bigint[]) i, generate_series(1, 1 + (i % 2)::int) k",
                    &[ids],
                )
                .await
                .expect("load pitches");
            client
                .batch_execute(
                    "INSERT INTO countries SELECT 'c' || g, 'country ' || g FROM generate_series(1, 20) g; \
                     ANALYZE users; ANALYZE pitches;",
                )
                .await
                .expect("load countries");
        }
    }

    /// Runs `pgscale reshard SUB --config OLD --to NEW ARGS` with `env` set; at most 5 minutes.
    pub async fn cli(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgscale"));
        command
            .args(["reshard", sub, "--config"])
            .arg(&self.old_path)
            .arg("--to")
            .arg(&self.new_path)
            .args(args)
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        run(command).await
    }
}

impl Drop for ReshardEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command off the runtime; a run over 5 minutes fails the test.
pub async fn run(mut command: Command) -> Output {
    let child = tokio::task::spawn_blocking(move || command.output().expect("run pgscale"));
    tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .expect("pgscale reshard did not finish within 5 minutes")
        .expect("join")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// `(shard key, to_jsonb text)` of every row of `table`.
pub async fn rows(client: &Client, table: &str, key: &str) -> Vec<(i64, String)> {
    let sql = format!("SELECT {key}::bigint, to_jsonb(t)::text FROM {table} t");
    client
        .query(&sql, &[])
        .await
        .expect("read rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The shard key column of a test table.
pub fn key_of(table: &str) -> &'static str {
    if table == "pitches" {
        "user_id"
    } else {
        "id"
    }
}

/// The ring index owning bigint key `key`.
pub fn owner(ring: &Ring, key: i64) -> usize {
    ring.owner(hash_key(&ShardKey::Int(key)))
}

/// Every row of `table` on `servers` whose key `pick` accepts, sorted by JSON text.
pub async fn rows_where(
    env: &ReshardEnv,
    servers: &[usize],
    table: &str,
    pick: impl Fn(i64) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for &i in servers {
        let client = env.client(i).await;
        for (key, json) in rows(&client, table, key_of(table)).await {
            if pick(key) {
                out.push(json);
            }
        }
    }
    out.sort();
    out
}
