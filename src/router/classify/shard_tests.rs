//! Sharding plans through classification: literal positions across a query string's statements,
//! including statements parsed one by one after the whole text failed, and the invariant the plan
//! cache rests on (same fingerprint, same sharding plan).

use super::*;
use crate::router::fingerprint::fingerprint;
use crate::router::PlanCache;
use crate::sharding::{KeyRef, KeyType, Keys, ShardedTable};

fn rules() -> Rules {
    Rules::new(
        [ShardedTable {
            table: "users".into(),
            column: "id".into(),
            key_type: KeyType::BigInt,
        }],
        ["countries".to_owned()],
    )
}

fn shards(sql: &str) -> Vec<ShardPlan> {
    classify(sql, &rules())
        .statements
        .iter()
        .map(|s| s.shard.clone())
        .collect()
}

fn keyed(r: KeyRef) -> ShardPlan {
    ShardPlan::Keyed {
        key_type: KeyType::BigInt,
        keys: Keys::One(r),
    }
}

#[test]
fn literals_count_from_the_start_of_the_query_string() {
    assert_eq!(
        shards("SELECT 1, 'a'; SELECT * FROM users WHERE id = 7"),
        [ShardPlan::ReferenceRead, keyed(KeyRef::Literal(2))]
    );
    // The whole text does not parse (FOR NO KEY UPDATE): pieces are parsed alone, patched.
    assert_eq!(
        shards("SELECT 3; SELECT * FROM users WHERE id = 5 FOR NO KEY UPDATE; SELECT 'x'"),
        [
            ShardPlan::ReferenceRead,
            keyed(KeyRef::Literal(1)),
            ShardPlan::ReferenceRead
        ]
    );
    let plans = shards(
        "SELECT '1' /* ; */; UPDATE users SET n = 2 WHERE id = -$$9$$ FOR; \
         SELECT * FROM users WHERE id = 4 FOR KEY SHARE",
    );
    assert_eq!(plans.len(), 3, "{plans:?}");
    assert_eq!(plans[0], ShardPlan::ReferenceRead);
    assert!(matches!(plans[1], ShardPlan::Refused(_)), "{plans:?}");
    assert_eq!(plans[2], keyed(KeyRef::Literal(3)));
}

#[test]
fn unparsable_statements() {
    let refused = |plans: Vec<ShardPlan>| plans.iter().all(|p| matches!(p, ShardPlan::Refused(_)));
    assert!(refused(shards("this is not sql about Users 42")));
    // Text that names no listed table can only concern unsharded tables (the default shard).
    assert_eq!(shards("this is not sql 42"), [ShardPlan::Unsharded]);
    assert_eq!(
        shards("COPY pgbench_accounts FROM STDIN WITH (FREEZE ON)"),
        [ShardPlan::Unsharded]
    );
    assert!(refused(shards("COPY users FROM STDIN WITH (FREEZE ON)")));
    assert!(refused(shards("DO $$ BEGIN DELETE FROM users; END $$")));
    assert_eq!(
        shards("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"),
        [ShardPlan::Unsharded]
    );
    // No table at all: any shard (the transaction's, or the default one).
    assert_eq!(shards("SELECT 1"), [ShardPlan::ReferenceRead]);
    assert_eq!(
        shards("SELECT now(), version()"),
        [ShardPlan::ReferenceRead]
    );
    // A function that may touch unsharded tables: the default shard.
    assert_eq!(shards("SELECT nextval('s')"), [ShardPlan::Unsharded]);
    assert_eq!(shards("SELECT my_report()"), [ShardPlan::Unsharded]);
}

#[test]
fn reference_reads_that_write_go_to_the_default_shard() {
    assert_eq!(
        shards("SELECT * FROM countries"),
        [ShardPlan::ReferenceRead]
    );
    assert_eq!(
        shards("SELECT * FROM countries FOR UPDATE"),
        [ShardPlan::Unsharded]
    );
    assert_eq!(
        shards("SELECT * INTO c2 FROM countries"),
        [ShardPlan::Unsharded]
    );
}

#[test]
fn patched_statements() {
    assert_eq!(shards("TABLE users"), [ShardPlan::ScatterRead]);
    assert_eq!(shards("TABLE countries"), [ShardPlan::ReferenceRead]);
}

#[test]
fn no_rules_no_shard_plans() {
    let plan = classify("SELECT * FROM users WHERE id = 1", &Rules::default());
    assert_eq!(plan.statements[0].shard, ShardPlan::Unsharded);
}

/// Texts that differ only in literals share a plan, sharding plan included.
#[test]
fn same_fingerprint_same_shard_plan() {
    let templates = [
        "SELECT * FROM users WHERE id = {} AND name = {}",
        "SELECT * FROM users WHERE id IN ({}, {})",
        "INSERT INTO users (id, n) VALUES ({}, 1), ({}, 2)",
        "UPDATE users SET n = {} WHERE id = -{}",
        "SELECT {}; DELETE FROM users WHERE id = {}",
        "SELECT * FROM users WHERE id = {} FOR NO KEY UPDATE; SELECT {}",
        "SELECT * FROM users u, countries c WHERE u.id = {}::bigint AND c.code = {}",
    ];
    let literals = [
        "1",
        "'x'",
        "E'\\''",
        "$$;$$",
        "2.5e3",
        "''",
        "$q$ DELETE FROM users; $q$",
    ];
    for template in templates {
        let texts: Vec<String> = literals
            .iter()
            .zip(literals.iter().rev())
            .map(|(a, b)| template.replacen("{}", a, 1).replacen("{}", b, 1))
            .collect();
        let key = fingerprint(&texts[0]);
        let first = shards(&texts[0]);
        for text in &texts {
            assert_eq!(fingerprint(text), key, "{text}");
            assert_eq!(shards(text), first, "{text}");
        }
        assert!(
            first
                .iter()
                .any(|p| matches!(p, ShardPlan::Keyed { .. } | ShardPlan::InsertRows { .. })),
            "{template}: {first:?}"
        );
    }
}

#[test]
fn the_cache_plans_under_its_rules() {
    let cache = PlanCache::with_rules(10, std::sync::Arc::new(rules()));
    let plan = cache.plan("SELECT * FROM users WHERE id = 1");
    assert_eq!(plan.statements[0].shard, keyed(KeyRef::Literal(0)));
    assert_eq!(
        PlanCache::new(10)
            .plan("SELECT * FROM users WHERE id = 1")
            .statements[0]
            .shard,
        ShardPlan::Unsharded
    );
}
