//! TLS-enabled Postgres servers and proxies in front of them, for `tests/tls_servers.rs`.
//!
//! A server started with `hostssl_only` refuses plaintext TCP, so [`super::Env::direct`] (tokio-postgres
//! without TLS) cannot reach it: checks from the server side go through `LocalPostgres::psql`, whose
//! libpq negotiates TLS by itself.

use std::time::Duration;

use pgscale::config::{Config, PoolMode};
use pgscale::listener::{self, RunningProxy};
use pgscale::local_cluster::{LocalPostgres, TlsOptions};
use tokio_postgres::Client;

use super::{
    cluster_options, config_for, create_test_roles, guard_against_hangs, simple_rows, try_connect,
    APP_PASSWORD, APP_USER, SUPERUSER_PASSWORD,
};

/// Starts Postgres with `tls` (roles and database as [`super::start_postgres`]) and `replicas`
/// streaming replicas of it, which get their own certificates from the same CA — blocking.
pub fn start_tls_postgres(tls: TlsOptions, replicas: usize) -> (LocalPostgres, Vec<LocalPostgres>) {
    guard_against_hangs();
    let mut options = cluster_options();
    options.tls = Some(tls);
    let pg = LocalPostgres::start(&options).expect("start TLS postgres");
    create_test_roles(&pg).expect("create roles");
    let replicas = (0..replicas)
        .map(|_| LocalPostgres::start_replica_of(&pg).expect("start TLS replica"))
        .collect();
    (pg, replicas)
}

/// A proxy in front of `pg` (and `replicas`), its config changed by `tweak` (where tests set
/// `sslmode` / `sslrootcert`); several can run against the same server.
pub struct TlsProxy {
    pub proxy: Option<RunningProxy>,
    pub port: u16,
    /// The config file, so [`TlsProxy::reload`] can change it.
    config_path: std::path::PathBuf,
}

impl TlsProxy {
    pub async fn start(
        pg: &LocalPostgres,
        replicas: &[LocalPostgres],
        tweak: impl FnOnce(&mut Config),
    ) -> TlsProxy {
        let mut config = config_for(pg, PoolMode::Transaction, 4);
        config.shards[0].replicas = replicas
            .iter()
            .map(|r| format!("postgres://{}:{}", r.host(), r.port()).into())
            .collect();
        tweak(&mut config);
        if let Err(e) = config.validate() {
            panic!("test config is invalid: {e}");
        }
        let config_path = std::env::temp_dir().join(format!(
            "pgscale-tls-test-{}-{:08x}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        super::write_config(&config_path, &config);
        let proxy = listener::start_from_file(config, config_path.clone())
            .await
            .expect("start proxy");
        TlsProxy {
            port: proxy.local_addr.port(),
            proxy: Some(proxy),
            config_path,
        }
    }

    /// Changes the config file and runs `RELOAD` on the admin console.
    pub async fn reload(&self, change: impl FnOnce(&mut Config)) {
        let mut config = Config::load(&self.config_path).expect("read config");
        change(&mut config);
        super::write_config(&self.config_path, &config);
        let admin = self.admin().await;
        super::within("RELOAD", admin.simple_query("RELOAD"))
            .await
            .expect("RELOAD");
    }

    pub async fn try_app(&self) -> Result<Client, tokio_postgres::Error> {
        try_connect(&format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_USER}",
            self.port
        ))
        .await
    }

    pub async fn app(&self) -> Client {
        super::within("connect through the proxy", self.try_app())
            .await
            .expect("connect through the proxy")
    }

    pub async fn admin(&self) -> Client {
        super::within(
            "connect to the admin console",
            try_connect(&format!(
                "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname=pgscale",
                self.port
            )),
        )
        .await
        .expect("admin console")
    }

    /// `(healthy, breaker)` of the backend on `port`, from `SHOW SHARDS`.
    pub async fn backend_state(&self, port: u16) -> (String, String) {
        let admin = self.admin().await;
        let rows = super::within("SHOW SHARDS", simple_rows(&admin, "SHOW SHARDS"))
            .await
            .expect("SHOW SHARDS");
        // Columns: shard, index, vnodes, key_share, role, host, port, zone, healthy, breaker, …
        rows.into_iter()
            .find(|r| r.get(6).cloned().flatten() == Some(port.to_string()))
            .map(|r| {
                (
                    r.get(8).cloned().flatten().unwrap_or_default(),
                    r.get(9).cloned().flatten().unwrap_or_default(),
                )
            })
            .unwrap_or_else(|| panic!("no backend on port {port} in SHOW SHARDS"))
    }

    /// Waits (up to 20 s) until the backend on `port` shows `want` as `(healthy, breaker)`.
    pub async fn wait_backend_state(&self, port: u16, want: (&str, &str)) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (healthy, breaker) = self.backend_state(port).await;
            if (healthy.as_str(), breaker.as_str()) == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backend {port}: healthy={healthy} breaker={breaker}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(proxy) = self.proxy.take() {
            super::within("proxy shutdown", proxy.shutdown()).await;
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
    }
}
