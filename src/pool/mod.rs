//! Server connection pools: one per (backend, database, user), bounded by a semaphore, with idle
//! connections checked before reuse and a janitor that retires old ones; and the backends they connect
//! to, with their health, circuit breakers and the choice of replica.
//!
//! - [`server`]: one server connection. [`query`]: hidden queries that return rows.
//! - [`backend`]: one server as the proxy sees it (role, breaker, health, open sockets).
//! - [`breaker`]: closed / open / half-open. [`health`]: the background poller. [`lsn`]: WAL positions.
//! - [`topology`]: every shard's backends. [`balancer`]: which replica a read goes to.

pub mod backend;
pub mod balancer;
pub mod breaker;
#[cfg(test)]
mod fake_server;
pub mod health;
pub mod lsn;
pub mod query;
pub mod server;
pub mod server_stream;
pub mod topology;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{BackendAddr, PoolConfig};
use crate::stats::ServerRegistry;
use backend::Backend;
use breaker::FailureKind;
use server::{ConnectSpec, ServerConn, ServerError};

/// Parameter names and values, as `ParameterStatus` reports them.
pub type ParameterList = Vec<(String, String)>;

/// Identifies a pool: which server, which database, which login.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: Arc<BackendAddr>,
    pub database: String,
    pub user: String,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.user, self.database, self.addr)
    }
}

/// Why no server connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no server connection free within {waited:?} (pool_size = {size})")]
    Timeout { waited: Duration, size: usize },
    #[error(transparent)]
    Connect(#[from] ServerError),
    #[error("pool is closed")]
    Closed,
}

/// Sizes and timeouts of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub min_idle: usize,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

impl PoolSettings {
    pub fn from_config(config: &PoolConfig, size_override: Option<usize>) -> Self {
        PoolSettings {
            size: size_override.unwrap_or(config.pool_size),
            min_idle: config.min_idle,
            checkout_timeout: config.checkout_timeout(),
            idle_timeout: config.idle_timeout(),
            max_lifetime: config.max_lifetime(),
        }
    }
}

/// Connections to one (backend, database, user).
pub struct Pool {
    pub key: PoolKey,
    /// The server this pool connects to: connects feed its breaker, connections join its registry.
    backend: Arc<Backend>,
    /// Credentials and timeouts; replaced by a config reload.
    spec: ArcSwap<ConnectSpec>,
    /// Sizes and timeouts; replaced by a config reload ([`Pool::reconfigure`]).
    settings: ArcSwap<PoolSettings>,
    permits: Arc<Semaphore>,
    /// Permits that exist (handed out or free): `settings.size` once a shrink has caught up.
    size: AtomicUsize,
    /// Bumped by `RECONNECT`: connections opened before are closed instead of reused.
    generation: AtomicU64,
    /// Open connections, for `SHOW SERVERS`.
    pub servers: ServerRegistry,
    /// Checkouts that found no free connection and waited; total wait; those that gave up.
    pub waits: AtomicU64,
    pub wait_us: AtomicU64,
    pub timeouts: AtomicU64,
    /// Where checkout waits are recorded for Prometheus (set by whoever creates the pool).
    pub wait_seconds: std::sync::OnceLock<metrics::Histogram>,
    /// Checkouts waiting for a permit right now.
    waiting: AtomicUsize,
    /// Idle connections, most recently used last (reused first, so old ones age out).
    idle: Mutex<Vec<ServerConn>>,
    /// Connections open (idle + checked out).
    open: AtomicUsize,
    /// Server-side statement names that some connection of this pool prepared without error.
    validated: DashMap<Arc<str>, ()>,
    /// What clients with given startup settings (by fingerprint) are told at login, learnt from the
    /// first such login, so later ones need no server connection.
    logins: DashMap<u64, Arc<ParameterList>>,
}

/// Distinct startup-setting combinations remembered per pool.
const MAX_LOGIN_CACHE: usize = 1_000;

/// A checked-out server connection. Dropping it closes the connection (the safe default for anything
/// dirty); [`PooledConn::release`] returns a clean one to the pool.
pub struct PooledConn {
    /// Always `Some` until `release` takes it.
    conn: Option<ServerConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("connection present until released")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("connection present until released")
    }
}

