//! A circuit breaker per backend server: closed (traffic flows), open (traffic kept away for a
//! cooldown), half-open (one probe decides).
//!
//! Sessions read the state on every routing decision, so it lives in one atomic; the transitions
//! (rare) happen under a small mutex, which also makes "exactly one caller gets the probe" trivially
//! true. Time is passed in (`now`), so the transitions are tested with scripted fault sequences and
//! no sleeping.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::server::ServerError;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Healthy: clients may use the backend.
    Closed,
    /// Failed: clients are kept away until the cooldown has passed and a probe succeeds.
    Open,
    /// The cooldown passed and one probe is out; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    fn to_u8(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// What kind of failure says a backend is down or hung. Only these feed a breaker: a server that
/// answers with an error (bad password, too many connections) is up, and is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connecting failed at the TCP level (refused, reset, unreachable).
    ConnectRefused,
    /// Connecting (TCP + authentication) did not finish in time: the server may be hung.
    ConnectTimeout,
    /// A health poll failed or timed out.
    HealthCheck,
    /// An open connection was lost mid-query.
    Broken,
}

impl FailureKind {
    fn to_u8(self) -> u8 {
        match self {
            FailureKind::ConnectRefused => 1,
            FailureKind::ConnectTimeout => 2,
            FailureKind::HealthCheck => 3,
            FailureKind::Broken => 4,
        }
    }

    fn from_u8(v: u8) -> Option<FailureKind> {
        match v {
            1 => Some(FailureKind::ConnectRefused),
            2 => Some(FailureKind::ConnectTimeout),
            3 => Some(FailureKind::HealthCheck),
            4 => Some(FailureKind::Broken),
            _ => None,
        }
    }

    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::HealthCheck => "health_check",
            FailureKind::Broken => "broken",
        }
    }

    /// Whether a failed connect says the server is down or hung, and how. `Refused` (the server
    /// answered with an `ErrorResponse`), a missing password or a protocol oddity say nothing about
    /// the server's health, so they are `None`.
    pub fn of_connect_error(error: &ServerError) -> Option<FailureKind> {
        match error {
            // A TLS failure (no TLS offered, a certificate that does not verify) is permanent
            // until someone fixes the server or the config: count it like a refused connect.
            ServerError::Io { .. } | ServerError::Tls { .. } => Some(FailureKind::ConnectRefused),
            ServerError::ConnectTimeout { .. } => Some(FailureKind::ConnectTimeout),
            ServerError::Closed { .. } => Some(FailureKind::Broken),
            ServerError::Refused { .. }
            | ServerError::NoPassword { .. }
            | ServerError::Protocol { .. } => None,
        }
    }
}

/// A state change, returned so the caller can log it and act (sever connections on opening).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// What only changes under the lock.
#[derive(Debug)]
struct Inner {
    /// Consecutive failures since the last success (or since the breaker last closed).
    failures: u32,
    /// When the breaker last opened: the cooldown runs from here.
    opened_at: Option<Instant>,
    /// When the current probe was granted (half-open only).
    probe_started: Option<Instant>,
}

