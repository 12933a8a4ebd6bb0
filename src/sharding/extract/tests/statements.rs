//! INSERT, COPY, DDL, EXPLAIN, PREPARE, cursors and the other statements.

use super::Want::*;
use super::{check, Neg, L, P};

#[test]
fn inserts() {
    check(&[
        ("INSERT INTO users (id, name) VALUES (5, 'a')", One(L(0))),
        ("INSERT INTO users (name, id) VALUES ('a', 5)", One(L(1))),
        ("INSERT INTO users (name, id) VALUES ($1, $2)", One(P(2))),
        ("INSERT INTO users (id) VALUES (-5)", One(Neg(0))),
        ("INSERT INTO users (id) VALUES ($1::bigint)", One(P(1))),
        (
            "INSERT INTO public.users (\"id\", name) VALUES ('5', 'a')",
            One(L(0)),
        ),
        (
            "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE \
             SET name = excluded.name RETURNING id",
            One(P(1)),
        ),
        (
            "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            One(P(1)),
        ),
        (
            "INSERT INTO users (id, n) VALUES (1, 2), (3, 4), ($1, 5)",
            Rows(&[L(0), L(2), P(1)]),
        ),
        (
            "INSERT INTO users (n, id) VALUES (1, 2), (3, -4)",
            Rows(&[L(1), Neg(3)]),
        ),
        (
            "INSERT INTO users (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET id = 2",
            Refused("UPDATE of the shard key users.id is refused"),
        ),
        (
            "INSERT INTO users VALUES (1, 'a')",
            Refused(
                "INSERT into sharded table users needs a column list naming its shard key, as in \
                 INSERT INTO users (id, …)",
            ),
        ),
        (
            "INSERT INTO users (name) VALUES ('a')",
            Refused("must give its shard key id"),
        ),
        (
            "INSERT INTO users (id, name) VALUES (DEFAULT, 'a')",
            Refused("with a default shard key id is refused"),
        ),
        (
            "INSERT INTO users DEFAULT VALUES",
            Refused("default shard key"),
        ),
        (
            "INSERT INTO users (id) VALUES (1 + 2)",
            Refused("computes its shard key id with an expression"),
        ),
        (
            "INSERT INTO users (id) VALUES (nextval('users_id_seq'))",
            Refused("with an expression"),
        ),
        (
            "INSERT INTO users (id) VALUES (1), (DEFAULT)",
            Refused("default shard key"),
        ),
        (
            "INSERT INTO users (id, name) SELECT id, name FROM staging",
            Refused(
                "INSERT … SELECT into sharded table users is refused: the selected rows may \
                 belong to other shards; insert rows with VALUES",
            ),
        ),
        (
            "INSERT INTO users (id) SELECT 1",
            Refused("INSERT … SELECT"),
        ),
        (
            "INSERT INTO pitches (user_id, best) VALUES ($1, (SELECT max(score) FROM pitches \
             WHERE user_id = $1))",
            One(P(1)),
        ),
        (
            "INSERT INTO pitches (user_id, best) VALUES ($1, (SELECT max(score) FROM pitches))",
            Refused("reads sharded table pitches"),
        ),
        (
            "INSERT INTO pitches (user_id, best) VALUES (1, (SELECT 1 FROM users WHERE id = 1)), \
             (2, 3)",
            Refused("a multi-row INSERT into sharded table pitches"),
        ),
        (
            "INSERT INTO events (tenant, n) VALUES ('acme', 1)",
            Text(L(0)),
        ),
    ]);
}

#[test]
fn copy() {
    check(&[
        ("COPY users (id, name) FROM STDIN", CopyIn(0, 2)),
        (
            "COPY users (name, id, score) FROM STDIN WITH (FORMAT csv)",
            CopyIn(1, 3),
        ),
        (
            "COPY public.pitches (score, user_id) FROM STDIN CSV HEADER",
            CopyIn(1, 2),
        ),
        (
            "COPY users FROM STDIN",
            Refused(
                "COPY users FROM STDIN needs a column list that includes the shard key, as in \
                 COPY users (id, …) FROM STDIN",
            ),
        ),
        (
            "COPY users (name) FROM STDIN",
            Refused("must include the shard key id"),
        ),
        (
            "COPY users (id) FROM '/tmp/u.csv'",
            Refused("server file or program is refused"),
        ),
        (
            "COPY users TO STDOUT",
            Refused("COPY … TO of sharded table users reading more than one shard is refused"),
        ),
        (
            "COPY (SELECT * FROM users WHERE id = 5) TO STDOUT",
            One(L(0)),
        ),
        (
            "COPY (SELECT * FROM users) TO STDOUT",
            Refused("COPY … TO of sharded table users"),
        ),
        (
            "COPY (SELECT * FROM users WHERE id IN (1, 2)) TO STDOUT",
            Refused("COPY … TO"),
        ),
        ("COPY countries TO STDOUT", Reference),
        (
            "COPY countries FROM STDIN",
            Refused("write to reference table countries"),
        ),
        ("COPY pgbench_accounts FROM STDIN", Unsharded),
        ("COPY pgbench_accounts TO STDOUT", Unsharded),
        ("COPY (SELECT 1) TO STDOUT", Unsharded),
    ]);
}

