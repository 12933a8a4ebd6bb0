//! The proxy's side of a resharding cutover: a freeze of writes to the key ranges that change
//! owner, so that the resharding tool can apply the last changes to the new shard while nothing
//! writes them, then switch the ring.
//!
//! - Sessions hold a [`Ticket`] of the current [`Era`] while they use servers (taken with the
//!   `PAUSE` pass). `FREEZE` starts a new era and waits until no ticket of the old one is left:
//!   then every transaction that was open at freeze time has ended.
//! - While a [`Freeze`] is installed, a session of the new era whose unit writes a key that the
//!   two rings give to different shards (or writes to every shard) waits for its release.
//!
//! The data path pays one `ArcSwapOption` load per unit while no freeze is installed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use super::ring::Ring;

/// Sessions that took their ticket between two freezes.
#[derive(Debug)]
pub struct Era {
    id: u64,
    open: AtomicUsize,
    drained: Notify,
}

/// A session's membership in an era, held while it uses servers.
#[derive(Debug)]
pub struct Ticket {
    era: Arc<Era>,
}

impl Ticket {
    /// The era it belongs to (a session of an era older than a freeze's is not held by it).
    pub fn era(&self) -> u64 {
        self.era.id
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.era.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.era.drained.notify_waiters();
        }
    }
}

/// An installed freeze: writes to keys the two rings place differently wait for its release.
#[derive(Debug)]
pub struct Freeze {
    /// Sessions with a ticket of this era or later are held.
    pub era: u64,
    pub old: Arc<Ring>,
    pub new: Arc<Ring>,
    /// How many ranges of the hash space change owner.
    pub moving_ranges: usize,
    pub started: Instant,
    released: AtomicBool,
    on_release: Notify,
    waiting: AtomicUsize,
}

/// Counts a session as waiting while it lives.
pub struct Waiter<'a> {
    freeze: &'a Freeze,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.freeze.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Freeze {
    /// Counts the caller as waiting until the result is dropped.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter { freeze: self }
    }

    /// Sessions waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Returns once the freeze is released (switched or aborted).
    pub async fn released(&self) {
        let notified = self.on_release.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.on_release.notify_waiters();
    }
}

/// Where a cutover stands, as `SHOW RESHARD` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// `FREEZE` waits for transactions open at freeze time.
    Freezing,
    Frozen,
    Switched,
    Aborted,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Freezing => "freezing",
            Phase::Frozen => "frozen",
            Phase::Switched => "switched",
            Phase::Aborted => "aborted",
        }
    }
}

/// What `SHOW RESHARD` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub phase: Phase,
    pub moving_ranges: usize,
    pub waiting: usize,
    /// How long the freeze in force has lasted (0 when none is).
    pub frozen_ms: u64,
    /// The last freeze's length, from `FREEZE` to `SWITCH` or `ABORT` (None before the first).
    pub last_pause_ms: Option<u64>,
}

/// Why a cutover step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutoverError {
    #[error("a resharding freeze is already {0}; RESHARD SWITCH or RESHARD ABORT it first")]
    Busy(&'static str),
    #[error("no resharding freeze is in force (RESHARD FREEZE first)")]
    NotFrozen,
    #[error("RESHARD FREEZE has not finished yet (it waits for open transactions)")]
    StillFreezing,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The last freeze's ring change and length.
    moving_ranges: usize,
    last_pause_ms: Option<u64>,
    /// Eras that may still have tickets (pruned at each freeze).
    eras: Vec<Arc<Era>>,
}

/// The cutover state of one proxy (one per [`super::Sharding`]).
#[derive(Debug)]
pub struct Cutover {
    era: ArcSwap<Era>,
    next_era: AtomicU64,
    freeze: ArcSwapOption<Freeze>,
    state: Mutex<State>,
}

impl Default for Cutover {
    fn default() -> Cutover {
        let first = Arc::new(new_era(0));
        Cutover {
            era: ArcSwap::new(first.clone()),
            next_era: AtomicU64::new(1),
            freeze: ArcSwapOption::empty(),
            state: Mutex::new(State {
                phase: Phase::Idle,
                moving_ranges: 0,
                last_pause_ms: None,
                eras: vec![first],
            }),
        }
    }
}

fn new_era(id: u64) -> Era {
    Era {
        id,
        open: AtomicUsize::new(0),
        drained: Notify::new(),
    }
}

impl Cutover {
    /// The freeze in force, if any (the data path's one load).
    pub fn freeze(&self) -> Option<Arc<Freeze>> {
        self.freeze.load_full()
    }

    /// Whether a freeze is installed (cheaper than [`Cutover::freeze`]).
    pub fn is_frozen(&self) -> bool {
        self.freeze.load().is_some()
    }

