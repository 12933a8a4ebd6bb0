//! One backend server as the proxy sees it: its role and zone, its circuit breaker, its health as last
//! polled, and the sockets of its open connections, so a dead or hung server can be cut off at once.

use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::breaker::{Breaker, BreakerState, FailureKind};
use crate::config::{BackendAddr, HealthConfig};

/// What a backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One backend server: shared by every pool, session and the health poller that deal with it.
pub struct Backend {
    pub addr: Arc<BackendAddr>,
    pub role: Role,
    pub shard: usize,
    pub zone: Option<String>,
    pub breaker: Breaker,
    pub health: Health,
    /// Raw fds of open server connections, by registration id.
    conns: Mutex<ConnRegistry>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr.to_string())
            .field("role", &self.role)
            .field("shard", &self.shard)
            .field("zone", &self.zone)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct ConnRegistry {
    next_id: u64,
    fds: HashMap<u64, RawFd>,
}

/// Keeps a server connection's socket in its backend's registry; dropping it unregisters the socket.
/// It must be dropped before the socket is closed (in `ServerConn` it is the first field), so the
/// registry never holds an fd that was closed, let alone one reused by another socket.
pub struct ConnRegistration {
    backend: Arc<Backend>,
    id: u64,
}

impl Drop for ConnRegistration {
    fn drop(&mut self) {
        self.backend.lock_conns().fds.remove(&self.id);
    }
}

impl Backend {
    pub fn new(
        addr: Arc<BackendAddr>,
        role: Role,
        shard: usize,
        zone: Option<String>,
        health: &HealthConfig,
    ) -> Arc<Backend> {
        Arc::new(Backend {
            addr,
            role,
            shard,
            zone,
            breaker: Breaker::new(health.failure_threshold, health.cooldown()),
            health: Health::new(health),
            conns: Mutex::new(ConnRegistry::default()),
        })
    }

    /// The registry holds plain numbers; a panic elsewhere cannot leave it inconsistent.
    fn lock_conns(&self) -> MutexGuard<'_, ConnRegistry> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an open server connection's socket; dropping the registration unregisters it.
    pub fn register_conn(self: &Arc<Self>, fd: RawFd) -> ConnRegistration {
        let mut conns = self.lock_conns();
        let id = conns.next_id;
        conns.next_id += 1;
        conns.fds.insert(id, fd);
        ConnRegistration {
            backend: self.clone(),
            id,
        }
    }

    /// Server connections currently registered.
    pub fn registered_conns(&self) -> usize {
        self.lock_conns().fds.len()
    }

    /// `shutdown(SHUT_RDWR)` on every registered socket, so sessions waiting on a hung or dead server
    /// see EOF at once (their read fails and their retry or error path runs) instead of waiting for
    /// TCP to give up. The sockets stay open (their owners close them). Returns how many were cut.
    pub fn sever_connections(&self) -> usize {
        let conns = self.lock_conns();
        let mut severed = 0;
        for &fd in conns.fds.values() {
            // SAFETY: `fd` is an open socket: registrations are removed under this lock before their
            // socket is closed, so it cannot have been closed or reused meanwhile. `shutdown` neither
            // closes nor invalidates the fd; its owner just sees EOF and errors on it.
            if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0 {
                severed += 1;
            }
        }
        severed
    }

    /// Feeds the breaker. When it opens, every connection to this backend is severed, so nobody keeps
    /// waiting on a server judged dead or hung.
    pub fn record_failure(&self, kind: FailureKind) {
        let Some(change) = self.breaker.record_failure(kind, Instant::now()) else {
            tracing::debug!(backend = %self.addr, role = self.role.as_str(), kind = kind.as_str(), "backend failure");
            return;
        };
        if change.to == BreakerState::Open {
            tracing::warn!(
                backend = %self.addr,
                role = self.role.as_str(),
                shard = self.shard,
                kind = kind.as_str(),
                failures = self.breaker.consecutive_failures(),
                from = change.from.as_str(),
                "circuit breaker opened"
            );
            let severed = self.sever_connections();
            tracing::info!(backend = %self.addr, role = self.role.as_str(), severed, "severed server connections");
        } else {
            self.log_change(change.from, change.to);
        }
    }

    pub fn record_success(&self) {
        if let Some(change) = self.breaker.record_success(Instant::now()) {
            self.log_change(change.from, change.to);
        }
    }

    /// [`Breaker::try_probe`], logging the move to half-open.
    pub fn try_probe(&self) -> bool {
        let from = self.breaker.state();
        let granted = self.breaker.try_probe(Instant::now());
        if granted && from != BreakerState::HalfOpen {
            self.log_change(from, BreakerState::HalfOpen);
        }
        granted
    }

    fn log_change(&self, from: BreakerState, to: BreakerState) {
        tracing::info!(
            backend = %self.addr,
            role = self.role.as_str(),
            shard = self.shard,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker state changed"
        );
    }

    /// Clients may use it now: breaker closed; for a replica also a fresh successful poll that found it
    /// still in recovery (a promoted replica no longer follows the primary).
    pub fn usable(&self) -> bool {
        self.usable_at(Instant::now())
    }

    /// [`Backend::usable`] at a given time (the balancer reads the clock once per choice).
    pub fn usable_at(&self, now: Instant) -> bool {
        if !self.breaker.is_closed() {
            return false;
        }
        match self.role {
            Role::Primary => true,
            Role::Replica => self.health.fresh(now) && self.health.in_recovery() == Some(true),
        }
    }
}

