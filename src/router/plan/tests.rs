//! UnitRouter decisions: reads, writes, transactions and their access modes, hints, catalog
//! functions, FunctionCall messages.

use super::*;

/// Classification with no sharded table.
fn classify(sql: &str) -> crate::router::plan::Plan {
    crate::router::classify::classify(sql, &crate::sharding::Rules::default())
}

/// The decision for a unit made of `texts` (each one Query or Parse), with the catalog `catalog`.
fn decide_with(texts: &[&str], catalog: &FunctionCatalog, default_read_only: bool) -> Decision {
    let mut unit = UnitRouter::default();
    for text in texts {
        unit.add(&classify(text), catalog);
    }
    unit.decide(default_read_only)
}

fn decide(texts: &[&str]) -> Decision {
    decide_with(texts, &FunctionCatalog::default(), false)
}

const fn write(reason: WriteReason) -> Decision {
    Decision::Primary(PrimaryReason::Write(reason))
}

const READ_WRITE_TX: Decision = Decision::Primary(PrimaryReason::ReadWriteTransaction);

#[test]
fn reads_writes_and_neutral_units() {
    let cases: &[(&[&str], Decision)] = &[
        (&["SELECT 1"], Decision::Replica),
        (&["SELECT 1; SELECT 2"], Decision::Replica),
        (&["SELECT 1", "SHOW search_path"], Decision::Replica),
        (&["INSERT INTO t VALUES (1)"], write(WriteReason::Statement)),
        // Mixed: the first write's reason.
        (
            &[
                "SELECT 1",
                "SELECT * FROM t FOR UPDATE",
                "INSERT INTO t VALUES (1)",
            ],
            write(WriteReason::Locking),
        ),
        (&["SELECT 1; DELETE FROM t"], write(WriteReason::Statement)),
        (&["garbage"], write(WriteReason::Unparsable)),
        (&["SET search_path = a"], Decision::Neutral),
        (&["COMMIT"], Decision::Neutral),
        (&["DISCARD ALL", "DEALLOCATE ALL"], Decision::Neutral),
        (&["FETCH 10 FROM c"], Decision::Neutral),
        (&[""], Decision::Neutral),
        (&[], Decision::Neutral),
        (&["SET search_path = a; SELECT 1"], Decision::Replica),
        (&["LISTEN c"], write(WriteReason::Notify)),
    ];
    for (texts, expected) in cases {
        assert_eq!(decide(texts), *expected, "{texts:?}");
    }
}