/// A circuit breaker: `threshold` consecutive failures open it; after `cooldown` one probe is let
/// through; its success closes the breaker, its failure reopens it for another cooldown.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    /// [`BreakerState`] as `u8`: written under `inner`, read lock-free on the hot path.
    state: AtomicU8,
    opened_total: AtomicU64,
    /// [`FailureKind`] as `u8`, 0 = none yet.
    last_failure: AtomicU8,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker. A `threshold` of 0 is treated as 1 (config validation refuses 0 anyway).
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            opened_total: AtomicU64::new(0),
            last_failure: AtomicU8::new(0),
            inner: Mutex::new(Inner {
                failures: 0,
                opened_at: None,
                probe_started: None,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Hot path: one atomic load.
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8()
    }

    /// How many times the breaker has opened (for metrics).
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    pub fn last_failure(&self) -> Option<FailureKind> {
        FailureKind::from_u8(self.last_failure.load(Ordering::Relaxed))
    }

    /// Consecutive failures counted so far (for logs).
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().failures
    }

    /// A poisoned lock only means another thread panicked mid-update of plain counters; they are
    /// still meaningful, so carry on rather than wedge the breaker.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, to: BreakerState) {
        self.state.store(to.to_u8(), Ordering::Release);
    }

    /// Counts a failure. Closed: the `threshold`-th consecutive one opens the breaker. Half-open: the
    /// probe failed, so it reopens at once with a fresh cooldown. Open: nothing changes (the cooldown
    /// is not extended, or steady client retries would starve the probe).
    pub fn record_failure(&self, kind: FailureKind, now: Instant) -> Option<Transition> {
        self.last_failure.store(kind.to_u8(), Ordering::Relaxed);
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let from = self.state();
        let open = match from {
            BreakerState::Closed => inner.failures >= self.threshold,
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
        };
        if !open {
            return None;
        }
        inner.opened_at = Some(now);
        inner.probe_started = None;
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        self.set_state(BreakerState::Open);
        Some(Transition {
            from,
            to: BreakerState::Open,
        })
    }

    /// Counts a success: resets the failure count, and a half-open breaker closes. An open one stays
    /// open until its probe: a stray success (a connect that raced the opening) proves little.
    pub fn record_success(&self, _now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        inner.failures = 0;
        let from = self.state();
        if from != BreakerState::HalfOpen {
            return None;
        }
        inner.probe_started = None;
        self.set_state(BreakerState::Closed);
        Some(Transition {
            from,
            to: BreakerState::Closed,
        })
    }

    /// Whether the caller may probe the backend now. An open breaker whose cooldown has passed turns
    /// half-open and grants exactly one caller the probe. A probe not reported within another
    /// cooldown is presumed lost, and the next caller gets one, so a lost probe cannot wedge the
    /// breaker half-open.
    pub fn try_probe(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        let since = match self.state() {
            BreakerState::Closed => return false,
            BreakerState::Open => inner.opened_at,
            BreakerState::HalfOpen => inner.probe_started,
        };
        let due = since.is_none_or(|t| now.saturating_duration_since(t) >= self.cooldown);
        if due {
            inner.probe_started = Some(now);
            self.set_state(BreakerState::HalfOpen);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    fn breaker() -> (Breaker, Instant) {
        (Breaker::new(3, COOLDOWN), Instant::now())
    }

    fn open(b: &Breaker, t: Instant) {
        for _ in 0..3 {
            b.record_failure(FailureKind::ConnectRefused, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn fewer_failures_than_the_threshold_stay_closed() {
        let (b, t) = breaker();
        assert_eq!(b.record_failure(FailureKind::ConnectRefused, t), None);
        assert_eq!(b.record_failure(FailureKind::ConnectTimeout, t), None);
        assert!(b.is_closed());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.last_failure(), Some(FailureKind::ConnectTimeout));
        assert_eq!(b.opened_total(), 0);
    }

    #[test]
    fn a_success_resets_the_count() {
        let (b, t) = breaker();
        b.record_failure(FailureKind::HealthCheck, t);
        b.record_failure(FailureKind::HealthCheck, t);
        assert_eq!(b.record_success(t), None);
        b.record_failure(FailureKind::HealthCheck, t);
        b.record_failure(FailureKind::HealthCheck, t);
        assert!(b.is_closed());
        let opened = b.record_failure(FailureKind::HealthCheck, t);
        assert_eq!(
            opened,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
    }

    #[test]
    fn threshold_failures_open_it() {
        let (b, t) = breaker();
        open(&b, t);
        assert!(!b.is_closed());
        assert_eq!(b.opened_total(), 1);
        // More failures while open change nothing.
        assert_eq!(b.record_failure(FailureKind::Broken, t), None);
        assert_eq!(b.last_failure(), Some(FailureKind::Broken));
        assert_eq!(b.opened_total(), 1);
    }

    #[test]
    fn no_probe_before_the_cooldown() {
        let (b, t) = breaker();
        open(&b, t);
        assert!(!b.try_probe(t));
        assert!(!b.try_probe(t + COOLDOWN - Duration::from_millis(1)));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn exactly_one_caller_gets_the_probe() {
        let (b, t) = breaker();
        open(&b, t);
        let later = t + COOLDOWN;
        let granted = (0..10).filter(|_| b.try_probe(later)).count();
        assert_eq!(granted, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.is_closed());
    }

    #[test]
    fn exactly_one_thread_gets_the_probe() {
        let (b, t) = breaker();
        open(&b, t);
        let later = t + COOLDOWN;
        let granted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    if b.try_probe(later) {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn probe_success_closes() {
        let (b, t) = breaker();
        open(&b, t);
        assert!(b.try_probe(t + COOLDOWN));
        let closed = b.record_success(t + COOLDOWN);
        assert_eq!(
            closed,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert!(b.is_closed());
        // The count starts afresh: two failures do not reopen it.
        b.record_failure(FailureKind::HealthCheck, t + COOLDOWN);
        b.record_failure(FailureKind::HealthCheck, t + COOLDOWN);
        assert!(b.is_closed());
    }

    #[test]
    fn probe_failure_reopens_with_a_fresh_cooldown() {
        let (b, t) = breaker();
        open(&b, t);
        let probe_at = t + COOLDOWN + Duration::from_secs(1);
        assert!(b.try_probe(probe_at));
        let reopened = b.record_failure(FailureKind::HealthCheck, probe_at);
        assert_eq!(
            reopened,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        assert_eq!(b.opened_total(), 2);
        // The cooldown runs from the reopening, not from the first opening.
        assert!(!b.try_probe(probe_at + COOLDOWN - Duration::from_millis(1)));
        assert!(b.try_probe(probe_at + COOLDOWN));
    }

    #[test]
    fn a_success_while_open_does_not_close() {
        let (b, t) = breaker();
        open(&b, t);
        assert_eq!(b.record_success(t), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_lost_probe_is_granted_again_after_a_cooldown() {
        let (b, t) = breaker();
        open(&b, t);
        let probe_at = t + COOLDOWN;
        assert!(b.try_probe(probe_at));
        assert!(!b.try_probe(probe_at + Duration::from_secs(1)));
        assert!(b.try_probe(probe_at + COOLDOWN));
    }

    #[test]
    fn closed_breaker_grants_no_probe() {
        let (b, t) = breaker();
        assert!(!b.try_probe(t + COOLDOWN));
        assert!(b.is_closed());
    }

    #[test]
    fn connect_errors_that_say_nothing_about_health_are_not_failures() {
        let addr = "db:5432".to_string();
        let io = ServerError::Io {
            addr: addr.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            FailureKind::of_connect_error(&io),
            Some(FailureKind::ConnectRefused)
        );
        let timeout = ServerError::ConnectTimeout { addr: addr.clone() };
        assert_eq!(
            FailureKind::of_connect_error(&timeout),
            Some(FailureKind::ConnectTimeout)
        );
        let closed = ServerError::Closed { addr: addr.clone() };
        assert_eq!(
            FailureKind::of_connect_error(&closed),
            Some(FailureKind::Broken)
        );
        let refused = ServerError::Refused {
            addr,
            code: "53300".into(),
            message: "too many connections".into(),
            frame: Default::default(),
        };
        assert_eq!(FailureKind::of_connect_error(&refused), None);
    }
}
