//! `pgscale demo`: a local Postgres started from the machine's binaries with the proxy in front of it,
//! so a newcomer can point psql or pgbench at pgscale in one command.

use std::sync::Arc;

use crate::config::{
    AuthMethod, Config, ListenConfig, PoolConfig, PoolMode, ShardConfig, UserConfig,
};
use crate::listener::{self, ListenError, RunningProxy};
use crate::local_cluster::{ClusterError, ClusterOptions, LocalPostgres};

/// The demo's application login (also its database).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app";
const SUPERUSER_PASSWORD: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("starting Postgres failed: {0}")]
    Cluster(#[from] ClusterError),
    #[error("starting the proxy failed: {0}")]
    Listen(#[from] ListenError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The demo's servers and proxy; dropping the servers stops them.
pub struct Demo {
    pub proxy: RunningProxy,
    pub servers: Vec<Arc<std::sync::Mutex<LocalPostgres>>>,
    pub lines: Vec<String>,
}

/// Starts Postgres, creates the `app` role and database, and starts the proxy on `port`.
pub async fn start(port: u16) -> Result<Demo, DemoError> {
    let primary = tokio::task::spawn_blocking(|| -> Result<LocalPostgres, ClusterError> {
        let options = ClusterOptions {
            superuser_password: SUPERUSER_PASSWORD.to_string(),
            ..ClusterOptions::default()
        };
        let pg = LocalPostgres::start(&options)?;
        pg.psql(&format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'; CREATE DATABASE {APP_USER} OWNER {APP_USER};"
        ))?;
        Ok(pg)
    })
    .await??;

    let backend = format!("postgres://{}:{}", primary.host(), primary.port());
    let config = Config {
        listen: ListenConfig {
            address: format!("127.0.0.1:{port}"),
            ..ListenConfig::default()
        },
        pool: PoolConfig {
            mode: PoolMode::Transaction,
            pool_size: 20,
            ..PoolConfig::default()
        },
        routing: Default::default(),
        health: Default::default(),
        users: vec![
            user(APP_USER, APP_PASSWORD),
            user("postgres", SUPERUSER_PASSWORD),
        ],
        shards: vec![ShardConfig {
            primary: backend,
            replicas: Vec::new(),
        }],
    };
    let proxy = listener::start(config).await?;
    let addr = proxy.local_addr;
    let url = format!("postgres://{APP_USER}:{APP_PASSWORD}@{addr}/{APP_USER}");
    let lines = vec![
        format!("DATABASE_URL={url}"),
        format!(
            "BACKEND 0 primary postgres://postgres:{SUPERUSER_PASSWORD}@{}:{}/postgres",
            primary.host(),
            primary.port()
        ),
        format!("psql \"{url}\""),
        format!("pgbench -i -s 10 \"{url}\""),
        format!("pgbench -c 50 -j 2 -T 20 -M prepared \"{url}\""),
    ];
    Ok(Demo {
        proxy,
        servers: vec![Arc::new(std::sync::Mutex::new(primary))],
        lines,
    })
}

fn user(name: &str, password: &str) -> UserConfig {
    UserConfig {
        name: name.to_string(),
        password: Some(password.to_string()),
        scram_secret: None,
        auth: AuthMethod::ScramSha256,
        server_user: None,
        server_password: None,
        pool_size: None,
    }
}

impl Demo {
    /// Stops the proxy, then every server.
    pub async fn stop(self) {
        self.proxy.shutdown().await;
        let servers = self.servers;
        let _ = tokio::task::spawn_blocking(move || {
            for server in servers {
                if let Ok(mut pg) = server.lock() {
                    if let Err(e) = pg.stop() {
                        tracing::warn!(error = %e, "stopping demo Postgres failed");
                    }
                }
            }
        })
        .await;
    }
}