#[test]
fn transactions() {
    let cases: &[(&[&str], bool, Decision)] = &[
        (&["BEGIN; SELECT 1"], false, READ_WRITE_TX),
        (&["BEGIN; SELECT 1"], true, Decision::Replica),
        (&["BEGIN"], false, READ_WRITE_TX),
        (&["BEGIN READ ONLY; SELECT 1"], false, Decision::Replica),
        (&["BEGIN READ ONLY"], false, Decision::Replica),
        (&["BEGIN READ WRITE; SELECT 1"], true, READ_WRITE_TX),
        (&["START TRANSACTION READ WRITE"], false, READ_WRITE_TX),
        (
            &["BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", "SELECT 1"],
            false,
            READ_WRITE_TX, // hot standbys refuse SERIALIZABLE
        ),
        // SET TRANSACTION after BEGIN amends it; the last word wins.
        (
            &["BEGIN", "SET TRANSACTION READ ONLY", "SELECT 1"],
            false,
            Decision::Replica,
        ),
        (
            &["BEGIN READ ONLY; SET TRANSACTION READ WRITE"],
            false,
            READ_WRITE_TX,
        ),
        (
            &["BEGIN", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
            true,
            READ_WRITE_TX,
        ),
        // SET TRANSACTION with no BEGIN in the unit belongs to an earlier unit's transaction.
        (
            &["SET TRANSACTION READ WRITE", "SELECT 1"],
            false,
            Decision::Replica,
        ),
        (&["SET TRANSACTION READ ONLY"], false, Decision::Neutral),
        // A write inside a read-only transaction still goes to the primary (which will refuse it).
        (
            &["BEGIN READ ONLY; INSERT INTO t VALUES (1)"],
            false,
            write(WriteReason::Statement),
        ),
        // Several transactions in one unit: one read-write is enough.
        (
            &["BEGIN READ ONLY; SELECT 1; COMMIT; BEGIN; SELECT 2; COMMIT"],
            false,
            READ_WRITE_TX,
        ),
        (
            &["BEGIN; SELECT 1; COMMIT; BEGIN READ ONLY; SELECT 2; COMMIT"],
            false,
            READ_WRITE_TX,
        ),
        (
            &["BEGIN; SELECT 1; COMMIT; BEGIN READ ONLY; SELECT 2; COMMIT"],
            true,
            Decision::Replica,
        ),
    ];
    for (texts, default_read_only, expected) in cases {
        assert_eq!(
            decide_with(texts, &FunctionCatalog::default(), *default_read_only),
            *expected,
            "{texts:?} default_read_only={default_read_only}"
        );
    }
}

#[test]
fn hints_override_everything_and_the_first_wins() {
    let mut unit = UnitRouter::default();
    unit.add_hint(Hint::Replica);
    unit.add(
        &classify("INSERT INTO t VALUES (1)"),
        &FunctionCatalog::default(),
    );
    unit.add_hint(Hint::Primary);
    assert_eq!(unit.decide(false), Decision::Replica);

    let mut unit = UnitRouter::default();
    unit.add_hint(Hint::Primary);
    unit.add(&classify("SELECT 1"), &FunctionCatalog::default());
    assert_eq!(unit.decide(true), Decision::Primary(PrimaryReason::Hint));

    let mut unit = UnitRouter::default();
    unit.add(&classify("BEGIN"), &FunctionCatalog::default());
    unit.add_hint(Hint::Replica);
    assert_eq!(unit.decide(false), Decision::Replica);
}

#[test]
fn catalog_functions_turn_reads_into_writes() {
    let catalog = FunctionCatalog::new(&["app.audit_log".to_string(), "\"Stamp\"".to_string()])
        .with_learned(["bump_counter".to_string()]);
    let cases: &[(&str, Decision)] = &[
        ("SELECT nextval('s')", write(WriteReason::Function)),
        (
            "SELECT pg_catalog.nextval('s')",
            write(WriteReason::Function),
        ),
        ("SELECT pg_advisory_lock(1)", write(WriteReason::Function)),
        (
            "SELECT pg_try_advisory_xact_lock(1, 2)",
            write(WriteReason::Function),
        ),
        (
            "SELECT * FROM t WHERE a = (SELECT nextval('s'))",
            write(WriteReason::Function),
        ),
        ("SELECT bump_counter()", write(WriteReason::Function)),
        (
            "SELECT other_schema.bump_counter()",
            write(WriteReason::Function),
        ),
        ("SELECT audit_log('x')", write(WriteReason::Function)),
        ("SELECT \"Stamp\"()", write(WriteReason::Function)),
        ("SELECT stamp()", Decision::Replica),
        ("SELECT * FROM bump_counter()", write(WriteReason::Function)),
        (
            "EXPLAIN ANALYZE SELECT bump_counter()",
            write(WriteReason::Function),
        ),
        ("EXPLAIN SELECT bump_counter()", Decision::Replica),
        ("SELECT lower('X'), count(*) FROM t", Decision::Replica),
        // Already writes: the statement's own reason stands.
        (
            "INSERT INTO t VALUES (nextval('s'))",
            write(WriteReason::Statement),
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(decide_with(&[sql], &catalog, false), *expected, "{sql}");
    }
    // Without the learnt name, a user function is a read.
    assert_eq!(decide(&["SELECT bump_counter()"]), Decision::Replica);
}

#[test]
fn function_call_messages_and_emptiness() {
    let mut unit = UnitRouter::default();
    assert!(unit.is_empty());
    unit.add_function_call();
    assert!(!unit.is_empty());
    assert_eq!(unit.decide(false), write(WriteReason::Function));

    let mut unit = UnitRouter::default();
    unit.add(&classify(""), &FunctionCatalog::default());
    assert!(!unit.is_empty());
    assert_eq!(unit.decide(false), Decision::Neutral);
}

#[test]
fn function_ddl_asks_for_a_catalog_refresh() {
    let mut unit = UnitRouter::default();
    unit.add(&classify("SELECT 1"), &FunctionCatalog::default());
    assert!(!unit.needs_catalog_refresh());
    unit.add(
        &classify("CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql"),
        &FunctionCatalog::default(),
    );
    unit.add(
        &classify("INSERT INTO t VALUES (1)"),
        &FunctionCatalog::default(),
    );
    assert!(unit.needs_catalog_refresh());
    assert_eq!(unit.decide(false), write(WriteReason::FunctionDdl));
    assert!(decide_refreshes("DROP EXTENSION x; SELECT 1"));
}

fn decide_refreshes(sql: &str) -> bool {
    let mut unit = UnitRouter::default();
    unit.add(&classify(sql), &FunctionCatalog::default());
    unit.needs_catalog_refresh()
}

#[test]
fn unit_router_is_small() {
    // The session keeps one per unit in flight.
    assert!(std::mem::size_of::<UnitRouter>() <= 16);
}
