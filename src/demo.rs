//! `pgscale demo`: local Postgres servers started from the machine's binaries with the proxy in front
//! of them, so a newcomer can point psql or pgbench at pgscale in one command. With `--shards N`, N
//! shard primaries with a sample schema sharded across them.
//!
//! The demo writes the config its proxy runs with to a file and loads it from there, so what it
//! prints as `CONFIG=` is exactly what runs and can be fed to `pgscale check` or `pgscale shard-of`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, LoadError};
use crate::listener::{self, ListenError, RunningProxy};
use crate::local_cluster::{start_shards, ClusterError, ClusterOptions, LocalPostgres, LocalShard};

/// The demo's application login (also its database).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app";
const SUPERUSER_PASSWORD: &str = "postgres";
/// The admin console's login in the demo (`ADMIN_URL`).
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin";

/// The sample schema a sharded demo creates on every shard (in database `app`, owned by `app`).
pub const SAMPLE_SCHEMA: &str = "\
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, \
created_at timestamptz DEFAULT now());
CREATE TABLE pitches (id bigint, user_id bigint NOT NULL, title text NOT NULL, \
amount numeric(12,2), created_at timestamptz DEFAULT now(), PRIMARY KEY (user_id, id));
";

/// How [`SAMPLE_SCHEMA`] is sharded: users by id, and pitches by their user, so a user's pitches
/// live with the user.
pub const SAMPLE_SHARDING: &str = r#"[sharding]
key_type = "bigint"

[[sharding.tables]]
name = "users"
column = "id"

