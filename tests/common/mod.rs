//! Test harness: a real Postgres per test (see `pgscale::local_cluster`) and the proxy in-process on a
//! free port, plus small helpers for real clients (tokio-postgres, psql, pgbench, raw sockets).
#![allow(dead_code)]

pub mod metrics;
pub mod raw;
pub mod tls;
pub mod tls_client;

use std::process::Command;
use std::sync::Arc;

use pgscale::config::{
    AdminConfig, AuthMethod, Config, ListenConfig, MetricsConfig, PoolConfig, PoolMode,
    ShardConfig, UserConfig,
};
use pgscale::listener::{self, RunningProxy};
use pgscale::local_cluster::{
    start_shards, ClusterError, ClusterOptions, LocalPostgres, LocalShard, PgBinaries,
};
use tokio_postgres::{Client, NoTls};

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
pub const SUPERUSER_PASSWORD: &str = "postgres";

/// A Postgres server with an `app` role and database (optionally with streaming replicas, optionally
/// more shards like it), and pgscale in front of it.
pub struct Env {
    /// Shard 0's primary.
    pub pg: LocalPostgres,
    /// Shard 0's replicas.
    pub replicas: Vec<LocalPostgres>,
    /// Shards 1.. of a sharded env (shard 0 is `pg` and `replicas`, so unsharded tests see no change).
    pub other_shards: Vec<LocalShard>,
    pub proxy: Option<RunningProxy>,
    pub port: u16,
    /// The config file the proxy was started from (what `RELOAD` re-reads); deleted by `stop`.
    pub config_path: std::path::PathBuf,
}

/// Users every test config has: `app` (SCRAM), `md5user` (md5), `trustuser` (trust), `postgres`.
pub fn test_users() -> Vec<UserConfig> {
    vec![
        user(APP_USER, Some(APP_PASSWORD), AuthMethod::ScramSha256),
        user("md5user", Some("md5-secret"), AuthMethod::Md5),
        UserConfig {
            server_password: Some("trust-secret".into()),
            ..user("trustuser", None, AuthMethod::Trust)
        },
        user(
            "postgres",
            Some(SUPERUSER_PASSWORD),
            AuthMethod::ScramSha256,
        ),
    ]
}

pub fn user(name: &str, password: Option<&str>, auth: AuthMethod) -> UserConfig {
    UserConfig {
        name: name.to_string(),
        password: password.map(str::to_string),
        scram_secret: None,
        auth,
        server_user: None,
        server_password: None,
        pool_size: None,
    }
}

/// Ends the test process if it runs longer than `PGSCALE_TEST_TIMEOUT_SECS` (default 600): a hung
/// test must fail, not stall CI. The servers' watchdogs clean up after the process is gone.
fn guard_against_hangs() {
    static GUARD: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        let secs = std::env::var("PGSCALE_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600u64);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            // Straight to fd 2: libtest captures what the std streams print in test threads.
            let msg = format!(
                "test binary still running after {secs} s: giving up (PGSCALE_TEST_TIMEOUT_SECS)\n"
            );
            // SAFETY: writes a live buffer of the given length to the stderr descriptor.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
            }
            std::process::exit(101);
        });
    });
}

fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        superuser_password: SUPERUSER_PASSWORD.to_string(),
        ..ClusterOptions::default()
    }
}

/// Creates the roles `app`, `md5user`, `trustuser` and the database `app` on a fresh server.
fn create_test_roles(pg: &LocalPostgres) -> Result<String, ClusterError> {
    pg.psql(&format!(
        "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}';\
         CREATE ROLE md5user LOGIN PASSWORD 'md5-secret';\
         CREATE ROLE trustuser LOGIN PASSWORD 'trust-secret';\
         CREATE DATABASE {APP_USER} OWNER {APP_USER};\
         GRANT ALL ON DATABASE {APP_USER} TO md5user, trustuser;"
    ))
}

/// Starts Postgres (roles `app`, `md5user`, `trustuser`; database `app`) — blocking.
pub fn start_postgres() -> LocalPostgres {
    guard_against_hangs();
    let pg = LocalPostgres::start(&cluster_options()).expect("start postgres");
    create_test_roles(&pg).expect("create roles");
    pg
}

