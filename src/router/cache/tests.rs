//! The plan cache: hits across literal values, counters, bounds, sharing between threads.

use super::*;
use crate::router::plan::{Kind, WriteReason};

#[test]
fn hits_misses_and_unparsable_counts() {
    let cache = PlanCache::new(100);
    let first = cache.plan("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
    let second = cache.plan("select abalance from pgbench_accounts where aid = 2 -- again");
    assert!(Arc::ptr_eq(&first, &second), "same shape, same plan");
    assert_eq!(first.statements[0].kind, Kind::Read);
    let write = cache.plan("UPDATE pgbench_accounts SET abalance = 0 WHERE aid = 1");
    assert_eq!(
        write.statements[0].kind,
        Kind::Write(WriteReason::Statement)
    );
    for _ in 0..3 {
        let plan = cache.plan("this is not sql 42");
        assert!(plan.is_unparsable());
    }
    assert_eq!(
        cache.stats(),
        PlanCacheStats {
            hits: 3,
            misses: 3,
            unparsable: 3,
            entries: 3,
        }
    );
}

#[test]
fn bounded() {
    let cache = PlanCache::new(16);
    for i in 0..1_000 {
        let _ = cache.plan(&format!("SELECT c{i} FROM t"));
    }
    let stats = cache.stats();
    assert!(stats.entries <= 32, "{stats:?}");
    assert_eq!(stats.misses, 1_000);

    let none = PlanCache::new(0);
    assert_eq!(none.plan("SELECT 1").statements[0].kind, Kind::Read);
    assert_eq!(none.plan("SELECT 1").statements[0].kind, Kind::Read);
}

#[test]
fn shared_between_threads() {
    let cache = Arc::new(PlanCache::new(1_000));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for i in 0..500 {
                    let plan = cache.plan(&format!("SELECT * FROM t{} WHERE id = {i}", i % 10));
                    assert_eq!(plan.statements[0].kind, Kind::Read, "thread {t}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, 2_000);
    assert_eq!(stats.entries, 10);
}
