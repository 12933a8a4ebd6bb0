//! Table-driven classification tests: reads, writes, write-ish selects, transaction control, session
//! commands, fallbacks for syntax sqlparser lacks, and function collection.

use super::*;
use crate::router::plan::Kind::{self, *};
use crate::router::plan::WriteReason::*;

/// Classification with no sharded table.
fn classify(sql: &str) -> Plan {
    super::classify(sql, &Rules::default())
}

/// The kinds of the statements of `sql`.
fn kinds(sql: &str) -> Vec<Kind> {
    classify(sql).statements.iter().map(|s| s.kind).collect()
}

/// Checks that each text is one statement of the expected kind.
fn check(cases: &[(&str, Kind)]) {
    let mut failures = Vec::new();
    for (sql, expected) in cases {
        let got = kinds(sql);
        if got != [*expected] {
            failures.push(format!("{sql:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn functions(sql: &str) -> Vec<String> {
    let plan = classify(sql);
    plan.statements
        .iter()
        .flat_map(|s| s.functions.iter().map(|f| f.to_string()))
        .collect()
}

#[test]
fn reads() {
    check(&[
        ("SELECT 1", Read),
        ("select abalance from pgbench_accounts where aid = 42;", Read),
        ("VALUES (1), (2)", Read),
        ("SHOW search_path", Read),
        ("SHOW ALL", Read),
        ("SHOW TRANSACTION ISOLATION LEVEL", Read),
        ("TABLE t", Read),
        ("TABLE ONLY t", Read),
        ("EXPLAIN SELECT * FROM t", Read),
        ("EXPLAIN (COSTS off, FORMAT json) SELECT * FROM t", Read),
        ("EXPLAIN ANALYZE SELECT * FROM t", Read),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Read),
        ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", Read),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
            Read,
        ),
        ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", Read),
        ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)", Read),
        ("SELECT (SELECT max(a) FROM u), ARRAY(SELECT 1)", Read),
        ("SELECT 1 UNION SELECT 2 EXCEPT SELECT 3", Read),
        ("SELECT * FROM t JOIN LATERAL (SELECT f(t.a)) x ON true", Read),
        ("SELECT * FROM generate_series(1, 3)", Read),
        ("SELECT now(), CURRENT_TIMESTAMP, count(*) FILTER (WHERE a > 0) FROM t", Read),
        ("SELECT $1::int, * FROM t WHERE a = $2", Read),
        ("SELECT E'it\\'s', U&'\\0041', B'101', X'ff', $$x$$, $t$y$t$", Read),
        ("COPY t TO STDOUT", Read),
        ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", Read),
        ("DECLARE c CURSOR FOR SELECT * FROM t", Read),
        ("DECLARE c SCROLL CURSOR FOR SELECT 1", Read),
        ("EXPLAIN INSERT INTO t VALUES (1)", Read),
        ("EXPLAIN SELECT * FROM t FOR NO KEY UPDATE", Read),
    ]);
}

#[test]
fn writes() {
    check(&[
        ("INSERT INTO t VALUES (1)", Write(Statement)),
        ("INSERT INTO t SELECT * FROM u", Write(Statement)),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1",
            Write(Statement),
        ),
        (
            "UPDATE t SET a = 1 FROM u WHERE t.b = u.b",
            Write(Statement),
        ),
        ("DELETE FROM t USING u WHERE t.a = u.a", Write(Statement)),
        (
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN UPDATE SET b = s.b",
            Write(Statement),
        ),
        ("CREATE TABLE t (a int)", Write(Statement)),
        ("CREATE TEMP TABLE x AS SELECT 1", Write(Statement)),
        ("CREATE INDEX i ON t (a)", Write(Statement)),
        ("CREATE VIEW v AS SELECT 1", Write(Statement)),
        ("CREATE SEQUENCE s", Write(Statement)),
        ("DROP TABLE t", Write(Statement)),
        ("ALTER TABLE t ADD COLUMN b int", Write(Statement)),
        ("TRUNCATE t", Write(Statement)),
        ("VACUUM t", Write(Statement)),
        ("VACUUM (VERBOSE, ANALYZE) t", Write(Statement)),
        ("VACUUM ANALYZE t", Write(Statement)),
        ("ANALYZE t", Write(Statement)),
        ("CALL p(1)", Write(Statement)),
        ("DO $$ BEGIN PERFORM 1; END $$", Write(Statement)),
        ("DO LANGUAGE plpgsql $$ BEGIN END $$", Write(Statement)),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Write(Statement)),
        ("LOCK t", Write(Statement)),
        ("GRANT SELECT ON t TO u", Write(Statement)),
        ("COMMENT ON TABLE t IS 'x'", Write(Statement)),
        ("CHECKPOINT", Write(Statement)),
        ("REINDEX TABLE t", Write(Statement)),
        ("CLUSTER t", Write(Statement)),
        ("REFRESH MATERIALIZED VIEW v", Write(Statement)),
        ("ALTER SYSTEM SET work_mem = '1MB'", Write(Statement)),
        ("PREPARE p AS SELECT 1", Write(Statement)),
        ("EXECUTE p", Write(Statement)),
        ("EXECUTE p(1, 'x')", Write(Statement)),
        ("EXPLAIN EXECUTE p", Write(Statement)),
        ("COMMIT PREPARED 'x'", Write(Statement)),
        ("ROLLBACK PREPARED 'x'", Write(Statement)),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Write(Statement)),
        ("COPY t TO '/tmp/t.csv'", Write(Statement)),
        ("COPY t FROM STDIN", Write(CopyFrom)),
        (
            "COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
            Write(CopyFrom),
        ),
        ("COPY t FROM '/tmp/t.csv'", Write(CopyFrom)),
        ("LISTEN chan", Write(Notify)),
        ("UNLISTEN *", Write(Notify)),
        ("NOTIFY chan", Write(Notify)),
        ("NOTIFY chan, 'payload'", Write(Notify)),
    ]);
}

