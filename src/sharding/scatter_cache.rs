//! Fan-out plans by exact statement text. Unlike routing plans (keyed by a literal-insensitive
//! fingerprint), a fan-out plan depends on literals (`LIMIT 10` gives shards `LIMIT 10+offset`), so
//! each distinct text is planned once.

use std::sync::Arc;

use quick_cache::sync::Cache;
use xxhash_rust::xxh3::xxh3_128;

use super::merge::{plan_scatter, ScatterPlan, Unmergeable};

/// Shared by every session; bounded.
pub struct ScatterPlans {
    plans: Cache<u128, Arc<Result<Arc<ScatterPlan>, Unmergeable>>>,
}

impl ScatterPlans {
    pub fn new(capacity: usize) -> ScatterPlans {
        ScatterPlans {
            plans: Cache::new(capacity.max(1)),
        }
    }

    /// The plan of `sql`, or why it cannot be fanned out (also cached).
    pub fn get(&self, sql: &str) -> Result<Arc<ScatterPlan>, Unmergeable> {
        let key = xxh3_128(sql.as_bytes());
        let entry = match self.plans.get(&key) {
            Some(entry) => entry,
            None => {
                let entry = Arc::new(plan_scatter(sql).map(Arc::new));
                self.plans.insert(key, entry.clone());
                entry
            }
        };
        (*entry).clone()
    }
}

impl std::fmt::Debug for ScatterPlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScatterPlans")
            .field("entries", &self.plans.len())
            .finish()
    }
}
