//! Criterion benchmarks of the router's hot path: a plan-cache hit (fingerprint + lookup), a miss
//! (sqlparser + classification), and the fingerprint alone.
//!
//! `cargo bench --bench router -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgscale::router::{classify, fingerprint, PlanCache};

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

    c.bench_function("classify_select", |b| {
        b.iter(|| black_box(classify(black_box(&texts[0]))))
    });
    c.bench_function("classify_tpcb_update", |b| {
        b.iter(|| black_box(classify(black_box(TPCB_UPDATE))))
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