#[test]
fn selects_that_write() {
    check(&[
        ("SELECT * FROM t FOR UPDATE", Write(Locking)),
        ("SELECT * FROM t FOR SHARE", Write(Locking)),
        ("SELECT * FROM t FOR UPDATE OF t NOWAIT", Write(Locking)),
        ("SELECT * FROM t FOR NO KEY UPDATE", Write(Locking)),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", Write(Locking)),
        ("SELECT * FROM t for /* c */ no key update", Write(Locking)),
        ("TABLE t FOR KEY SHARE", Write(Locking)),
        (
            "SELECT * FROM (SELECT * FROM t FOR SHARE) s",
            Write(Locking),
        ),
        ("SELECT (SELECT 1 FROM t FOR UPDATE)", Write(Locking)),
        (
            "SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)",
            Write(Locking),
        ),
        (
            "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x",
            Write(Locking),
        ),
        (
            "SELECT 1 UNION ALL (SELECT 2 FROM t FOR UPDATE)",
            Write(Locking),
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
            Write(Locking),
        ),
        ("SELECT * INTO x FROM t", Write(SelectInto)),
        ("SELECT * INTO TEMP x FROM t", Write(SelectInto)),
        (
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
            Write(ModifyingCte),
        ),
        (
            "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
            Write(ModifyingCte),
        ),
        (
            "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x",
            Write(ModifyingCte),
        ),
        (
            "WITH a AS (WITH b AS (DELETE FROM t RETURNING *) SELECT * FROM b) SELECT * FROM a",
            Write(ModifyingCte),
        ),
        (
            "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING a) SELECT a FROM d) s",
            Write(ModifyingCte),
        ),
        (
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x FOR UPDATE",
            Write(ModifyingCte),
        ),
        (
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            Write(ExplainAnalyze),
        ),
        (
            "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t",
            Write(ExplainAnalyze),
        ),
        // The option's value is a literal: ignored, so counted as ANALYZE (conservative).
        (
            "EXPLAIN (ANALYZE false) DELETE FROM t",
            Write(ExplainAnalyze),
        ),
        (
            "EXPLAIN (analyze off) UPDATE t SET a = 1",
            Write(ExplainAnalyze),
        ),
        (
            "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
            Write(ExplainAnalyze),
        ),
        (
            "EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            Write(ExplainAnalyze),
        ),
    ]);
}