/// "No value" in the atomics below.
const NONE: u64 = u64::MAX;

/// Weight of a new round-trip sample in the moving average.
const RTT_ALPHA: f64 = 0.2;

/// A backend's health as last polled: written by its poller task only, read by the balancer with
/// plain atomic loads. Fields may come from two consecutive polls when read during an update; each
/// field is itself whole, and every decision built on them tolerates that.
#[derive(Debug)]
pub struct Health {
    /// Reference point for `last_ok` (atomics cannot hold an `Instant`).
    base: Instant,
    /// A successful poll counts as fresh for this long: `timeout + 2 × interval`.
    /// Nanoseconds; replaced when a reload changes the poll timing.
    stale_after_nanos: AtomicU64,
    rtt_nanos: AtomicU64,
    replay_lsn: AtomicU64,
    lag_bytes: AtomicU64,
    lag_nanos: AtomicU64,
    /// 0 unknown, 1 no, 2 yes.
    in_recovery: AtomicU8,
    /// When the last poll succeeded, in nanoseconds since `base`; `NONE` once a poll failed.
    last_ok: AtomicU64,
}

/// What one successful poll found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollSample {
    /// The poll query's round trip.
    pub rtt: Duration,
    pub in_recovery: Option<bool>,
    /// Replicas: `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<u64>,
    /// Replicas: the live shard primary's latest LSN (while it is down: the replica's receive LSN)
    /// minus `replay_lsn`.
    pub lag_bytes: Option<u64>,
    /// Replicas: zero when caught up, else (primary up) the age of the last replayed transaction or
    /// (primary down) unknown.
    pub lag: Option<Duration>,
}

fn opt(value: u64) -> Option<u64> {
    (value != NONE).then_some(value)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NONE - 1)
}

impl Health {
    pub fn new(config: &HealthConfig) -> Health {
        Health {
            base: Instant::now(),
            stale_after_nanos: AtomicU64::new(nanos(config.timeout() + config.interval() * 2)),
            rtt_nanos: AtomicU64::new(NONE),
            replay_lsn: AtomicU64::new(NONE),
            lag_bytes: AtomicU64::new(NONE),
            lag_nanos: AtomicU64::new(NONE),
            in_recovery: AtomicU8::new(0),
            last_ok: AtomicU64::new(NONE),
        }
    }

    /// A reload changed the poll interval or timeout: freshness follows the new timing.
    pub fn retime(&self, config: &HealthConfig) {
        self.stale_after_nanos.store(
            nanos(config.timeout() + config.interval() * 2),
            Ordering::Relaxed,
        );
    }

    /// Records a successful poll finished at `now`. The RTT enters a moving average; the rest
    /// replaces what the previous poll found.
    pub fn record_poll(&self, sample: &PollSample, now: Instant) {
        let rtt = match self.rtt() {
            None => sample.rtt,
            Some(old) => old.mul_f64(1.0 - RTT_ALPHA) + sample.rtt.mul_f64(RTT_ALPHA),
        };
        self.rtt_nanos.store(nanos(rtt), Ordering::Relaxed);
        let store =
            |cell: &AtomicU64, v: Option<u64>| cell.store(v.unwrap_or(NONE), Ordering::Relaxed);
        store(&self.replay_lsn, sample.replay_lsn);
        store(&self.lag_bytes, sample.lag_bytes);
        store(&self.lag_nanos, sample.lag.map(nanos));
        let recovery = match sample.in_recovery {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        self.in_recovery.store(recovery, Ordering::Relaxed);
        let at = nanos(now.saturating_duration_since(self.base)).min(NONE - 1);
        self.last_ok.store(at, Ordering::Release);
    }

    /// Records a failed or timed-out poll: the backend is no longer fresh. What the last good poll
    /// found stays readable (a replica's replay position only moves forward).
    pub fn record_failed_poll(&self) {
        self.last_ok.store(NONE, Ordering::Release);
    }

    /// Moving average of poll round trips.
    pub fn rtt(&self) -> Option<Duration> {
        opt(self.rtt_nanos.load(Ordering::Relaxed)).map(Duration::from_nanos)
    }

    /// Replicas: `pg_last_wal_replay_lsn()` as of the last good poll.
    pub fn replay_lsn(&self) -> Option<u64> {
        opt(self.replay_lsn.load(Ordering::Relaxed))
    }

    /// Replicas: bytes of WAL the primary had (as last polled; while it is down, the replica had
    /// received) that this replica had not replayed.
    pub fn lag_bytes(&self) -> Option<u64> {
        opt(self.lag_bytes.load(Ordering::Relaxed))
    }

    /// Replicas: zero when replay had caught up (see `lag_bytes`), else how old the last replayed
    /// transaction was while the primary is up, unknown while it is down.
    pub fn lag(&self) -> Option<Duration> {
        opt(self.lag_nanos.load(Ordering::Relaxed)).map(Duration::from_nanos)
    }

    /// Whether the last poll succeeded and finished less than `timeout + 2 × interval` before `now`.
    pub fn fresh(&self, now: Instant) -> bool {
        let Some(at) = opt(self.last_ok.load(Ordering::Acquire)) else {
            return false;
        };
        let polled = self.base + Duration::from_nanos(at);
        now.saturating_duration_since(polled)
            < Duration::from_nanos(self.stale_after_nanos.load(Ordering::Relaxed))
    }

    pub fn in_recovery(&self) -> Option<bool> {
        match self.in_recovery.load(Ordering::Relaxed) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
