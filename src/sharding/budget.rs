//! One memory budget for every fan-out read of the proxy: what their merges and shard buffers hold
//! together may not pass `sharding.fanout_memory_budget_bytes`, so a few big key-less reads cannot
//! run the proxy out of memory for every other client. A read that would pass it is refused at
//! once (not made to wait: two reads each waiting for the other's memory would both stall).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The default budget: 256 MiB.
pub const DEFAULT_BYTES: usize = 256 << 20;

/// The proxy-wide budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

/// Growing a [`Reservation`] would pass the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("needs {wanted} more bytes; {used} of the {limit} bytes are in use")]
pub struct OverBudget {
    pub wanted: usize,
    pub used: usize,
    pub limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by every reservation now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn grow(&self, bytes: usize) -> Result<(), OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if after > self.limit {
                return Err(OverBudget {
                    wanted: bytes,
                    used,
                    limit: self.limit,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn shrink(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Part of the budget held by one holder (a shard's buffer, a merge); given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    held: usize,
    /// The most it held.
    peak: usize,
}

impl Reservation {
    pub fn new(budget: &Arc<MemoryBudget>) -> Reservation {
        Reservation {
            budget: budget.clone(),
            held: 0,
            peak: 0,
        }
    }

    /// Makes this hold `bytes`: shrinking always works, growing fails past the budget (and then
    /// holds what it held before).
    pub fn set(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.held {
            self.budget.grow(bytes - self.held)?;
        } else {
            self.budget.shrink(self.held - bytes);
        }
        self.held = bytes;
        self.peak = self.peak.max(bytes);
        Ok(())
    }

    /// The most this held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.shrink(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        a.set(60).expect("fits");
        let err = b.set(50).expect_err("over");
        assert_eq!(
            err,
            OverBudget {
                wanted: 50,
                used: 60,
                limit: 100
            }
        );
        assert_eq!(b.held(), 0);
        b.set(40).expect("fits");
        assert_eq!(budget.used(), 100);
        a.set(10).expect("shrinks");
        assert_eq!(budget.used(), 50);
        assert_eq!(a.peak(), 60);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