#[test]
fn function_ddl() {
    check(&[
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            Write(FunctionDdl),
        ),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select nextval(''s'')'",
            Write(FunctionDdl),
        ),
        (
            "CREATE PROCEDURE p() LANGUAGE sql AS $$ INSERT INTO t VALUES (1) $$",
            Write(FunctionDdl),
        ),
        ("ALTER FUNCTION f() VOLATILE", Write(FunctionDdl)),
        ("ALTER PROCEDURE p() RENAME TO q", Write(FunctionDdl)),
        ("ALTER ROUTINE r() RENAME TO q", Write(FunctionDdl)),
        ("DROP FUNCTION f", Write(FunctionDdl)),
        (
            "DROP FUNCTION IF EXISTS f(int), g(text)",
            Write(FunctionDdl),
        ),
        ("DROP PROCEDURE p", Write(FunctionDdl)),
        ("DROP ROUTINE r", Write(FunctionDdl)),
        (
            "CREATE EXTENSION IF NOT EXISTS pgcrypto",
            Write(FunctionDdl),
        ),
        ("ALTER EXTENSION pgcrypto UPDATE", Write(FunctionDdl)),
        ("DROP EXTENSION pgcrypto", Write(FunctionDdl)),
        (
            "CREATE AGGREGATE a (int) (SFUNC = int4pl, STYPE = int)",
            Write(FunctionDdl),
        ),
    ]);
    // Function bodies are not calls.
    assert!(
        functions("CREATE FUNCTION f() RETURNS int AS 'select nextval(1)' LANGUAGE sql").is_empty()
    );
}

#[test]
fn transaction_control() {
    check(&[
        ("BEGIN", Begin { read_only: None }),
        ("BEGIN WORK", Begin { read_only: None }),
        ("START TRANSACTION", Begin { read_only: None }),
        (
            "BEGIN READ ONLY",
            Begin {
                read_only: Some(true),
            },
        ),
        (
            "BEGIN READ WRITE",
            Begin {
                read_only: Some(false),
            },
        ),
        (
            "START TRANSACTION READ WRITE",
            Begin {
                read_only: Some(false),
            },
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
            // Hot standbys refuse SERIALIZABLE: it must run on the primary.
            Begin {
                read_only: Some(false),
            },
        ),
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Begin { read_only: None },
        ),
        // pg_dump's opening: DEFERRABLE is not in sqlparser; the fallback reads the modes.
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            // Hot standbys refuse SERIALIZABLE: it must run on the primary.
            Begin {
                read_only: Some(false),
            },
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE, NOT DEFERRABLE",
            Begin {
                read_only: Some(false),
            },
        ),
        (
            "SET TRANSACTION READ ONLY",
            SetTransaction {
                read_only: Some(true),
            },
        ),
        (
            "SET TRANSACTION READ WRITE",
            SetTransaction {
                read_only: Some(false),
            },
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            SetTransaction {
                read_only: Some(false),
            },
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            SetTransaction {
                read_only: Some(false),
            },
        ),
        ("COMMIT", TxEnd),
        ("COMMIT AND CHAIN", TxEnd),
        ("END", TxEnd),
        ("ROLLBACK", TxEnd),
        ("ABORT", TxEnd),
        ("SAVEPOINT a", TxEnd),
        ("RELEASE SAVEPOINT a", TxEnd),
        ("RELEASE a", TxEnd),
        ("ROLLBACK TO SAVEPOINT a", TxEnd),
        ("ROLLBACK TO a", TxEnd),
        ("PREPARE TRANSACTION 'x'", TxEnd),
    ]);
}

#[test]
fn session_and_cursor_commands() {
    check(&[
        ("SET search_path TO a, b", Session),
        ("SET LOCAL statement_timeout = 0", Session),
        ("SET TIME ZONE 'UTC'", Session),
        ("SET ROLE r", Session),
        ("SET SESSION AUTHORIZATION u", Session),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            Session,
        ),
        ("SET application_name TO DEFAULT", Session),
        // Values are literals: a read-only GUC set this way cannot be told from its value.
        ("SET transaction_read_only = on", Session),
        ("RESET ALL", Session),
        ("RESET search_path", Session),
        ("DISCARD ALL", Session),
        ("DEALLOCATE foo", Session),
        ("DEALLOCATE ALL", Session),
        ("FETCH 10 FROM c", Cursor),
        ("FETCH NEXT FROM c", Cursor),
        ("MOVE NEXT FROM c", Cursor),
        ("MOVE FORWARD 5 IN c", Cursor),
        ("CLOSE c", Cursor),
        ("CLOSE ALL", Cursor),
    ]);
}

