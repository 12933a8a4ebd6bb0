//! Configuration: the TOML file's types, loading, and validation with errors that name the field.
//!
//! A config is parsed (`serde`), then validated into problems that each carry a dotted field path, so
//! `pgscale check` can print every problem at once instead of stopping at the first.

mod operations;
mod routing;
mod server_tls;
mod sharding;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use operations::{AdminConfig, LogConfig, MetricsConfig};
pub use routing::{Consistency, HealthConfig, NoReplica, ReplicaConfig, RoutingConfig};
pub use server_tls::{ServerTls, SslMode};
pub(crate) use sharding::table_match_name;
pub use sharding::{KeyTypeName, ShardedTableConfig, ShardingConfig};
pub use validate::{Problem, ValidationError};

/// Everything pgscale reads from its config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub sharding: ShardingConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
}

/// The client-facing side: where to listen and what clients may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// `host:port` to accept clients on.
    pub address: String,
    /// Most client connections held at once (logged in or not); more are refused with `53300`.
    pub max_client_conn: usize,
    /// Connections beyond `max_client_conn` kept for `[admin] users`, so an operator can still log in
    /// (e.g. to the admin console) when clients or stalled sockets fill the proxy; anyone else who
    /// takes one of these is refused with `53300` once logged in.
    pub admin_reserved_conn: usize,
    /// Largest client message accepted, in bytes; larger ones close the connection with `08P01`.
    pub max_message_size: usize,
    /// A client must finish startup and authentication within this many milliseconds.
    pub startup_timeout_ms: u64,
    /// On SIGTERM/SIGINT, open transactions get this long to finish before connections are closed.
    pub shutdown_timeout_ms: u64,
    /// Threads serving clients: 1 = a single thread (least CPU per transaction on small machines),
    /// 0 = one per core.
    pub workers: usize,
    /// Client TLS: `disable` (SSLRequest answered `N`), `allow` (TLS offered, plaintext accepted) or
    /// `require` (plaintext logins refused with `28000`). Changing it needs a restart.
    pub tls_mode: crate::tls::TlsMode,
    /// PEM certificate chain (server certificate first) for client TLS; re-read on reload.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`; re-read on reload.
    pub tls_key: Option<String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: "127.0.0.1:6432".to_string(),
            max_client_conn: 10_000,
            admin_reserved_conn: 3,
            max_message_size: 64 * 1024 * 1024,
            startup_timeout_ms: 15_000,
            shutdown_timeout_ms: 30_000,
            workers: 0,
            tls_mode: crate::tls::TlsMode::Disable,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// How server connections are shared between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A client keeps one server connection for its whole session.
    Session,
    /// A client holds a server connection only while a transaction is open.
    Transaction,
}

/// Pool sizes and timeouts, shared by every (backend, database, user) pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Most server connections per (backend, database, user).
    pub pool_size: usize,
    /// Idle connections kept open (and opened ahead of demand) per pool.
    pub min_idle: usize,
    /// How long a client waits for a free server connection before `53300`.
    pub checkout_timeout_ms: u64,
    /// Idle server connections above `min_idle` are closed after this long.
    pub idle_timeout_ms: u64,
    /// Server connections are closed once this old (when idle), so memory and plans are renewed.
    pub max_lifetime_ms: u64,
    /// Opening a server connection (TCP + authentication) must finish within this.
    pub connect_timeout_ms: u64,
    /// What happens to a server connection a session-mode client (or a transaction-mode client
    /// pinned to it) leaves behind.
    pub server_reset: ServerReset,
}

/// How a server connection is made fit for the next client after a session-mode client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerReset {
    /// `DISCARD ALL` (settings back to the connection's startup values, prepared statements, temp
    /// tables, LISTENs, advisory locks, cursors gone) and reuse: the next client sees the same
    /// backend pid.
    #[default]
    DiscardAll,
    /// Close it: the next client gets a new backend (new pid), at the cost of a connect.
    Close,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            pool_size: 20,
            min_idle: 0,
            checkout_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 3_600_000,
            connect_timeout_ms: 5_000,
            server_reset: ServerReset::DiscardAll,
        }
    }
}

