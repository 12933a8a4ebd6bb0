//! Picking the replica a read goes to: only usable, fresh replicas within the lag limits that have
//! replayed the client's writes; then the proxy's own zone; then the nearest by round trip; then the
//! less loaded of two random picks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::backend::Backend;

/// What a read needs from a replica.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRequest<'a> {
    /// Read-your-writes: the replica must have replayed at least this LSN.
    pub min_lsn: Option<u64>,
    /// Replica indexes already tried (a retry after a failure).
    pub exclude: &'a [usize],
    /// Prefer replicas in this zone when any of them qualifies.
    pub zone: Option<&'a str>,
    /// Most bytes of WAL a replica may be behind; 0 = no limit.
    pub max_lag_bytes: u64,
    /// Most time a replica may be behind; None = no limit.
    pub max_lag: Option<Duration>,
}

/// How much slower than the fastest a replica may answer and still count as near: the larger of
/// 1.5 × and +1 ms, so sub-millisecond jitter on a LAN does not single out one replica.
fn near_limit(best: Duration) -> Duration {
    (best.mul_f64(1.5)).max(best + Duration::from_millis(1))
}

/// Whether `replica` (index `i`) may serve `request` at `now`. A lag that could not be measured
/// (the primary never answered a poll, or no transaction was replayed yet) does not disqualify: there
/// is nothing to hold against the replica, and `min_lsn` still protects read-your-writes.
fn qualifies(replica: &Backend, i: usize, request: &ReadRequest<'_>, now: Instant) -> bool {
    if request.exclude.contains(&i) || !replica.usable_at(now) {
        return false;
    }
    let health = &replica.health;
    if let Some(min) = request.min_lsn {
        if health.replay_lsn().is_none_or(|replayed| replayed < min) {
            return false;
        }
    }
    if request.max_lag_bytes > 0
        && health
            .lag_bytes()
            .is_some_and(|b| b > request.max_lag_bytes)
    {
        return false;
    }
    if let (Some(max), Some(lag)) = (request.max_lag, health.lag()) {
        if lag > max {
            return false;
        }
    }
    true
}

/// Index of the replica to read from, or None when none qualifies. `load(i)`: connections replica
/// `i` has in use (lower wins).
pub fn choose_replica(
    replicas: &[Arc<Backend>],
    request: &ReadRequest<'_>,
    now: Instant,
    load: impl Fn(usize) -> usize,
) -> Option<usize> {
    choose_with(replicas, request, now, load, &mut rand::thread_rng())
}

/// [`choose_replica`] with a given random source (seeded in tests).
fn choose_with<R: Rng + ?Sized>(
    replicas: &[Arc<Backend>],
    request: &ReadRequest<'_>,
    now: Instant,
    load: impl Fn(usize) -> usize,
    rng: &mut R,
) -> Option<usize> {
    // One snapshot of each qualifying replica's RTT, so the poller updating health meanwhile cannot
    // make the passes below disagree. A usable replica has been polled, so it has an RTT.
    let mut candidates: Vec<(usize, Duration)> = replicas
        .iter()
        .enumerate()
        .filter(|(i, r)| qualifies(r, *i, request, now))
        .filter_map(|(i, r)| Some((i, r.health.rtt()?)))
        .collect();
    if let Some(zone) = request.zone {
        let in_zone = |&(i, _): &(usize, Duration)| replicas[i].zone.as_deref() == Some(zone);
        if candidates.iter().any(in_zone) {
            candidates.retain(in_zone);
        }
    }
    let best = candidates.iter().map(|&(_, rtt)| rtt).min()?;
    let limit = near_limit(best);
    candidates.retain(|&(_, rtt)| rtt <= limit);
    let n = candidates.len();
    if n == 1 {
        return Some(candidates[0].0);
    }
    // Power of two choices: two distinct random candidates, the less loaded wins.
    let a = rng.gen_range(0..n);
    let mut b = rng.gen_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    let (a, b) = (candidates[a].0, candidates[b].0);
    let (load_a, load_b) = (load(a), load(b));
    let winner = match load_a.cmp(&load_b) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if rng.gen_bool(0.5) => a,
        std::cmp::Ordering::Equal => b,
    };
    Some(winner)
}

#[cfg(test)]
mod tests;
