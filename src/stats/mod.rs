//! Counters and registries behind `SHOW STATS`/`SHOW CLIENTS`/`SHOW SERVERS` and the Prometheus
//! endpoint: per-database totals, every connected client, and every open server connection.
//!
//! Sessions update plain atomics (relaxed) at request and transaction boundaries, never per row;
//! the admin console and the metrics sampler read them when asked.

mod clients;
mod servers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

pub use clients::{ClientEntry, ClientListing, ClientRegistry, ClientState, NewClient};
pub use servers::{ServerEntry, ServerRegistry, ServerState, ServerTracker};

/// Totals for one database, as `SHOW STATS` reports them (times in microseconds).
#[derive(Debug, Default)]
pub struct DbStats {
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    /// Queries by route: sent to a primary, to a replica, or fanned out over several shards.
    pub primary_queries: AtomicU64,
    pub replica_queries: AtomicU64,
    pub fanout_queries: AtomicU64,
}

/// Where a query was answered, for the per-route counters and latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    Fanout,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
            Route::Fanout => "fanout",
        }
    }
}

impl DbStats {
    pub fn add_query(&self, route: Route, took: Duration) {
        self.query_count.fetch_add(1, Ordering::Relaxed);
        self.query_time_us
            .fetch_add(micros(took), Ordering::Relaxed);
        let by_route = match route {
            Route::Primary => &self.primary_queries,
            Route::Replica => &self.replica_queries,
            Route::Fanout => &self.fanout_queries,
        };
        by_route.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_transaction(&self, took: Duration) {
        self.xact_count.fetch_add(1, Ordering::Relaxed);
        self.xact_time_us.fetch_add(micros(took), Ordering::Relaxed);
    }

    pub fn add_bytes(&self, received: u64, sent: u64) {
        if received > 0 {
            self.received.fetch_add(received, Ordering::Relaxed);
        }
        if sent > 0 {
            self.sent.fetch_add(sent, Ordering::Relaxed);
        }
    }
}

/// Everything the proxy counts, shared by every session.
#[derive(Default)]
pub struct Stats {
    databases: DashMap<String, Arc<DbStats>>,
    pub clients: ClientRegistry,
    /// Errors sent to clients, by SQLSTATE class (its first two characters).
    errors: DashMap<[u8; 2], u64>,
    pub clients_accepted: AtomicU64,
    pub refused_max_client_conn: AtomicU64,
    pub refused_auth: AtomicU64,
    pub refused_startup: AtomicU64,
    /// Client TLS handshakes that failed or timed out (the connection was closed).
    pub tls_handshakes_failed: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// When the proxy started (for `SHOW STATS` averages).
    pub started: Option<SystemTime>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Some(SystemTime::now()),
            ..Default::default()
        }
    }

    /// The counters of `database`, created on first use (a session keeps the `Arc`).
    pub fn database(&self, database: &str) -> Arc<DbStats> {
        if let Some(stats) = self.databases.get(database) {
            return stats.clone();
        }
        self.databases
            .entry(database.to_string())
            .or_default()
            .clone()
    }

    /// Every database's counters, sorted by name.
    pub fn databases(&self) -> Vec<(String, Arc<DbStats>)> {
        let mut all: Vec<_> = self
            .databases
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Counts an `ErrorResponse` sent to a client.
    pub fn count_error(&self, sqlstate: &[u8]) {
        let class = match sqlstate {
            [a, b, ..] => [*a, *b],
            _ => *b"XX",
        };
        *self.errors.entry(class).or_insert(0) += 1;
    }

    /// Errors by SQLSTATE class, sorted.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let mut all: Vec<_> = self
            .errors
            .iter()
            .map(|e| (String::from_utf8_lossy(e.key()).into_owned(), *e.value()))
            .collect();
        all.sort();
        all
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch (0 before it, which cannot happen on a sane clock).
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(micros).unwrap_or(0)
}
