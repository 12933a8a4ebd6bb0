//! `[sharding]`: parsing with its defaults, the values built from it, and each problem validation
//! reports, named by its field.

use super::*;
use crate::sharding::{hash_key, ShardKey};

const BASE: &str = r#"
    [[users]]
    name = "app"
    password = "secret"
"#;

const SHARDED: &str = r#"
    [sharding]
    vnodes_per_shard = 64
    default_shard = "b"
    key_type = "bigint"
    allow_broadcast_writes = true
    reference_tables = ["countries", "public.currencies"]
    [[sharding.tables]]
    name = "users"
    column = "id"
    [[sharding.tables]]
    name = "Public.Sessions"
    column = "Token"
    key_type = "text"
    [[shards]]
    name = "a"
    primary = "postgres://127.0.0.1:5432"
    [[shards]]
    name = "b"
    primary = "postgres://127.0.0.1:5433"
    [[shards]]
    primary = "postgres://127.0.0.1:5434"
"#;

fn parse(text: &str) -> Config {
    Config::from_toml(&format!("{BASE}{text}")).expect("parses")
}

/// The fields of every problem of `text`.
fn problems(text: &str) -> Vec<String> {
    match parse(text).validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.problems.into_iter().map(|p| p.field).collect(),
    }
}

fn assert_problem(text: &str, field: &str) {
    let fields = problems(text);
    assert!(
        fields.iter().any(|f| f == field),
        "{field} not in {fields:?}"
    );
}

fn shards(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[shards]]\nprimary = \"postgres://127.0.0.1:{}\"\n",
                5432 + i
            )
        })
        .collect()
}

#[test]
fn a_full_section_parses_and_validates() {
    let config = parse(SHARDED);
    config.validate().expect("valid");
    assert_eq!(config.shard_names(), ["a", "b", "shard2"]);
    assert_eq!(config.default_shard_index(), 1);
    assert!(config.sharding.allow_broadcast_writes);

    let rules = config.sharding_rules();
    let users = rules.sharded("users").expect("users sharded");
    assert_eq!(
        (users.column.as_str(), users.key_type),
        ("id", KeyType::BigInt)
    );
    let sessions = rules.sharded("sessions").expect("schema and case dropped");
    assert_eq!(
        (sessions.column.as_str(), sessions.key_type),
        ("token", KeyType::Text)
    );
    assert!(rules.is_reference("countries") && rules.is_reference("currencies"));
}

#[test]
fn defaults_without_a_section() {
    let config = parse(&shards(2));
    config.validate().expect("valid");
    assert_eq!(config.sharding.vnodes_per_shard, DEFAULT_VNODES_PER_SHARD);
    assert_eq!(config.sharding.key_type, KeyTypeName::Bigint);
    assert!(!config.sharding.allow_broadcast_writes);
    assert_eq!(config.shard_names(), ["shard0", "shard1"]);
    assert_eq!(config.default_shard_index(), 0);
    assert!(config.sharding_rules().is_empty());
}

#[test]
fn the_ring_is_the_one_the_names_and_vnodes_give() {
    let config = parse(SHARDED);
    let ring = config.ring().expect("ring");
    let by_hand = Ring::new(&["a", "b", "shard2"], 64).expect("ring");
    assert_eq!(ring, by_hand);
    let key = ShardKey::Int(42);
    assert_eq!(ring.shard_of(&key), by_hand.owner(hash_key(&key)));
}

#[test]
fn table_key_type_defaults_to_the_sections() {
    let config = parse(&format!(
        "[sharding]\nkey_type = \"uuid\"\n[[sharding.tables]]\nname = \"t\"\ncolumn = \"k\"\n{}",
        shards(1)
    ));
    config.validate().expect("valid");
    let rules = config.sharding_rules();
    assert_eq!(rules.sharded("t").map(|t| t.key_type), Some(KeyType::Uuid));
}