/// Starts `shards` shards like [`start_postgres`], each with `replicas` streaming replicas, in
/// parallel — blocking.
pub fn start_shard_servers(shards: usize, replicas: usize) -> Vec<LocalShard> {
    guard_against_hangs();
    start_shards(shards, replicas, &cluster_options(), |_, pg| {
        create_test_roles(pg).map(drop)
    })
    .expect("start shards")
}

fn backend_url(pg: &LocalPostgres) -> String {
    format!("postgres://{}:{}", pg.host(), pg.port())
}

/// A config for `pg` with the proxy on a free port; tweak it before [`Env::start_with`].
pub fn config_for(pg: &LocalPostgres, mode: PoolMode, pool_size: usize) -> Config {
    Config {
        listen: ListenConfig {
            address: "127.0.0.1:0".into(),
            shutdown_timeout_ms: 5_000,
            ..ListenConfig::default()
        },
        pool: PoolConfig {
            mode,
            pool_size,
            checkout_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        routing: Default::default(),
        // Health checks log in as the superuser, so tests that count the `app` role's server
        // connections see only the pools'.
        health: pgscale::config::HealthConfig {
            user: Some("postgres".into()),
            // Many servers share 2 cores in a test run: a slow poll must not trip a breaker (fault
            // tests set their own, shorter timeout).
            timeout_ms: 5_000,
            ..Default::default()
        },
        sharding: Default::default(),
        // `postgres` may run every admin command, `md5user` only SHOW.
        admin: AdminConfig {
            users: vec!["postgres".into()],
            stats_users: vec!["md5user".into()],
        },
        // Every test proxy serves /metrics on a free port.
        metrics: MetricsConfig {
            address: Some("127.0.0.1:0".into()),
            ..MetricsConfig::default()
        },
        log: Default::default(),
        users: test_users(),
        shards: vec![ShardConfig {
            name: None,
            primary: backend_url(pg),
            replicas: Vec::new(),
            sslmode: None,
            sslrootcert: None,
        }],
    }
}

impl Env {
    pub async fn start(mode: PoolMode, pool_size: usize) -> Env {
        Env::start_with(|_| {}, mode, pool_size).await
    }

    pub async fn start_with(
        tweak: impl FnOnce(&mut Config),
        mode: PoolMode,
        pool_size: usize,
    ) -> Env {
        Env::start_with_replicas(0, tweak, mode, pool_size).await
    }

    /// A primary with `replicas` streaming replicas (`pg_basebackup -R`), all in the config's shard.
    pub async fn start_with_replicas(
        replicas: usize,
        tweak: impl FnOnce(&mut Config),
        mode: PoolMode,
        pool_size: usize,
    ) -> Env {
        let (pg, replicas) = tokio::task::spawn_blocking(move || {
            let pg = start_postgres();
            let replicas: Vec<LocalPostgres> = (0..replicas)
                .map(|_| LocalPostgres::start_replica_of(&pg).expect("start replica"))
                .collect();
            (pg, replicas)
        })
        .await
        .expect("join");
        let mut config = config_for(&pg, mode, pool_size);
        config.shards[0].replicas = replicas.iter().map(|r| backend_url(r).into()).collect();
        tweak(&mut config);
        Env::start_proxy(config, pg, replicas, Vec::new()).await
    }

    /// `n_shards` shards (named `shard0`, `shard1`, …), each a primary with `replicas_per_shard`
    /// streaming replicas, and the proxy in transaction mode with `sharding_toml` (a `[sharding]`
    /// section, e.g. `pgscale::demo::SAMPLE_SHARDING`) as its sharding config. `tweak` may change
    /// the rest of the config. Tables are not created: see [`Env::exec_on_all_shards`].
    pub async fn start_with_shards(
        n_shards: usize,
        replicas_per_shard: usize,
        sharding_toml: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Env {
        assert!(n_shards > 0, "a sharded env needs at least one shard");
        let sharding = Config::from_toml(sharding_toml)
            .expect("the sharding snippet parses")
            .sharding;
        let mut shards =
            tokio::task::spawn_blocking(move || start_shard_servers(n_shards, replicas_per_shard))
                .await
                .expect("join");
        let first = shards.remove(0);
        let mut config = config_for(&first.primary, PoolMode::Transaction, 10);
        config.sharding = sharding;
        config.shards = std::iter::once(&first)
            .chain(&shards)
            .enumerate()
            .map(|(i, shard)| ShardConfig {
                name: Some(format!("shard{i}")),
                primary: backend_url(&shard.primary),
                replicas: shard
                    .replicas
                    .iter()
                    .map(|r| backend_url(r).into())
                    .collect(),
                sslmode: None,
                sslrootcert: None,
            })
            .collect();
        tweak(&mut config);
        Env::start_proxy(config, first.primary, first.replicas, shards).await
    }

    async fn start_proxy(
        config: Config,
        pg: LocalPostgres,
        replicas: Vec<LocalPostgres>,
        other_shards: Vec<LocalShard>,
    ) -> Env {
        config.validate().expect("test config is valid");
        let config_path = std::env::temp_dir().join(format!(
            "pgscale-test-{}-{:08x}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        write_config(&config_path, &config);
        let proxy = listener::start_from_file(config, config_path.clone())
            .await
            .expect("start proxy");
        let port = proxy.local_addr.port();
        Env {
            pg,
            replicas,
            other_shards,
            proxy: Some(proxy),
            port,
            config_path,
        }
    }

    /// `pgbench -i -s SCALE` through the proxy.
    pub async fn pgbench_init(&self, scale: u32) {
        let mut command = Command::new(pg_tool("pgbench"));
        command
            .args(["-i", "-q", "-s", &scale.to_string()])
            .arg(self.app_url());
        let init = run_command(command).await;
        assert!(
            init.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    /// Starts `pgbench ARGS <app url>` off the runtime; await the handle for its output.
    pub fn pgbench_in_background(
        &self,
        args: &[&str],
    ) -> tokio::task::JoinHandle<std::process::Output> {
        let mut command = Command::new(pg_tool("pgbench"));
        command.args(args).arg(self.app_url());
        tokio::task::spawn_blocking(move || command.output().expect("run pgbench"))
    }

    /// The config file as it is now.
    pub fn read_config(&self) -> Config {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        Config::from_toml(&text).expect("config parses")
    }

    /// Changes the config file (the running proxy sees it at its next reload).
    pub fn rewrite_config(&self, change: impl FnOnce(&mut Config)) {
        let mut config = self.read_config();
        change(&mut config);
        write_config(&self.config_path, &config);
    }

    /// The admin console as `postgres` (listed in `admin.users`).
    pub async fn admin(&self) -> Client {
        connect(&self.conn_str("postgres", SUPERUSER_PASSWORD, "pgscale")).await
    }

    /// `http://…/metrics` of the running proxy.
    pub fn metrics_url(&self) -> String {
        let addr = self
            .proxy
            .as_ref()
            .and_then(|p| p.metrics_addr)
            .expect("the test proxy serves metrics");
        format!("http://{addr}/metrics")
    }

    /// How many shards this env has (1 unless started with [`Env::start_with_shards`]).
    pub fn shard_count(&self) -> usize {
        1 + self.other_shards.len()
    }

    /// Shard `i`'s primary.
    pub fn shard_primary(&self, i: usize) -> &LocalPostgres {
        match i {
            0 => &self.pg,
            _ => match self.other_shards.get(i - 1) {
                Some(shard) => &shard.primary,
                None => panic!("shard {i} of {}", self.shard_count()),
            },
        }
    }

    /// Connects as superuser straight to shard `i`'s primary, database `app`.
    pub async fn direct_to_shard(&self, i: usize) -> Client {
        self.direct_to(self.shard_primary(i)).await
    }

    /// The shard that owns user key `key` (table `users`), computed by the library outside the
    /// proxy, from the proxy's config.
    pub fn user_shard(&self, key: i64) -> usize {
        let config = self.proxy.as_ref().expect("proxy").shared().config();
        pgscale::shard_of::shard_of(&config, Some("users"), &key.to_string())
            .expect("shard-of")
            .index
    }

    /// The first user key from `from` on that shard `shard` owns.
    pub fn user_key_on(&self, shard: usize, from: i64) -> i64 {
        (from..from + 10_000)
            .find(|k| self.user_shard(*k) == shard)
            .unwrap_or_else(|| panic!("no key from {from} on shard {shard}"))
    }

    /// The one bigint (a count, say) that `sql` returns on shard `i`'s primary, read directly.
    pub async fn shard_i64(&self, i: usize, sql: &str) -> i64 {
        self.direct_to_shard(i)
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("shard {i}: {sql}: {e:?}"))
            .get(0)
    }

    /// The shards whose primary returns a positive number for `sql` (see [`Env::shard_i64`]).
    pub async fn shards_where(&self, sql: &str) -> Vec<usize> {
        let mut found = Vec::new();
        for shard in 0..self.shard_count() {
            if self.shard_i64(shard, sql).await > 0 {
                found.push(shard);
            }
        }
        found
    }

    /// The shards whose primary holds user `id`, read directly (to catch a row on the wrong shard).
    pub async fn shards_with_user(&self, id: i64) -> Vec<usize> {
        self.shards_where(&format!("select count(*) from users where id = {id}"))
            .await
    }

    /// The shards whose primary has the table `name`.
    pub async fn shards_with_table(&self, name: &str) -> Vec<usize> {
        self.shards_where(&format!("select count(to_regclass('{name}'))"))
            .await
    }

    /// A raw protocol client through the proxy, as `trustuser` on database `app`.
    pub async fn raw(&self) -> raw::RawClient {
        raw::RawClient::connect(self.port, &[("user", "trustuser"), ("database", APP_USER)])
            .await
            .expect("raw login")
    }

    /// Runs `sql` on every shard's primary, straight (not through the proxy), as the `app` user so
    /// the objects it creates are the app's, as if created through the proxy. Does not wait for
    /// replicas to replay it.
    pub async fn exec_on_all_shards(&self, sql: &str) {
        for i in 0..self.shard_count() {
            let client = connect(&format!(
                "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_USER}",
                self.shard_primary(i).port()
            ))
            .await;
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("shard {i}: {sql}: {e}"));
        }
    }

    /// Connects as superuser straight to `server` (the primary or a replica), database `app`.
    pub async fn direct_to(&self, server: &LocalPostgres) -> Client {
        connect(&format!(
            "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname=app",
            server.port()
        ))
        .await
    }

    /// Runs `sql` on the primary as superuser, waits until the replicas have replayed it, and gives the
    /// proxy's health polls time to see them fresh, so reads through the proxy can go to them.
    pub async fn prepare_replicated(&self, sql: &str) {
        self.direct().await.batch_execute(sql).await.expect(sql);
        self.wait_replicas_caught_up().await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    /// Waits until every replica has replayed the primary's WAL as of now.
    pub async fn wait_replicas_caught_up(&self) {
        let primary = self.direct().await;
        let lsn: String = primary
            .query_one("select pg_current_wal_insert_lsn()::text", &[])
            .await
            .expect("primary lsn")
            .get(0);
        for replica in &self.replicas {
            let client = self.direct_to(replica).await;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let caught_up: bool = client
                    .query_one(
                        "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                        &[&lsn],
                    )
                    .await
                    .expect("replay lsn")
                    .get(0);
                if caught_up {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica {} did not catch up",
                    replica.port()
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    /// libpq-style connection string to the proxy.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The `app` user's URL through the proxy.
    pub fn app_url(&self) -> String {
        self.url(APP_USER, APP_PASSWORD, APP_USER)
    }

    /// Connects the `app` user through the proxy.
    pub async fn app(&self) -> Client {
        connect(&self.conn_str(APP_USER, APP_PASSWORD, APP_USER)).await
    }

    /// Connects as superuser straight to Postgres (to check from the server side).
    pub async fn direct(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname=app",
            self.pg.port()
        ))
        .await
    }

    pub async fn stop(mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

impl Drop for Env {
    /// The config file goes with the env, also when a test fails before `stop`.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// A pgbench run that succeeded without a single failed transaction.
pub fn assert_pgbench_clean(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
}

/// Writes `config` as TOML.
pub fn write_config(path: &std::path::Path, config: &Config) {
    let text = toml::to_string(config).expect("config serializes");
    std::fs::write(path, text).expect("write config");
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(conn_str: &str) -> Client {
    try_connect(conn_str).await.expect("connect")
}

pub async fn try_connect(conn_str: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn_str, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Awaits `future` for at most 10 s: a hang fails the test (naming `what`) instead of stalling it.
pub async fn within<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"))
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Path of a Postgres client binary (`psql`, `pgbench`) from `PG_BIN`.
pub fn pg_tool(name: &str) -> std::path::PathBuf {
    PgBinaries::from_env().dir.join(name)
}

/// Runs a command to completion off the async runtime.
pub async fn run_command(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("run command"))
        .await
        .expect("join")
}

pub type Shared<T> = Arc<T>;

/// The rows of a simple query, as text (None for NULL).
pub async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
