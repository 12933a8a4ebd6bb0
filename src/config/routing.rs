//! Config of read/write splitting (`[routing]`) and of backend health checks and circuit breakers
//! (`[health]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How reads are spread over replicas.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send reads to replicas (transaction mode only: a session-mode client stays on the primary).
    pub read_write_split: bool,
    /// `read-your-writes`: after a client's write commits, its reads go only to replicas that have
    /// replayed it (else to the primary). `eventual`: any replica within the lag limits.
    pub consistency: Consistency,
    /// A replica further behind the primary than this many bytes of WAL takes no reads (0: no limit).
    pub max_replica_lag_bytes: u64,
    /// A replica whose last replayed transaction is older than this (while WAL is pending) takes no
    /// reads (0: no limit).
    pub max_replica_lag_ms: u64,
    /// Where reads go when no replica qualifies.
    pub no_replica: NoReplica,
    /// This proxy's zone: replicas in the same zone are preferred when they qualify.
    pub zone: Option<String>,
    /// Functions that write, beyond the built-in list (`nextval`, `pg_advisory_lock`, …): `name` or
    /// `schema.name`. A `SELECT` calling one goes to the primary.
    pub write_functions: Vec<String>,
    /// User-defined `VOLATILE` functions (learnt from `pg_proc`) count as writes.
    pub volatile_functions_are_writes: bool,
    /// Distinct statement shapes whose routing decision is remembered.
    pub plan_cache_size: usize,
    /// How often the list of user-defined functions is re-read from each database, in milliseconds.
    pub catalog_refresh_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_write_split: true,
            consistency: Consistency::ReadYourWrites,
            max_replica_lag_bytes: 16 * 1024 * 1024,
            max_replica_lag_ms: 10_000,
            no_replica: NoReplica::Primary,
            zone: None,
            write_functions: Vec::new(),
            volatile_functions_are_writes: true,
            plan_cache_size: 10_000,
            catalog_refresh_ms: 60_000,
        }
    }
}

impl RoutingConfig {
    pub fn catalog_refresh(&self) -> Duration {
        Duration::from_millis(self.catalog_refresh_ms)
    }
}

/// What a client may read after it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Consistency {
    #[serde(rename = "read-your-writes")]
    ReadYourWrites,
    #[serde(rename = "eventual")]
    Eventual,
}

/// Where reads go when no replica is healthy and fresh enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoReplica {
    Primary,
    Fail,
}

/// Background health checks and circuit breakers, per backend server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each backend is polled (round-trip time, WAL position, replica lag). Also how soon
    /// after a write a client's reads can return to replicas.
    pub interval_ms: u64,
    /// A poll not answered within this counts as a failure (this is how a hung server is found).
    pub timeout_ms: u64,
    /// The login used for health checks: one of `[[users]]` (default: the first).
    pub user: Option<String>,
    /// The database health checks connect to.
    pub database: String,
    /// Consecutive failures (refused or timed-out connects, failed polls, connections broken
    /// mid-query) that open a backend's circuit breaker.
    pub failure_threshold: u32,
    /// How long an open breaker keeps traffic away before one probe is let through.
    pub cooldown_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 25,
            timeout_ms: 1_000,
            user: None,
            database: "postgres".to_string(),
            failure_threshold: 3,
            cooldown_ms: 5_000,
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }
}

/// A replica: its URL alone, or a table with a zone and TLS settings (over the shard's).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ReplicaConfig {
    Url(String),
    Detailed {
        url: String,
        #[serde(default)]
        zone: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sslmode: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sslrootcert: Option<String>,
    },
}

impl ReplicaConfig {
    pub fn url(&self) -> &str {
        match self {
            ReplicaConfig::Url(url) | ReplicaConfig::Detailed { url, .. } => url,
        }
    }

    pub fn zone(&self) -> Option<&str> {
        match self {
            ReplicaConfig::Url(_) => None,
            ReplicaConfig::Detailed { zone, .. } => zone.as_deref(),
        }
    }
}

impl From<String> for ReplicaConfig {
    fn from(url: String) -> Self {
        ReplicaConfig::Url(url)
    }
}