#[test]
fn unknown_fields_and_key_types_are_parse_errors() {
    let err = Config::from_toml("[sharding]\nvnodes = 3\n").expect_err("typo");
    assert!(err.contains("vnodes"), "{err}");
    let err = Config::from_toml("[[sharding.tables]]\nname = \"t\"\ncolumn = \"c\"\nkey = 1\n")
        .expect_err("typo");
    assert!(err.contains("key"), "{err}");
    let err = Config::from_toml("[sharding]\nkey_type = \"float\"\n").expect_err("bad type");
    assert!(err.contains("float"), "{err}");
}

#[test]
fn duplicate_and_empty_shard_names() {
    // An explicit name equal to another shard's default one is a duplicate too.
    let text = r#"
        [[shards]]
        primary = "postgres://h:1"
        [[shards]]
        name = "shard0"
        primary = "postgres://h:2"
        [[shards]]
        name = ""
        primary = "postgres://h:3"
        [[shards]]
        name = "two words"
        primary = "postgres://h:4"
    "#;
    let fields = problems(text);
    for field in ["shards[1].name", "shards[2].name", "shards[3].name"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not in {fields:?}"
        );
    }
    assert!(!fields.iter().any(|f| f == "shards[0].name"), "{fields:?}");
}

#[test]
fn unknown_default_shard() {
    assert_problem(
        &format!("[sharding]\ndefault_shard = \"nope\"\n{}", shards(2)),
        "sharding.default_shard",
    );
}

#[test]
fn zero_vnodes_and_too_many_points() {
    assert_problem(
        &format!("[sharding]\nvnodes_per_shard = 0\n{}", shards(1)),
        "sharding.vnodes_per_shard",
    );
    assert_problem(
        &format!("[sharding]\nvnodes_per_shard = 4294967295\n{}", shards(2)),
        "sharding.vnodes_per_shard",
    );
}

#[test]
fn a_table_listed_twice_or_also_as_reference() {
    let text = format!(
        r#"
        [sharding]
        reference_tables = ["users", "countries", "Countries"]
        [[sharding.tables]]
        name = "users"
        column = "id"
        [[sharding.tables]]
        name = "public.USERS"
        column = "id"
        {}"#,
        shards(1)
    );
    let fields = problems(&text);
    assert_eq!(
        fields,
        [
            "sharding.tables[1].name",
            "sharding.reference_tables[0]",
            "sharding.reference_tables[2]"
        ]
    );
}

#[test]
fn empty_and_malformed_names() {
    let text = format!(
        r#"
        [sharding]
        reference_tables = ["", "a.b.c"]
        [[sharding.tables]]
        name = ""
        column = " "
        [[sharding.tables]]
        name = "s."
        column = "id"
        {}"#,
        shards(1)
    );
    let fields = problems(&text);
    assert_eq!(
        fields,
        [
            "sharding.tables[0].name",
            "sharding.tables[0].column",
            "sharding.tables[1].name",
            "sharding.reference_tables[0]",
            "sharding.reference_tables[1]"
        ]
    );
}

#[test]
fn sharded_tables_need_transaction_pooling() {
    let tables = "[[sharding.tables]]\nname = \"users\"\ncolumn = \"id\"\n";
    let text = format!(
        "[pool]\nmode = \"session\"\n[sharding]\n{tables}{}",
        shards(2)
    );
    let err = parse(&text).validate().expect_err("session mode");
    let problem = err
        .problems
        .iter()
        .find(|p| p.field == "pool.mode")
        .expect("pool.mode problem");
    assert!(problem.message.contains("transaction"), "{problem}");
    // Without sharded tables, session mode is fine.
    let text = format!("[pool]\nmode = \"session\"\n{}", shards(2));
    parse(&text).validate().expect("valid");
}

#[test]
fn the_sample_shards_users_by_id_and_pitches_by_user_id() {
    let config = Config::from_toml(include_str!("../../../config/shards.toml")).expect("parses");
    config.validate().expect("valid");
    let rules = config.sharding_rules();
    for (table, column) in [("users", "id"), ("pitches", "user_id")] {
        let rule = rules.sharded(table).expect("sharded");
        assert_eq!(
            (rule.column.as_str(), rule.key_type),
            (column, KeyType::BigInt)
        );
    }
}
