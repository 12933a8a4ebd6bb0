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

/// Starts Postgres and `replicas` streaming replicas of it, creates the `app` role and database, and
/// starts the proxy on `port` (reads go to the replicas).
pub async fn start(port: u16, replicas: usize) -> Result<Demo, DemoError> {
    let (primary, replica_servers) = tokio::task::spawn_blocking(
        move || -> Result<(LocalPostgres, Vec<LocalPostgres>), ClusterError> {
            let options = ClusterOptions {
                superuser_password: SUPERUSER_PASSWORD.to_string(),
                ..ClusterOptions::default()
            };
            let pg = LocalPostgres::start(&options)?;
            pg.psql(&format!(
                "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'; CREATE DATABASE {APP_USER} OWNER {APP_USER};"
            ))?;
            let replicas = (0..replicas)
                .map(|_| LocalPostgres::start_replica_of(&pg))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((pg, replicas))
        },
    )
    .await??;

    let backend = format!("postgres://{}:{}", primary.host(), primary.port());
    let replica_urls = replica_servers
        .iter()
        .map(|r| format!("postgres://{}:{}", r.host(), r.port()).into())
        .collect();
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
        sharding: Default::default(),
        users: vec![
            user(APP_USER, APP_PASSWORD),
            user("postgres", SUPERUSER_PASSWORD),
        ],
        shards: vec![ShardConfig {
            name: None,
            primary: backend,
            replicas: replica_urls,
        }],
    };
    let proxy = listener::start(config).await?;
    let addr = proxy.local_addr;
    let url = format!("postgres://{APP_USER}:{APP_PASSWORD}@{addr}/{APP_USER}");
    let mut lines = vec![
        format!("DATABASE_URL={url}"),
        format!(
            "BACKEND 0 primary postgres://postgres:{SUPERUSER_PASSWORD}@{}:{}/postgres",
            primary.host(),
            primary.port()
        ),
    ];
    for replica in &replica_servers {
        lines.push(format!(
            "BACKEND 0 replica postgres://postgres:{SUPERUSER_PASSWORD}@{}:{}/postgres",
            replica.host(),
            replica.port()
        ));
    }
    lines.extend([
        format!("psql \"{url}\""),
        format!("pgbench -i -s 10 \"{url}\""),
        format!("pgbench -c 50 -j 2 -T 20 -M prepared \"{url}\""),
    ]);
    if !replica_servers.is_empty() {
        lines.push(format!(
            "psql \"{url}\" -c 'select pg_is_in_recovery(), inet_server_port()'   # reads run on a replica"
        ));
    }
    let mut servers = vec![Arc::new(std::sync::Mutex::new(primary))];
    servers.extend(
        replica_servers
            .into_iter()
            .map(|r| Arc::new(std::sync::Mutex::new(r))),
    );
    Ok(Demo {
        proxy,
        servers,
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
            // Replicas first, so they do not spend their last moments reconnecting to a stopped primary.
            for server in servers.into_iter().rev() {
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
