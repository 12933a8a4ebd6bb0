//! Config of the operator's surfaces: the admin console (`[admin]`), the Prometheus endpoint
//! (`[metrics]`) and logging (`[log]`).

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

/// Where Prometheus scrapes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` serving `GET /metrics`; none: no endpoint.
    pub address: Option<String>,
}

/// What the logs may contain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log every statement text a client sends (debugging only: texts may hold values users
    /// consider secret). Off by default: no statement, parameter or password is ever logged.
    pub statements: bool,
}
