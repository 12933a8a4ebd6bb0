//! Criterion benchmarks of the router's hot path: a plan-cache hit (fingerprint + lookup), a miss
//! (sqlparser + classification, without and with a sharded table), and the fingerprint alone.
//!
//! `cargo bench --bench router -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgscale::router::{classify, fingerprint, PlanCache};
use pgscale::sharding::{KeyType, Rules, ShardedTable};

/// pgbench's select-only statement with `aid` values cycling through `n` texts.
fn pgbench_selects(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7919 + 1
            )
        })
        .collect()
}

const TPCB_UPDATE: &str =
    "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 86042;";

fn plan_cache(c: &mut Criterion) {
    let texts = pgbench_selects(1024);
    let cache = PlanCache::new(10_000);
    let _ = cache.plan(&texts[0]);
    let mut i = 0;
    c.bench_function("plan_cache_hit", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(cache.plan(black_box(&texts[i])))
        })
    });

    // Capacity 0 keeps nothing: every call fingerprints, misses, classifies.
    let uncached = PlanCache::new(0);
    c.bench_function("plan_cache_miss", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(uncached.plan(black_box(&texts[i])))
        })
    });

    let none = Rules::default();
    c.bench_function("classify_select", |b| {
        b.iter(|| black_box(classify(black_box(&texts[0]), &none)))
    });
    c.bench_function("classify_tpcb_update", |b| {
        b.iter(|| black_box(classify(black_box(TPCB_UPDATE), &none)))
    });
    // The same statements with pgbench_accounts sharded by aid: what key extraction adds.
    let sharded = Rules::new(
        [ShardedTable {
            table: "pgbench_accounts".into(),
            column: "aid".into(),
            key_type: KeyType::Integer,
        }],
        ["pgbench_branches".to_owned()],
    );
    c.bench_function("classify_select_sharded", |b| {
        b.iter(|| black_box(classify(black_box(&texts[0]), &sharded)))
    });
    c.bench_function("classify_tpcb_update_sharded", |b| {
        b.iter(|| black_box(classify(black_box(TPCB_UPDATE), &sharded)))
    });
}

fn fingerprints(c: &mut Criterion) {
    let texts = pgbench_selects(1024);
    let mut i = 0;
    c.bench_function("fingerprint_select", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(fingerprint(black_box(&texts[i])))
        })
    });
}

criterion_group!(benches, plan_cache, fingerprints);
criterion_main!(benches);