impl PoolConfig {
    pub fn checkout_timeout(&self) -> Duration {
        Duration::from_millis(self.checkout_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_millis(self.max_lifetime_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// How the proxy checks a client's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

/// A client login the proxy accepts, and the credentials it uses towards the servers for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password: checks clients and logs in to the servers.
    pub password: Option<String>,
    /// A stored SCRAM verifier (`SCRAM-SHA-256$…`), so the config holds no plain secret for client auth.
    pub scram_secret: Option<String>,
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// Role used on the servers; defaults to `name`.
    pub server_user: Option<String>,
    /// Password used on the servers; defaults to `password`.
    pub server_password: Option<String>,
    /// Overrides `pool.pool_size` for this user.
    pub pool_size: Option<usize>,
}

fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}

impl UserConfig {
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }
    pub fn server_password(&self) -> Option<&str> {
        self.server_password.as_deref().or(self.password.as_deref())
    }
}

/// One shard: a primary and the replicas that stream from it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The shard's name, from which its ring points are computed: the name, not the position in the
    /// list, decides which keys the shard owns. Default `shard{index}`, which is only stable while no
    /// shard is inserted before it: name shards explicitly before adding or removing any.
    pub name: Option<String>,
    /// `postgres://host:port` (any user, password or database in the URL are ignored).
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// TLS to this shard's primary and replicas (libpq's `sslmode`; default `prefer`). A replica's
    /// table keys and a URL's `?sslmode=` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
    /// PEM file of the CA(s) the servers' certificates must chain to (`verify-ca`, `verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
}

/// Where a backend server listens, and how to talk TLS to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    pub host: String,
    pub port: u16,
    /// Resolved from the shard, replica and URL settings ([`ShardConfig::primary_addr`]).
    pub tls: ServerTls,
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl BackendAddr {
    /// Parses `postgres://host:port[/…]`; the port defaults to 5432. TLS settings are the defaults:
    /// [`ShardConfig::primary_addr`] and [`ShardConfig::replica_addr`] resolve the configured ones.
    pub fn parse(url: &str) -> Result<BackendAddr, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if parsed.scheme() != "postgres" && parsed.scheme() != "postgresql" {
            return Err(format!(
                "scheme must be postgres://, got {}://",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "the URL has no host".to_string())?;
        Ok(BackendAddr {
            host: host.trim_matches(['[', ']']).to_string(),
            port: parsed.port().unwrap_or(5432),
            tls: ServerTls::default(),
        })
    }
}

/// Reading the file failed before validation could start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: ValidationError,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = Config::from_toml(&text).map_err(|message| LoadError::Parse {
            path: shown.clone(),
            message,
        })?;
        config.validate().map_err(|source| LoadError::Invalid {
            path: shown,
            source,
        })?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    /// The error gives the line and column but never quotes the line: it may hold a password.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let message = e.message().trim_end();
            match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!("TOML parse error at line {line}, column {column}: {message}")
                }
                None => format!("TOML parse error: {message}"),
            }
        })
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .address
            .parse()
            .map_err(|e| format!("`{}` is not host:port: {e}", self.listen.address))
    }

    /// Where `/metrics` is served, if configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        match &self.metrics.address {
            None => Ok(None),
            Some(address) => address
                .parse()
                .map(Some)
                .map_err(|e| format!("`{address}` is not host:port: {e}")),
        }
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first shard's primary.
    pub fn primary(&self) -> Result<BackendAddr, String> {
        let shard = self.shards.first().ok_or("no [[shards]] configured")?;
        shard.primary_addr(0).map_err(|p| p.to_string())
    }

    /// The user health checks log in as: `health.user`, else the first of `[[users]]`.
    pub fn health_user(&self) -> Option<&UserConfig> {
        match &self.health.user {
            Some(name) => self.user(name),
            None => self.users.first(),
        }
    }
}