[[sharding.tables]]
name = "pitches"
column = "user_id"
"#;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("starting Postgres failed: {0}")]
    Cluster(#[from] ClusterError),
    #[error("writing the demo's config failed: {0}")]
    WriteConfig(#[source] std::io::Error),
    #[error("generating the demo's certificate failed: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the demo's config does not load: {0}")]
    Config(#[from] LoadError),
    #[error("starting the proxy failed: {0}")]
    Listen(#[from] ListenError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// The proxy's port.
    pub port: u16,
    /// `Some(n)`: n shards with [`SAMPLE_SCHEMA`] sharded by [`SAMPLE_SHARDING`]. `None`: one
    /// unsharded server, as before sharding existed.
    pub shards: Option<usize>,
    /// Streaming replicas per shard; reads are routed to them.
    pub replicas: usize,
    /// Port of the Prometheus endpoint (0: any free port; the demo prints the URL).
    pub metrics_port: u16,
    /// Client TLS: a generated CA and server certificate (written next to the config) and
    /// `tls_mode = "require"`; the printed URLs say `sslmode=require`.
    pub tls: bool,
}

/// The demo's servers and proxy; dropping the servers stops them.
pub struct Demo {
    pub proxy: RunningProxy,
    pub servers: Vec<Arc<std::sync::Mutex<LocalPostgres>>>,
    /// The config the proxy runs with.
    pub config_path: PathBuf,
    /// The lines to print: `DATABASE_URL=`, `CONFIG=`, `BACKEND <shard> <role> <url>`, commands.
    pub lines: Vec<String>,
    /// Holds the config file; deleted by [`Demo::stop`].
    dir: PathBuf,
}

/// Starts the servers (creating the `app` role and database, and with `shards` the sample schema,
/// on every primary), writes their config and starts the proxy from it.
pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let sharded = options.shards.is_some();
    let count = options.shards.unwrap_or(1).max(1);
    let replicas = options.replicas;
    let shards = tokio::task::spawn_blocking(move || {
        let cluster = ClusterOptions {
            superuser_password: SUPERUSER_PASSWORD.to_string(),
            ..ClusterOptions::default()
        };
        start_shards(count, replicas, &cluster, |_, pg| prepare(pg, sharded))
    })
    .await??;

    let dir = std::env::temp_dir().join(format!(
        "pgscale-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let config_path = dir.join("pgscale.toml");
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let tls = if options.tls {
            Some(write_certs(&dir)?)
        } else {
            None
        };
        let mut text = config_toml(options.port, options.metrics_port, &shards, sharded);
        if let Some([_, cert, key]) = &tls {
            text = text
                .replacen("[listen]\n", &tls_toml(cert, key), 1)
                .replacen("/pgscale -c", "/pgscale?sslmode=require -c", 1);
        }
        std::fs::write(&config_path, text)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(DemoError::WriteConfig(e));
    }
    let started = match Config::load(&config_path) {
        Ok(config) => listener::start_from_file(config, config_path.clone())
            .await
            .map_err(DemoError::from),
        Err(e) => Err(e.into()),
    };
    let proxy = match started {
        Ok(proxy) => proxy,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };

    let mut lines = lines(&proxy, &shards, &config_path, sharded);
    if options.tls {
        tls_lines(&mut lines, &dir);
    }
    let servers = shards
        .into_iter()
        .flat_map(|shard| std::iter::once(shard.primary).chain(shard.replicas))
        .map(|pg| Arc::new(std::sync::Mutex::new(pg)))
        .collect();
    Ok(Demo {
        proxy,
        servers,
        config_path,
        lines,
        dir,
    })
}

/// The `app` role and database, and in a sharded demo the sample schema, on one shard's primary.
fn prepare(pg: &LocalPostgres, sharded: bool) -> Result<(), ClusterError> {
    pg.psql(&format!(
        "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'; CREATE DATABASE {APP_USER} OWNER {APP_USER};"
    ))?;
    if sharded {
        pg.psql_as(APP_USER, APP_PASSWORD, APP_USER, SAMPLE_SCHEMA)?;
    }
    Ok(())
}

/// The demo's config file: listener, users, the shards by name, and the sample sharding.
fn config_toml(port: u16, metrics_port: u16, shards: &[LocalShard], sharded: bool) -> String {
    let url = |pg: &LocalPostgres| quoted(&format!("postgres://{}:{}", pg.host(), pg.port()));
    let mut text = format!(
        "# Written by `pgscale demo`, which runs its proxy from it. Try:\n\
         #   pgscale check --config <this file>\n\
         #   pgscale shard-of --config <this file> 42\n\
         #   psql postgres://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{port}/pgscale -c 'SHOW POOLS'\n\
         [listen]\naddress = {}\n\n[pool]\nmode = \"transaction\"\npool_size = 20\n\n\
         [admin]\nusers = [\"{ADMIN_USER}\"]\n\n[metrics]\naddress = {}\n\n\
         [[users]]\nname = {}\npassword = {}\n\n[[users]]\nname = \"postgres\"\npassword = {}\n\n\
         # The admin console's login (it has no role on the servers).\n\
         [[users]]\nname = \"{ADMIN_USER}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n",
        quoted(&format!("127.0.0.1:{port}")),
        quoted(&format!("127.0.0.1:{metrics_port}")),
        quoted(APP_USER),
        quoted(APP_PASSWORD),
        quoted(SUPERUSER_PASSWORD),
    );
    if sharded {
        text.push_str(SAMPLE_SHARDING);
        text.push('\n');
    }
    for (i, shard) in shards.iter().enumerate() {
        let replicas: Vec<String> = shard.replicas.iter().map(url).collect();
        text.push_str(&format!(
            "[[shards]]\nname = \"shard{i}\"\nprimary = {}\nreplicas = [{}]\n\n",
            url(&shard.primary),
            replicas.join(", ")
        ));
    }
    text
}

/// A CA and a server certificate for localhost and 127.0.0.1, written under `dir`: `[ca, cert, key]`.
fn write_certs(dir: &Path) -> std::io::Result<[PathBuf; 3]> {
    let certs = crate::tls::certs::generate(&["localhost", "127.0.0.1"])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    crate::tls::certs::write_to(&certs, dir)
}

/// `[listen]` with client TLS required.
fn tls_toml(cert: &Path, key: &Path) -> String {
    format!(
        "[listen]\n# Clients must use TLS (sslmode=require); the CA that signed the certificate is \
         ca.crt next to this file.\ntls_mode = \"require\"\ntls_cert = {}\ntls_key = {}\n",
        quoted(&cert.display().to_string()),
        quoted(&key.display().to_string())
    )
}

/// The printed URLs with `sslmode=require`, the CA's path, and a `verify-full` psql command.
fn tls_lines(lines: &mut Vec<String>, dir: &Path) {
    let ca = dir.join("ca.crt");
    for line in lines.iter_mut() {
        // Only the proxy's URLs (DATABASE_URL, ADMIN_URL and the commands), not BACKEND lines.
        if line.starts_with("BACKEND") {
            continue;
        }
        let starts: Vec<usize> = line.match_indices("postgres://").map(|(i, _)| i).collect();
        for start in starts.into_iter().rev() {
            let end = line[start..]
                .find(['"', ' '])
                .map_or(line.len(), |i| start + i);
            line.insert_str(end, "?sslmode=require");
        }
    }
    lines.push(format!("CA_CERT={}", ca.display()));
    if let Some(url) = lines.iter().find_map(|l| l.strip_prefix("DATABASE_URL=")) {
        let verify = url.replace("@127.0.0.1:", "@localhost:").replace(
            "sslmode=require",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        );
        lines.push(format!("psql \"{verify}\"   # verifies the certificate"));
    }
}

/// A TOML basic string holding `s`, escaped.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// What the demo prints: where to connect, its config, every server, and commands to paste.
fn lines(proxy: &RunningProxy, shards: &[LocalShard], config: &Path, sharded: bool) -> Vec<String> {
    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@{}/{APP_USER}",
        proxy.local_addr
    );
    let backend = |i: usize, role: &str, pg: &LocalPostgres| {
        format!(
            "BACKEND {i} {role} postgres://postgres:{SUPERUSER_PASSWORD}@{}:{}/postgres",
            pg.host(),
            pg.port()
        )
    };
    let mut lines = vec![
        format!("DATABASE_URL={url}"),
        format!(
            "ADMIN_URL=postgres://{ADMIN_USER}:{ADMIN_PASSWORD}@{}/{}",
            proxy.local_addr,
            crate::admin::ADMIN_DATABASE
        ),
    ];
    if let Some(metrics) = proxy.metrics_addr {
        lines.push(format!("METRICS_URL=http://{metrics}/metrics"));
    }
    lines.push(format!("CONFIG={}", config.display()));
    for (i, shard) in shards.iter().enumerate() {
        lines.push(backend(i, "primary", &shard.primary));
        lines.extend(shard.replicas.iter().map(|r| backend(i, "replica", r)));
    }
    lines.extend([
        format!("psql \"{url}\""),
        format!("pgbench -i -s 10 \"{url}\""),
        format!("pgbench -c 50 -j 2 -T 20 -M prepared \"{url}\""),
    ]);
    if shards.iter().any(|s| !s.replicas.is_empty()) {
        lines.push(format!(
            "psql \"{url}\" -c 'select pg_is_in_recovery(), inet_server_port()'   # reads run on a replica"
        ));
    }
    if sharded {
        lines.push(format!(
            "pgscale shard-of --config {} 42   # the shard holding users.id = 42 and that user's pitches",
            config.display()
        ));
    }
    lines
}

impl Demo {
    /// Stops the proxy, then every server, and deletes the config file.
    pub async fn stop(self) {
        self.proxy.shutdown().await;
        let servers = self.servers;
        let dir = self.dir;
        let _ = tokio::task::spawn_blocking(move || {
            // Replicas before their primary (they follow it in the list), so they do not spend their
            // last moments reconnecting to a stopped primary.
            for server in servers.into_iter().rev() {
                if let Ok(mut pg) = server.lock() {
                    if let Err(e) = pg.stop() {
                        tracing::warn!(error = %e, "stopping demo Postgres failed");
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "deleting the demo's config failed");
            }
        })
        .await;
    }
}