#[test]
fn ddl() {
    check(&[
        ("CREATE TABLE users (id bigint PRIMARY KEY, name text)", Ddl),
        ("CREATE TABLE countries (code text)", Ddl),
        ("ALTER TABLE users ADD COLUMN age int", Ddl),
        ("ALTER TABLE public.pitches ADD COLUMN x int", Ddl),
        ("DROP TABLE users", Ddl),
        ("DROP TABLE IF EXISTS users, pitches", Ddl),
        ("CREATE INDEX ON pitches (score)", Ddl),
        ("CREATE UNIQUE INDEX users_name ON users (name)", Ddl),
        ("DROP INDEX users_name", Ddl),
        ("TRUNCATE users", Ddl),
        ("TRUNCATE users, pitches", Ddl),
        ("COMMENT ON TABLE users IS 'people'", Ddl),
        ("COMMENT ON COLUMN users.name IS 'name'", Ddl),
        ("CREATE SEQUENCE s", Ddl),
        ("CREATE TYPE mood AS ENUM ('a', 'b')", Ddl),
        ("CREATE SCHEMA app", Ddl),
        ("CREATE EXTENSION pgcrypto", Ddl),
        ("DROP EXTENSION pgcrypto", Ddl),
        ("CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", Ddl),
        ("DROP FUNCTION f", Ddl),
        ("DROP SEQUENCE s", Ddl),
        ("DROP TYPE mood", Ddl),
        ("DROP SCHEMA app", Ddl),
        ("GRANT SELECT ON users TO app", Ddl),
        ("VACUUM users", Ddl),
        ("ANALYZE users", Ddl),
        // Unsharded tables' DDL too goes to every shard (same schema everywhere; their rows
        // live on the default shard).
        (
            "CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84))",
            Ddl,
        ),
        ("ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)", Ddl),
        ("DROP TABLE IF EXISTS pgbench_history", Ddl),
        ("TRUNCATE pgbench_history", Unsharded),
        ("CREATE INDEX ON pgbench_accounts (bid)", Ddl),
        ("VACUUM pgbench_accounts", Ddl),
        ("GRANT SELECT ON pgbench_accounts TO app", Ddl),
        ("DROP TABLE users, pgbench_history", Ddl),
        ("TRUNCATE users, log", Ddl),
        // Tables from queries.
        (
            "CREATE TABLE copy AS SELECT * FROM users",
            Refused("creating a table from a query"),
        ),
        ("CREATE TABLE users AS SELECT 1 AS id", Refused("creating a table from a query")),
        ("CREATE TABLE c2 AS SELECT * FROM countries", Unsharded),
        ("CREATE TABLE t2 AS SELECT * FROM pgbench_accounts", Unsharded),
        ("SELECT * INTO copy FROM users", Refused("creating a table from a query")),
        ("SELECT * INTO copy FROM pgbench_accounts", Unsharded),
        // Views are read on the default shard.
        ("CREATE VIEW v AS SELECT * FROM users", Refused("a view over sharded table users")),
        ("CREATE VIEW v AS SELECT * FROM countries", Unsharded),
        ("DROP VIEW v", Unsharded),
    ]);
}

#[test]
fn other_statements() {
    check(&[
        ("EXPLAIN SELECT * FROM users WHERE id = 1", One(L(0))),
        (
            "EXPLAIN ANALYZE UPDATE users SET x = 1 WHERE id = $1",
            One(P(1)),
        ),
        (
            "EXPLAIN SELECT * FROM users",
            Refused("EXPLAIN of a statement that runs on several shards"),
        ),
        (
            "EXPLAIN SELECT * FROM users WHERE id IN (1, 2)",
            Refused("EXPLAIN"),
        ),
        ("EXPLAIN SELECT 1", Reference),
        (
            "PREPARE p AS SELECT * FROM users WHERE id = $1",
            Refused("PREPARE of a statement over sharded tables"),
        ),
        (
            "PREPARE p AS SELECT * FROM pgbench_accounts WHERE aid = $1",
            Unsharded,
        ),
        ("PREPARE p AS SELECT * FROM countries", Unsharded),
        (
            "DECLARE c CURSOR FOR SELECT * FROM users",
            Refused("cursors over sharded tables"),
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM users WHERE id = 1",
            Refused("cursors"),
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM pgbench_accounts",
            Unsharded,
        ),
        ("LOCK TABLE users", Refused("LOCK TABLE users is refused")),
        ("LOCK TABLE pgbench_accounts", Unsharded),
        (
            "MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN DELETE",
            Refused("MERGE involving sharded or reference table users"),
        ),
        (
            "MERGE INTO log l USING staging s ON l.id = s.id WHEN MATCHED THEN DELETE",
            Unsharded,
        ),
    ]);
}
