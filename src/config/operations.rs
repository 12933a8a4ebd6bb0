//! Config of the operator's surfaces: the admin console (`[admin]`), the Prometheus endpoint
//! (`[metrics]`) and logging (`[log]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who may open the admin console (`psql -U <user> pgscale`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Logins (from `[[users]]`) allowed every admin command.
    pub users: Vec<String>,
    /// Logins (from `[[users]]`) allowed the `SHOW` commands only.
    pub stats_users: Vec<String>,
}

/// Where Prometheus scrapes, and the bounds that keep stalled or hostile HTTP clients from
/// exhausting file descriptors the database side needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` serving `GET /metrics`; none: no endpoint.
    pub address: Option<String>,
    /// Most HTTP connections served at once; more are answered 503 and closed at once.
    pub max_connections: usize,
    /// A connection must send a request's headers within this many milliseconds.
    pub header_timeout_ms: u64,
    /// A connection is closed this many milliseconds after it was accepted, whatever it does.
    pub request_timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: None,
            max_connections: 16,
            header_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl MetricsConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// What the logs may contain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log every statement text a client sends (debugging only: texts may hold values users
    /// consider secret). Off by default: no statement, parameter or password is ever logged.
    pub statements: bool,
}