    /// A ticket of the current era for a session that starts using servers.
    pub fn ticket(&self) -> Ticket {
        loop {
            let era = self.era.load_full();
            era.open.fetch_add(1, Ordering::SeqCst);
            // A FREEZE swaps the era before it counts the old one's tickets: seeing the same era
            // after counting ourselves in means that FREEZE waits for us.
            if Arc::ptr_eq(&era, &self.era.load()) {
                return Ticket { era };
            }
            drop(Ticket { era });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs a freeze from `old` to `new` (writes of new sessions to moving keys wait from
    /// now on). Then [`Cutover::drain`] waits for the sessions of the previous era.
    pub fn begin(&self, old: Arc<Ring>, new: Arc<Ring>) -> Result<Arc<Freeze>, CutoverError> {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Freezing | Phase::Frozen) {
            return Err(CutoverError::Busy(state.phase.name()));
        }
        let moving_ranges = Ring::moved_ranges(&old, &new).len();
        let id = self.next_era.fetch_add(1, Ordering::SeqCst);
        let freeze = Arc::new(Freeze {
            era: id,
            old,
            new,
            moving_ranges,
            started: Instant::now(),
            released: AtomicBool::new(false),
            on_release: Notify::new(),
            waiting: AtomicUsize::new(0),
        });
        // The freeze first: a session with a ticket of the new era must see it.
        self.freeze.store(Some(freeze.clone()));
        let era = Arc::new(new_era(id));
        self.era.store(era.clone());
        state.eras.retain(|e| e.open.load(Ordering::SeqCst) > 0);
        state.eras.push(era);
        state.phase = Phase::Freezing;
        state.moving_ranges = moving_ranges;
        Ok(freeze)
    }

    /// Waits until no session holds a ticket of an era older than `freeze`'s.
    pub async fn drain(&self, freeze: &Freeze) {
        let older: Vec<Arc<Era>> = self
            .lock()
            .eras
            .iter()
            .filter(|e| e.id < freeze.era)
            .cloned()
            .collect();
        for era in older {
            loop {
                let drained = era.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if era.open.load(Ordering::SeqCst) == 0 {
                    break;
                }
                drained.await;
            }
        }
    }

    /// `FREEZE` finished draining: the freeze is in force until switched or aborted.
    pub fn frozen(&self, freeze: &Arc<Freeze>) -> bool {
        let mut state = self.lock();
        if !self.is_current(freeze) || state.phase != Phase::Freezing {
            return false;
        }
        state.phase = Phase::Frozen;
        true
    }

    fn is_current(&self, freeze: &Arc<Freeze>) -> bool {
        self.freeze
            .load()
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, freeze))
    }

    /// Takes the freeze in force for `SWITCH` (which must be frozen, not still freezing); the
    /// caller installs the new ring, then calls [`Cutover::release`].
    pub fn frozen_freeze(&self) -> Result<Arc<Freeze>, CutoverError> {
        let state = self.lock();
        match (state.phase, self.freeze()) {
            (Phase::Frozen, Some(freeze)) => Ok(freeze),
            (Phase::Freezing, Some(_)) => Err(CutoverError::StillFreezing),
            _ => Err(CutoverError::NotFrozen),
        }
    }

    /// Ends `freeze` (if it is still the one in force) as switched or aborted, waking its
    /// waiting sessions; returns the pause in ms.
    pub fn release(&self, freeze: &Arc<Freeze>, switched: bool) -> Option<u64> {
        let mut state = self.lock();
        if !self.is_current(freeze) {
            return None;
        }
        self.freeze.store(None);
        freeze.release();
        let pause = freeze.started.elapsed().as_millis() as u64;
        state.phase = if switched {
            Phase::Switched
        } else {
            Phase::Aborted
        };
        state.last_pause_ms = Some(pause);
        Some(pause)
    }

    /// Aborts whatever freeze is in force (freezing or frozen).
    pub fn abort(&self) -> Result<u64, CutoverError> {
        let freeze = self.freeze().ok_or(CutoverError::NotFrozen)?;
        self.release(&freeze, false).ok_or(CutoverError::NotFrozen)
    }

    pub fn status(&self) -> Status {
        let state = self.lock();
        let freeze = self.freeze();
        Status {
            phase: state.phase,
            moving_ranges: state.moving_ranges,
            waiting: freeze.as_ref().map_or(0, |f| f.waiting()),
            frozen_ms: freeze
                .as_ref()
                .map_or(0, |f| f.started.elapsed().as_millis() as u64),
            last_pause_ms: state.last_pause_ms,
        }
    }
}

#[cfg(test)]
mod tests;
