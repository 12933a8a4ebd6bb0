//! Harness for the resharding cutover's proxy side: a two-shard env, a third Postgres with the same
//! tables, and the new config (the env's plus `shard2`) written next to the env's.

use std::path::PathBuf;

use pgscale::config::{Config, ShardConfig};
use pgscale::demo::{SAMPLE_SCHEMA, SAMPLE_SHARDING};
use pgscale::local_cluster::LocalPostgres;
use tokio_postgres::Client;

use crate::common::{connect, start_postgres, write_config, Env, APP_PASSWORD, APP_USER};

pub struct Reshard {
    pub env: Env,
    /// The added shard (`shard2`, index 2 of the new config).
    pub new_shard: LocalPostgres,
    pub new_config: Config,
    pub new_config_path: PathBuf,
}

impl Reshard {
    pub async fn start() -> Reshard {
        let env = Env::start_with_shards(2, 0, SAMPLE_SHARDING, |_| {}).await;
        env.exec_on_all_shards(SAMPLE_SCHEMA).await;
        let new_shard = tokio::task::spawn_blocking(start_postgres)
            .await
            .expect("join");
        direct(&new_shard)
            .await
            .batch_execute(SAMPLE_SCHEMA)
            .await
            .expect("schema");
        let mut new_config = env.read_config();
        new_config.shards.push(ShardConfig {
            name: Some("shard2".into()),
            primary: format!("postgres://{}:{}", new_shard.host(), new_shard.port()),
            replicas: Vec::new(),
            sslmode: None,
            sslrootcert: None,
        });
        let new_config_path = env.config_path.with_extension("new.toml");
        write_config(&new_config_path, &new_config);
        Reshard {
            env,
            new_shard,
            new_config,
            new_config_path,
        }
    }

    /// `RESHARD FREEZE '<new config>' TIMEOUT <ms>`.
    pub fn freeze_sql(&self, timeout_ms: u64) -> String {
        format!(
            "RESHARD FREEZE '{}' TIMEOUT {timeout_ms}",
            self.new_config_path.display()
        )
    }

    /// The shard index of user key `key` under the new config.
    pub fn new_owner(&self, key: i64) -> usize {
        pgscale::shard_of::shard_of(&self.new_config, Some("users"), &key.to_string())
            .expect("shard-of")
            .index
    }

    /// The `n`th key from `from` that moves to `shard2`.
    pub fn moving_key(&self, from: i64) -> i64 {
        (from..from + 100_000)
            .find(|k| self.new_owner(*k) == 2)
            .expect("a moving key")
    }

    /// A key that stays on old shard `shard`.
    pub fn staying_key(&self, shard: usize, from: i64) -> i64 {
        (from..from + 100_000)
            .find(|k| self.new_owner(*k) == shard && self.env.user_shard(*k) == shard)
            .expect("a staying key")
    }

    /// Which of the three servers have an index named `name`.
    pub async fn with_index(&self, name: &str) -> Vec<usize> {
        let mut found = Vec::new();
        for i in 0..3 {
            let n: i64 = self
                .server(i)
                .await
                .query_one(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = $1",
                    &[&name],
                )
                .await
                .expect("count")
                .get(0);
            if n > 0 {
                found.push(i);
            }
        }
        found
    }

    /// A direct connection to server `i` (2: the new shard).
    async fn server(&self, i: usize) -> Client {
        if i < 2 {
            self.env.direct_to_shard(i).await
        } else {
            direct(&self.new_shard).await
        }
    }

    /// Which of the three servers hold user `id` (read directly).
    pub async fn holders(&self, id: i64) -> Vec<usize> {
        let mut found = Vec::new();
        for i in 0..3 {
            let n: i64 = self
                .server(i)
                .await
                .query_one("SELECT count(*) FROM users WHERE id = $1", &[&id])
                .await
                .expect("count")
                .get(0);
            if n > 0 {
                found.push(i);
            }
        }
        found
    }
}

async fn direct(pg: &LocalPostgres) -> Client {
    connect(&format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_USER}",
        pg.port()
    ))
    .await
}

/// `SHOW RESHARD` as (state, moving_ranges, waiting, frozen_ms, last_pause_ms).
pub async fn show_reshard(admin: &Client) -> (String, i64, i64, i64, Option<i64>) {
    let rows = crate::common::simple_rows(admin, "SHOW RESHARD")
        .await
        .expect("SHOW RESHARD");
    let row = rows.first().expect("one row");
    let int = |i: usize| row[i].as_deref().map(|v| v.parse::<i64>().expect("int"));
    (
        row[0].clone().expect("state"),
        int(1).expect("moving_ranges"),
        int(2).expect("waiting"),
        int(3).expect("frozen_ms"),
        int(4),
    )
}
