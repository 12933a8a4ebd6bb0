//! Key extraction, table-driven: users (id bigint) and pitches (user_id bigint) are sharded and
//! co-located, events is sharded by a text key, countries is a reference table, the pgbench tables
//! and anything else are unsharded.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;
use crate::sharding::key::KeyType;
use crate::sharding::plan::KeyRef;
use crate::sharding::rules::ShardedTable;

mod joins;
mod literals;
mod statements;

pub(super) fn rules() -> Rules {
    let table = |table: &str, column: &str, key_type| ShardedTable {
        table: table.into(),
        column: column.into(),
        key_type,
    };
    Rules::new(
        [
            table("users", "id", KeyType::BigInt),
            table("pitches", "user_id", KeyType::BigInt),
            table("events", "tenant", KeyType::Text),
        ],
        ["countries".to_owned()],
    )
}

pub(super) fn plan(sql: &str) -> ShardPlan {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(statements.len(), 1, "{sql}");
    shard_plan(&statements[0], sql, &rules())
}

/// What a case expects, briefly.
#[derive(Debug)]
pub(super) enum Want {
    Unsharded,
    Reference,
    /// Keyed bigint, one key.
    One(KeyRef),
    /// Keyed text, one key.
    Text(KeyRef),
    AnyOf(&'static [KeyRef]),
    Array(u16),
    Rows(&'static [KeyRef]),
    Scatter,
    ScatterWrite,
    Ddl,
    /// A write of a reference table: every copy (two-phase commit).
    ReferenceWrite,
    CopyIn(usize, usize),
    /// Refused, with a message containing this.
    Refused(&'static str),
}

pub(super) use KeyRef::{Literal as L, NegLiteral as Neg, Param as P};

pub(super) fn check(cases: &[(&str, Want)]) {
    let mut failures = Vec::new();
    for (sql, want) in cases {
        let got = plan(sql);
        let ok = match (want, &got) {
            (Want::Unsharded, ShardPlan::Unsharded)
            | (Want::Reference, ShardPlan::ReferenceRead)
            | (Want::Scatter, ShardPlan::ScatterRead)
            | (Want::ScatterWrite, ShardPlan::ScatterWrite { .. })
            | (Want::Ddl, ShardPlan::Ddl)
            | (Want::ReferenceWrite, ShardPlan::ReferenceWrite) => true,
            (Want::One(r), _) => {
                got == ShardPlan::Keyed {
                    key_type: KeyType::BigInt,
                    keys: Keys::One(*r),
                }
            }
            (Want::Text(r), _) => {
                got == ShardPlan::Keyed {
                    key_type: KeyType::Text,
                    keys: Keys::One(*r),
                }
            }
            (Want::AnyOf(refs), _) => {
                got == ShardPlan::Keyed {
                    key_type: KeyType::BigInt,
                    keys: Keys::AnyOf(refs.to_vec().into_boxed_slice()),
                }
            }
            (Want::Array(n), _) => {
                got == ShardPlan::Keyed {
                    key_type: KeyType::BigInt,
                    keys: Keys::ArrayParam(*n),
                }
            }
            (Want::Rows(rows), _) => {
                got == ShardPlan::InsertRows {
                    key_type: KeyType::BigInt,
                    rows: rows.to_vec().into_boxed_slice(),
                }
            }
            (Want::CopyIn(index, columns), _) => {
                got == ShardPlan::CopyIn {
                    key_type: KeyType::BigInt,
                    column_index: *index,
                    columns: *columns,
                }
            }
            (Want::Refused(part), ShardPlan::Refused(why)) => why.contains(part),
            _ => false,
        };
        if !ok {
            failures.push(format!("{sql}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn no_rules_no_sharding() {
    let sql = "SELECT * FROM users WHERE id = 1";
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
    assert_eq!(
        shard_plan(&statements[0], sql, &Rules::default()),
        ShardPlan::Unsharded
    );
}

#[test]
fn keyed_reads() {
    use Want::*;
    check(&[
        ("SELECT * FROM users WHERE id = 5", One(L(0))),
        ("SELECT * FROM users WHERE 5 = id", One(L(0))),
        ("SELECT * FROM users WHERE id = $1", One(P(1))),
        ("SELECT * FROM users WHERE id = $1::bigint", One(P(1))),
        ("SELECT * FROM users WHERE id = CAST($2 AS int8)", One(P(2))),
        ("SELECT * FROM users WHERE id = '5'::bigint", One(L(0))),
        ("SELECT * FROM users WHERE id = int8 '5'", One(L(0))),
        ("SELECT * FROM users WHERE id = -5", One(Neg(0))),
        ("SELECT * FROM users WHERE id = +5", One(L(0))),
        ("SELECT * FROM users WHERE (id = 7)", One(L(0))),
        ("SELECT * FROM users WHERE id = (7)", One(L(0))),
        (
            "SELECT * FROM users WHERE name = 'x' AND id = 7 LIMIT 3",
            One(L(1)),
        ),
        (
            "SELECT * FROM users WHERE (name = 'x' OR age > 3) AND id = $2",
            One(P(2)),
        ),
        ("SELECT * FROM users u WHERE u.id = 5", One(L(0))),
        ("SELECT * FROM users WHERE users.id = 5", One(L(0))),
        (
            "SELECT * FROM public.users WHERE public.users.id = 5",
            One(L(0)),
        ),
        ("SELECT * FROM Users WHERE ID = 5", One(L(0))),
        ("SELECT * FROM users WHERE \"id\" = 5", One(L(0))),
        ("SELECT * FROM users AS \"U\" WHERE \"U\".id = 5", One(L(0))),
        // Quoted names keep their case: "Users" is another table.
        ("SELECT * FROM \"Users\" WHERE id = 5", Unsharded),
        ("SELECT * FROM users WHERE \"ID\" = 5", Scatter),
        (
            "SELECT count(*) FROM pitches WHERE user_id = $1 GROUP BY x",
            One(P(1)),
        ),
        ("SELECT * FROM users WHERE id = 1 AND id = 2", One(L(0))),
        ("SELECT * FROM users WHERE id = 5 FOR UPDATE", One(L(0))),
        ("SELECT * FROM events WHERE tenant = 'acme'", Text(L(0))),
        ("SELECT * FROM events WHERE tenant = $1::text", Text(P(1))),
        (
            "SELECT * FROM events WHERE tenant = 'acme'::varchar",
            Text(L(0)),
        ),
    ]);
}

#[test]
fn several_keys() {
    use Want::*;
    check(&[
        (
            "SELECT * FROM users WHERE id IN (1, 2, 3)",
            AnyOf(&[L(0), L(1), L(2)]),
        ),
        (
            "SELECT * FROM users WHERE id IN ($1, 2)",
            AnyOf(&[P(1), L(0)]),
        ),
        ("SELECT * FROM users WHERE id IN (4)", One(L(0))),
        ("SELECT * FROM users WHERE id IN ($1, $1)", One(P(1))),
        ("SELECT * FROM users WHERE id = ANY($1)", Array(1)),
        ("SELECT * FROM users WHERE id = ANY($1::bigint[])", Array(1)),
        (
            "SELECT * FROM users WHERE id = ANY(ARRAY[1, 2])",
            AnyOf(&[L(0), L(1)]),
        ),
        (
            "SELECT * FROM users WHERE id = 1 OR id = 2",
            AnyOf(&[L(0), L(1)]),
        ),
        (
            "SELECT * FROM users WHERE (id = 1 AND name = 'a') OR id IN (2, 3)",
            AnyOf(&[L(0), L(2), L(3)]),
        ),
        (
            "SELECT * FROM users WHERE id = 1 OR id = 1",
            AnyOf(&[L(0), L(1)]),
        ),
        ("SELECT * FROM users WHERE id = $1 OR id = $1", One(P(1))),
        // A branch that does not pin the key: every shard.
        ("SELECT * FROM users WHERE id = 1 OR name = 'a'", Scatter),
        ("SELECT * FROM users WHERE id = 1 OR id = ANY($1)", Scatter),
        ("SELECT * FROM users WHERE id NOT IN (1, 2)", Scatter),
        ("SELECT * FROM users WHERE NOT (id = 1)", Scatter),
        ("SELECT * FROM users WHERE id <> 1", Scatter),
        ("SELECT * FROM users WHERE id > 1", Scatter),
        ("SELECT * FROM users WHERE id = ANY('{1,2}')", Scatter),
        ("SELECT * FROM users WHERE id IN (1, id + 1)", Scatter),
        ("SELECT * FROM users ORDER BY id LIMIT 10", Scatter),
        ("SELECT count(*) FROM users", Scatter),
    ]);
}

#[test]
fn values_that_are_not_keys() {
    use Want::*;
    check(&[
        // Casts that may change the value, expressions, functions, NULL, columns.
        ("SELECT * FROM users WHERE id = 5::numeric", Scatter),
        ("SELECT * FROM users WHERE id = '5'::text", Scatter),
        (
            "SELECT * FROM events WHERE tenant = 'acme'::char(2)",
            Scatter,
        ),
        (
            "SELECT * FROM events WHERE tenant = 'acme' COLLATE \"C\"",
            Scatter,
        ),
        ("SELECT * FROM users WHERE id = 2 + 3", Scatter),
        ("SELECT * FROM users WHERE id = abs(-5)", Scatter),
        ("SELECT * FROM users WHERE id = - -5", Scatter),
        ("SELECT * FROM users WHERE id = NULL", Scatter),
        ("SELECT * FROM users WHERE id = other_id", Scatter),
        ("SELECT * FROM users WHERE id::text = '5'", Scatter),
        ("SELECT * FROM users WHERE id = (SELECT 5)", Scatter),
        // `id` is not pitches' key: unknown columns are not keys.
        ("SELECT * FROM pitches WHERE id = 5", Scatter),
    ]);
}

#[test]
fn writes() {
    use Want::*;
    check(&[
        ("UPDATE users SET name = 'x' WHERE id = 5", One(L(1))),
        ("UPDATE users SET name = $2 WHERE id = $1", One(P(1))),
        ("UPDATE users u SET name = 'x' WHERE u.id IN (1, 2)", AnyOf(&[L(1), L(2)])),
        ("DELETE FROM users WHERE id = $1 RETURNING *", One(P(1))),
        ("DELETE FROM pitches WHERE user_id = ANY($1)", Array(1)),
        ("UPDATE users SET name = 'x'", ScatterWrite),
        ("UPDATE users SET score = score + 1 WHERE score < 10", ScatterWrite),
        ("DELETE FROM pitches", ScatterWrite),
        ("DELETE FROM pitches WHERE user_id > 3", ScatterWrite),
        (
            "UPDATE users SET id = 6 WHERE id = 5",
            Refused("UPDATE of the shard key users.id is refused"),
        ),
        ("UPDATE users SET (name, ID) = ('a', 2)", Refused("rows are not moved between shards")),
        (
            "UPDATE pitches p SET score = 1 FROM users u WHERE p.user_id = u.id AND u.id = $1",
            One(P(1)),
        ),
        (
            "UPDATE pitches p SET score = 1 FROM users u WHERE p.user_id = u.id",
            ScatterWrite,
        ),
        (
            "UPDATE pitches p SET score = 1 FROM users u WHERE p.score = u.score",
            Refused("joins pitches and users on something other than their shard keys"),
        ),
        (
            "DELETE FROM pitches p USING users u WHERE p.user_id = u.id AND u.id = 3",
            One(L(0)),
        ),
        (
            "UPDATE users SET score = (SELECT max(score) FROM pitches) WHERE id = 1",
            Refused("without being pinned"),
        ),
        (
            "UPDATE users u SET score = (SELECT max(p.score) FROM pitches p WHERE p.user_id = u.id)",
            ScatterWrite,
        ),
        // Writes to unsharded tables: the default shard, unless they read sharded ones.
        ("UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 86042", Unsharded),
        (
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now())",
            Unsharded,
        ),
        ("DELETE FROM log WHERE at < now()", Unsharded),
        ("INSERT INTO log SELECT * FROM users", Refused("together with table log")),
        (
            "UPDATE log SET n = (SELECT count(*) FROM users WHERE id = 1)",
            Refused("together with table log"),
        ),
        ("INSERT INTO log SELECT name FROM countries", Unsharded),
    ]);
}

#[test]
fn reference_tables() {
    use Want::*;
    check(&[
        ("SELECT * FROM countries", Reference),
        (
            "SELECT * FROM countries c JOIN countries d ON c.region = d.id",
            Reference,
        ),
        (
            "SELECT * FROM public.countries WHERE code = 'fr'",
            Reference,
        ),
        ("SELECT * FROM countries, generate_series(1, 3)", Reference),
        // With an unsharded table: the default shard has a copy too.
        (
            "SELECT * FROM countries JOIN pgbench_branches ON true",
            Unsharded,
        ),
        // Joined with sharded tables: follow the sharded table.
        (
            "SELECT * FROM users u JOIN countries c ON c.code = u.country WHERE u.id = 1",
            One(L(0)),
        ),
        (
            "SELECT * FROM users u JOIN countries c ON c.code = u.country",
            Scatter,
        ),
        (
            "SELECT * FROM users WHERE country IN (SELECT code FROM countries WHERE eu)",
            Scatter,
        ),
        // Plain writes of a reference table go to every copy; anything else is refused.
        ("INSERT INTO countries (code) VALUES ('fr')", ReferenceWrite),
        ("UPDATE countries SET name = 'x'", ReferenceWrite),
        ("DELETE FROM Countries WHERE code = 'x'", ReferenceWrite),
        (
            "INSERT INTO countries (code) SELECT country FROM users",
            Refused("write to reference table countries is refused"),
        ),
        (
            "WITH d AS (DELETE FROM countries RETURNING *) SELECT * FROM d",
            Refused("write to reference table countries"),
        ),
        (
            "TRUNCATE countries",
            Refused("write to reference table countries"),
        ),
    ]);
}

#[test]
fn unsharded_statements() {
    use Want::*;
    check(&[
        ("SELECT 1", Reference),
        ("SELECT now(), version()", Reference),
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            Unsharded,
        ),
        (
            "SELECT * FROM pgbench_accounts a JOIN pgbench_branches b ON a.bid = b.bid",
            Unsharded,
        ),
        ("SELECT * FROM pg_catalog.pg_class", Unsharded),
        ("SELECT * FROM information_schema.tables", Unsharded),
        ("SET search_path = public", Unsharded),
        ("SHOW work_mem", Unsharded),
        ("BEGIN", Unsharded),
        ("COMMIT", Unsharded),
        ("ROLLBACK", Unsharded),
        ("SAVEPOINT a", Unsharded),
        ("LISTEN ch", Unsharded),
        ("NOTIFY ch", Unsharded),
        ("DISCARD ALL", Unsharded),
        ("DEALLOCATE ALL", Unsharded),
        ("FETCH 10 FROM c", Unsharded),
        ("CLOSE c", Unsharded),
        ("EXECUTE p(1)", Unsharded),
        ("CALL refresh_stats()", Unsharded),
        ("SELECT nextval('s')", Reference), // classify sends it to the default shard
        // A WITH query may share a sharded table's name: it is not the table.
        (
            "WITH users AS (SELECT 1 AS id) SELECT * FROM users WHERE id = 3",
            Unsharded,
        ),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Unsharded),
    ]);
}

/// Issue 11: the key-less write refusal named `user_id` whatever the table; it names the written
/// table's own shard-key column.
#[test]
fn keyless_write_refusal_names_the_tables_key() {
    for (sql, table, column) in [
        ("UPDATE users SET name = 'x'", "users", "id"),
        ("DELETE FROM pitches WHERE score > 3", "pitches", "user_id"),
    ] {
        let ShardPlan::ScatterWrite { refusal } = plan(sql) else {
            panic!("{sql}: not a key-less write");
        };
        assert!(
            refusal.contains(&format!("sharded table {table} ")),
            "{refusal}"
        );
        assert!(
            refusal.contains(&format!("WHERE {column} = …")),
            "{refusal}"
        );
    }
}
