//! Splitting INSERTs: each part parses, holds exactly its shard's rows, and routes (through
//! extraction and resolution) to the shard it was made for.

use super::*;
use crate::sharding::{
    resolve, resolve_insert_rows, shard_plan, KeyType, Keys, Ring, Rules, ShardPlan, ShardedTable,
};

fn rules() -> Rules {
    Rules::new(
        [ShardedTable {
            table: "users".into(),
            column: "id".into(),
            key_type: KeyType::BigInt,
        }],
        [],
    )
}

fn plan(sql: &str) -> ShardPlan {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
    shard_plan(&statements[0], sql, &rules())
}

#[test]
fn parts_hold_their_rows_and_route_to_their_shard() {
    let ring = Ring::new(&["a", "b", "c"], 64).expect("ring");
    let values: Vec<String> = (1..=30)
        .map(|i| {
            format!(
                "({}, 'name ''{i}''', E'x\\n', -{i}.5)",
                if i % 2 == 0 { -i } else { i }
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO users (id, name, note, score) VALUES {} ON CONFLICT (id) DO UPDATE SET name = \
         excluded.name RETURNING id",
        values.join(", ")
    );
    let ShardPlan::InsertRows { key_type, rows } = plan(&sql) else {
        panic!("not InsertRows: {:?}", plan(&sql));
    };
    let shards = resolve_insert_rows(&rows, key_type, &sql, None, &ring).expect("resolves");
    let parts = split_insert(&sql, &shards).expect("splits");
    assert!(parts.len() > 1, "30 keys on 3 shards");
    assert!(parts.windows(2).all(|w| w[0].0 < w[1].0), "sorted by shard");
    let mut seen = 0;
    for (shard, text) in &parts {
        // Each part keeps the rest of the statement and routes to its shard.
        assert!(text.contains("ON CONFLICT(id) DO UPDATE SET name = excluded.name RETURNING id"));
        let want: Vec<usize> = (0..30).filter(|i| shards[*i] == *shard).collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(
                text.contains(value.as_str()),
                want.contains(&i),
                "{text}\n{value}"
            );
        }
        seen += want.len();
        let set = match plan(text) {
            ShardPlan::InsertRows { key_type, rows } => {
                let got = resolve_insert_rows(&rows, key_type, text, None, &ring).expect("ok");
                assert!(got.iter().all(|s| s == shard), "{text}");
                continue;
            }
            ShardPlan::Keyed {
                key_type,
                keys: keys @ Keys::One(_),
            } => resolve(&keys, key_type, text, None, &ring).expect("resolves"),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(set, crate::sharding::ShardSet::One(*shard), "{text}");
    }
    assert_eq!(seen, 30);
}

#[test]
fn errors() {
    let sql = "INSERT INTO users (id) VALUES (1), (2)";
    assert_eq!(
        split_insert(sql, &[0]),
        Err(SplitError::RowCount { rows: 2, shards: 1 })
    );
    assert_eq!(
        split_insert("INSERT INTO users (id) SELECT 1", &[0]),
        Err(SplitError::NotInsertValues)
    );
    assert_eq!(
        split_insert("SELECT 1; SELECT 2", &[0]),
        Err(SplitError::NotInsertValues)
    );
    assert!(matches!(
        split_insert("INSERT INTO", &[]),
        Err(SplitError::Parse(_))
    ));
    let one = split_insert(sql, &[2, 2]).expect("splits");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, 2);
    assert_eq!(one[0].1, "INSERT INTO users (id) VALUES (1), (2)");
}
