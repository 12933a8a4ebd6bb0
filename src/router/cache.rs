//! The plan cache: plans by statement fingerprint, so sqlparser runs once per statement shape rather
//! than once per query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;

use super::classify::classify;
use super::fingerprint::fingerprint;
use super::plan::Plan;
use crate::sharding::Rules;

/// Plans by fingerprint, bounded, with hit/miss/unparsable counters. Shared by all sessions.
///
/// Plans hold their sharding plan under the cache's [`Rules`], so new rules (a config reload) come
/// with a new cache.
pub struct PlanCache {
    plans: Cache<u128, Arc<Plan>>,
    rules: Arc<Rules>,
    hits: AtomicU64,
    misses: AtomicU64,
    unparsable: AtomicU64,
}

/// A snapshot of the cache's counters (for `SHOW` and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Texts seen (hit or miss) with a statement sqlparser could not parse.
    pub unparsable: u64,
    pub entries: usize,
}

impl PlanCache {
    /// A cache holding up to `capacity` plans (0 caches nothing), with no sharded table.
    pub fn new(capacity: usize) -> PlanCache {
        PlanCache::with_rules(capacity, Arc::new(Rules::default()))
    }

    /// A cache holding up to `capacity` plans, planning shards under `rules`.
    pub fn with_rules(capacity: usize, rules: Arc<Rules>) -> PlanCache {
        PlanCache {
            plans: Cache::new(capacity),
            rules,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            unparsable: AtomicU64::new(0),
        }
    }

    /// The plan of `sql`: fingerprint, look up, classify on a miss. Two sessions missing the same text
    /// at once both classify it (microseconds) rather than one waiting for the other.
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        let key = fingerprint(sql);
        let plan = match self.plans.get(&key) {
            Some(plan) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                plan
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let plan = Arc::new(classify(sql, &self.rules));
                self.plans.insert(key, Arc::clone(&plan));
                plan
            }
        };
        if plan.is_unparsable() {
            self.unparsable.fetch_add(1, Ordering::Relaxed);
        }
        plan
    }

    /// The rules plans are made under.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    pub fn stats(&self) -> PlanCacheStats {
        PlanCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            unparsable: self.unparsable.load(Ordering::Relaxed),
            entries: self.plans.len(),
        }
    }
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests;