#[test]
fn unparsable_text() {
    for sql in [
        "garbage here",
        "SELECT",
        "SELECT * FROM",
        "SELECT 'unterminated",
        "SELECT * FROM ROWS FROM (a(1), b(2))",
        "\u{0}\u{1}\u{7f}",
        "SELEC 1",
        ")))",
    ] {
        assert_eq!(kinds(sql), [Write(Unparsable)], "{sql:?}");
    }
    // Deep nesting hits sqlparser's recursion limit instead of the stack.
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(kinds(&deep), [Write(Unparsable)]);
}

#[test]
fn empty_texts_have_no_statements() {
    for sql in [
        "",
        ";",
        " ; ;",
        "-- only a comment",
        "/* c */",
        "/* a */ -- b\n ;",
    ] {
        assert!(classify(sql).statements.is_empty(), "{sql:?}");
    }
}

#[test]
fn multi_statement_strings() {
    assert_eq!(kinds("SELECT 1; SELECT 2"), [Read, Read]);
    assert_eq!(
        kinds("BEGIN; UPDATE t SET a = 1; COMMIT;"),
        [Begin { read_only: None }, Write(Statement), TxEnd]
    );
    assert_eq!(
        kinds("BEGIN READ ONLY; SELECT * FROM t; COMMIT"),
        [
            Begin {
                read_only: Some(true)
            },
            Read,
            TxEnd
        ]
    );
    assert_eq!(kinds("SET search_path = a; SELECT 1"), [Session, Read]);
    // One statement sqlparser cannot parse costs only that statement.
    assert_eq!(
        kinds("SELECT 1; DO $$ BEGIN END $$; SELECT * FROM t FOR KEY SHARE; frobnicate"),
        [Read, Write(Statement), Write(Locking), Write(Unparsable)]
    );
    assert_eq!(
        kinds("BEGIN READ ONLY, DEFERRABLE; SELECT 1; COMMIT"),
        [
            Begin {
                read_only: Some(true)
            },
            Read,
            TxEnd
        ]
    );
    // A semicolon in a string or a comment does not split.
    assert_eq!(kinds("SELECT ';DELETE FROM t' -- ; DROP TABLE t"), [Read]);
}

#[test]
fn functions_are_collected_at_any_depth() {
    assert_eq!(functions("SELECT nextval('s')"), ["nextval"]);
    assert_eq!(functions("SELECT pg_catalog.NextVal('s')"), ["nextval"]);
    assert_eq!(functions("SELECT public.\"MyFn\"(1)"), ["MyFn"]);
    assert_eq!(
        functions("SELECT pg_advisory_lock(1)"),
        ["pg_advisory_lock"]
    );
    assert_eq!(functions("SELECT * FROM myfn(1) AS f"), ["myfn"]);
    assert_eq!(functions("SELECT * FROM LATERAL s.myfn(1)"), ["myfn"]);
    assert_eq!(
        functions(
            "SELECT a FROM t WHERE b = f(1) GROUP BY g(a) HAVING h(count(*)) > 1 ORDER BY k(a)"
        ),
        ["f", "g", "h", "count", "k"]
    );
    assert_eq!(
        functions("SELECT CASE WHEN c(1) THEN d(2) END, sum(x) OVER (ORDER BY w(x)), f(f(1))"),
        ["c", "d", "sum", "w", "f"]
    );
    assert_eq!(
        functions("SELECT * FROM t WHERE a IN (SELECT inner_fn(b) FROM u)"),
        ["inner_fn"]
    );
    assert_eq!(
        functions("WITH x AS (SELECT cte_fn()) SELECT * FROM x"),
        ["cte_fn"]
    );
    assert_eq!(
        functions("INSERT INTO t VALUES (nextval('s'))"),
        ["nextval"]
    );
    assert_eq!(functions("CALL p(1)"), ["p"]);
    assert_eq!(functions("EXPLAIN ANALYZE SELECT f()"), ["f"]);
    // EXPLAIN without ANALYZE does not call anything.
    assert!(functions("EXPLAIN SELECT nextval('s')").is_empty());
    assert!(functions("SELECT a FROM t").is_empty());
}
