//! The sharding setup a running proxy routes by: the ring (swapped whole when resharding moves
//! ranges), the table rules and the default shard.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::budget::MemoryBudget;
use super::ring::Ring;
use super::rules::Rules;

/// Shared by every session.
#[derive(Debug)]
pub struct Sharding {
    ring: ArcSwap<Ring>,
    pub rules: Arc<Rules>,
    /// Where statements on unsharded tables go (an index into the ring's shards).
    pub default_shard: usize,
    /// Key-less UPDATE/DELETE of sharded tables run on every shard instead of being refused.
    pub allow_broadcast_writes: bool,
    /// What every fan-out read together may hold (`sharding.fanout_memory_budget_bytes`).
    pub fanout_budget: Arc<MemoryBudget>,
    /// Resharding's cutover: the freeze of writes to moving keys, and the ring's version.
    pub cutover: super::freeze::Cutover,
    ring_version: std::sync::atomic::AtomicU64,
}

impl Sharding {
    pub fn new(
        ring: Ring,
        rules: Arc<Rules>,
        default_shard: usize,
        allow_broadcast_writes: bool,
    ) -> Sharding {
        Sharding {
            ring: ArcSwap::from_pointee(ring),
            rules,
            default_shard,
            allow_broadcast_writes,
            fanout_budget: MemoryBudget::new(super::budget::DEFAULT_BYTES),
            cutover: Default::default(),
            ring_version: Default::default(),
        }
    }

    /// The same with a fan-out memory budget of `bytes`.
    pub fn with_fanout_budget(mut self, bytes: usize) -> Sharding {
        self.fanout_budget = MemoryBudget::new(bytes);
        self
    }

    /// The current ring (a cheap snapshot: one routing decision uses one ring throughout).
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    /// Replaces the ring whole (resharding's cutover).
    pub fn swap_ring(&self, ring: Ring) {
        self.ring.store(Arc::new(ring));
        self.ring_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bumped by each [`Sharding::swap_ring`]: a unit noted on an older ring is noted again.
    pub fn ring_version(&self) -> u64 {
        self.ring_version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many shards the ring has.
    pub fn shard_count(&self) -> usize {
        self.ring.load().shards().len()
    }
}