impl PooledConn {
    /// Gives a clean, idle connection back for reuse.
    pub fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.last_used = Instant::now();
        if let Some(tracker) = &conn.tracker {
            tracker.entry.checked_in();
        }
        if conn.created.elapsed() >= self.pool.settings().max_lifetime
            || self.pool.permits.is_closed()
            || conn.generation != self.pool.generation.load(Ordering::Relaxed)
        {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(conn);
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Pool {
    pub fn new(
        key: PoolKey,
        spec: ConnectSpec,
        settings: PoolSettings,
        backend: Arc<Backend>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            key,
            backend,
            spec: ArcSwap::from_pointee(spec),
            permits: Arc::new(Semaphore::new(settings.size)),
            size: AtomicUsize::new(settings.size),
            settings: ArcSwap::from_pointee(settings),
            generation: AtomicU64::new(0),
            servers: ServerRegistry::default(),
            waits: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            wait_seconds: std::sync::OnceLock::new(),
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            validated: DashMap::new(),
            logins: DashMap::new(),
        })
    }

    /// The current sizes and timeouts (a snapshot: a reload may replace them).
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Applies reloaded settings and credentials. Growing the pool frees permits at once; shrinking
    /// takes permits away as connections come back, so nobody holding one is interrupted.
    pub fn reconfigure(self: &Arc<Self>, settings: PoolSettings, spec: ConnectSpec) {
        let old = self.size.swap(settings.size, Ordering::Relaxed);
        if settings.size > old {
            self.permits.add_permits(settings.size - old);
        } else if settings.size < old {
            let surplus = (old - settings.size) as u32;
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                    taken.forget();
                }
            });
        }
        // Idle connections beyond the new size close now, not after idle_timeout.
        let trimmed = match self.idle.lock() {
            Ok(mut idle) => {
                let excess = idle.len().saturating_sub(settings.size);
                idle.drain(..excess).count()
            }
            Err(_) => 0,
        };
        self.open.fetch_sub(trimmed, Ordering::Relaxed);
        self.settings.store(Arc::new(settings));
        self.spec.store(Arc::new(spec));
    }

    /// `RECONNECT`: idle connections close now, busy ones when they are given back.
    pub fn reconnect(&self) -> usize {
        self.generation.fetch_add(1, Ordering::Relaxed);
        let closed = match self.idle.lock() {
            Ok(mut idle) => {
                let n = idle.len();
                idle.clear();
                n
            }
            Err(_) => 0,
        };
        self.open.fetch_sub(closed, Ordering::Relaxed);
        closed
    }

    /// Clients waiting for a connection of this pool right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Connections checked out right now (the balancer's load measure).
    pub fn in_use(&self) -> usize {
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.permits.available_permits())
    }

    /// Waits up to `checkout_timeout` for a connection, replacing idle ones that died meanwhile.
    pub async fn checkout(self: &Arc<Self>) -> Result<PooledConn, CheckoutError> {
        self.checkout_for(0).await
    }

    /// [`Pool::checkout`] on behalf of client `client_id` (shown by `SHOW SERVERS` as its link).
    pub async fn checkout_for(
        self: &Arc<Self>,
        client_id: u64,
    ) -> Result<PooledConn, CheckoutError> {
        let conn = self.checkout_inner().await?;
        if let Some(tracker) = &conn.tracker {
            tracker.entry.checked_out(client_id);
        }
        Ok(conn)
    }

    async fn checkout_inner(self: &Arc<Self>) -> Result<PooledConn, CheckoutError> {
        let settings = self.settings();
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(CheckoutError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let started = Instant::now();
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let wait = self.permits.clone().acquire_owned();
                let waited = tokio::time::timeout(settings.checkout_timeout, wait).await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                let waited_for = started.elapsed();
                self.wait_us
                    .fetch_add(crate::stats::micros(waited_for), Ordering::Relaxed);
                if let Some(histogram) = self.wait_seconds.get() {
                    histogram.record(waited_for.as_secs_f64());
                }
                match waited {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(CheckoutError::Closed),
                    Err(_) => {
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(CheckoutError::Timeout {
                            waited: settings.checkout_timeout,
                            size: settings.size,
                        });
                    }
                }
            }
        };
        let generation = self.generation.load(Ordering::Relaxed);
        while let Some(mut conn) = self.pop_idle() {
            if conn.created.elapsed() < settings.max_lifetime
                && conn.generation == generation
                && conn.looks_alive()
            {
                return Ok(PooledConn {
                    conn: Some(conn),
                    pool: self.clone(),
                    _permit: permit,
                });
            }
            tracing::debug!(pool = %self.key, pid = conn.pid, "dropping dead or expired idle server connection");
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        let conn = self.connect().await?;
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    fn pop_idle(&self) -> Option<ServerConn> {
        self.idle.lock().ok()?.pop()
    }

    /// Opens a connection, registered with the backend. Only failures that say the server is down or
    /// hung count against its breaker; an `ErrorResponse` (bad password, unknown database, too many
    /// connections) comes from a server that is up.
    async fn connect(&self) -> Result<ServerConn, ServerError> {
        let spec = self.spec.load_full();
        let mut conn = match ServerConn::connect(&spec).await {
            Ok(conn) => conn,
            Err(e) => {
                if matches!(e, ServerError::Tls { .. }) {
                    tracing::warn!(pool = %self.key, error = %e, "TLS to server failed");
                }
                if let Some(kind) = FailureKind::of_connect_error(&e) {
                    self.backend.record_failure(kind);
                }
                return Err(e);
            }
        };
        conn.registration = Some(self.backend.register_conn(conn.stream.as_raw_fd()));
        conn.tracker = Some(self.servers.add(conn.pid, conn.stream.local_addr().ok()));
        conn.generation = self.generation.load(Ordering::Relaxed);
        self.backend.record_success();
        self.open.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pool = %self.key, pid = conn.pid, "opened server connection");
        Ok(conn)
    }

    /// The `ParameterStatus` list for clients whose startup settings have this fingerprint, if known.
    pub fn login_params(&self, fingerprint: u64) -> Option<Arc<ParameterList>> {
        self.logins.get(&fingerprint).map(|p| p.clone())
    }

    pub fn remember_login_params(&self, fingerprint: u64, params: ParameterList) {
        if self.logins.len() >= MAX_LOGIN_CACHE {
            self.logins.clear();
        }
        self.logins.insert(fingerprint, Arc::new(params));
    }

    /// Records that a statement prepares without error on this pool's database.
    pub fn mark_validated(&self, server_name: &Arc<str>) {
        if !self.validated.contains_key(server_name) {
            self.validated.insert(server_name.clone(), ());
        }
    }

    /// Whether a statement is known to prepare without error here, so a client's `Parse` can be
    /// answered before any server connection is free (the real `Parse` goes out at first use).
    pub fn is_validated(&self, server_name: &str) -> bool {
        self.validated.contains_key(server_name)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Closes idle connections past `idle_timeout` (above `min_idle`) or `max_lifetime`, then opens
    /// connections up to `min_idle`.
    pub async fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let settings = self.settings();
        let generation = self.generation.load(Ordering::Relaxed);
        let retired = {
            let Ok(mut idle) = self.idle.lock() else {
                return;
            };
            let before = idle.len();
            let mut keep = Vec::with_capacity(before);
            let mut surplus = before.saturating_sub(settings.min_idle);
            // Oldest-used first, so the ones dropped for idleness are the coldest.
            for mut conn in idle.drain(..) {
                let too_old = now.duration_since(conn.created) >= settings.max_lifetime
                    || conn.generation != generation;
                let too_idle =
                    surplus > 0 && now.duration_since(conn.last_used) >= settings.idle_timeout;
                if too_old || too_idle || !conn.looks_alive() {
                    surplus = surplus.saturating_sub(1);
                } else {
                    keep.push(conn);
                }
            }
            *idle = keep;
            before - idle.len()
        };
        if retired > 0 {
            self.open.fetch_sub(retired, Ordering::Relaxed);
            tracing::debug!(pool = %self.key, retired, "closed idle server connections");
        }
        while self.idle_connections() < settings.min_idle {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match self.connect().await {
                Ok(conn) => PooledConn {
                    conn: Some(conn),
                    pool: self.clone(),
                    _permit: permit,
                }
                .release(),
                Err(e) => {
                    tracing::warn!(pool = %self.key, error = %e, "cannot open min_idle connection");
                    break;
                }
            }
        }
    }

    /// Refuses new checkouts and closes idle connections.
    pub fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            let n = idle.len();
            idle.clear();
            self.open.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Every pool of the running proxy, created on first use.
#[derive(Default)]
pub struct Pools {
    pools: DashMap<PoolKey, Arc<Pool>>,
}

impl Pools {
    /// The pool for `key`, created with `make` if it does not exist yet.
    pub fn get_or_create(
        &self,
        key: PoolKey,
        make: impl FnOnce(&PoolKey) -> Arc<Pool>,
    ) -> Arc<Pool> {
        if let Some(pool) = self.pools.get(&key) {
            return pool.clone();
        }
        let pool = make(&key);
        self.pools.entry(key).or_insert(pool).clone()
    }

    /// Forgets a pool (its backend left the topology); clients still holding it finish with it.
    pub fn remove(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.pools.remove(key).map(|(_, pool)| pool)
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().map(|p| p.value().clone()).collect()
    }

    /// Runs [`Pool::maintain`] on every pool once per `period` until `stop` fires.
    pub async fn run_janitor(
        self: Arc<Self>,
        period: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    for pool in self.all() {
                        pool.maintain().await;
                    }
                }
            }
        }
    }

    pub fn close_all(&self) {
        for pool in self.all() {
            pool.close();
        }
    }
}

#[cfg(test)]
mod tests;
