//! Joins, subqueries, WITH queries and set operations over sharded tables.

use super::Want::*;
use super::{check, L, P};

#[test]
fn co_located_joins() {
    check(&[
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id WHERE u.id = $1",
            One(P(1)),
        ),
        (
            "SELECT * FROM users u JOIN pitches p ON u.id = p.user_id WHERE p.user_id = 7",
            One(L(0)),
        ),
        (
            "SELECT * FROM users u, pitches p WHERE u.id = p.user_id AND u.id = 7",
            One(L(0)),
        ),
        (
            "SELECT * FROM users JOIN pitches ON pitches.user_id = users.id WHERE users.id = 1",
            One(L(0)),
        ),
        // A pin in an inner join's ON counts.
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id AND u.id = 4",
            One(L(0)),
        ),
        (
            "SELECT * FROM users u LEFT JOIN pitches p ON p.user_id = u.id WHERE u.id = 4",
            One(L(0)),
        ),
        (
            "SELECT * FROM pitches a JOIN pitches b USING (user_id) WHERE a.user_id = $1",
            One(P(1)),
        ),
        (
            "SELECT * FROM pitches a JOIN pitches b USING (user_id) WHERE user_id = $1",
            One(P(1)),
        ),
        (
            "SELECT * FROM users a JOIN users b ON a.id = b.id WHERE b.id = 2",
            One(L(0)),
        ),
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id WHERE u.id IN (1, 2)",
            AnyOf(&[L(0), L(1)]),
        ),
        // Three tables, one class.
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id \
             JOIN pitches q ON q.user_id = p.user_id WHERE q.user_id = $3",
            One(P(3)),
        ),
        // Co-located, no key: every shard answers for its rows.
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id",
            Scatter,
        ),
        (
            "SELECT * FROM users u LEFT JOIN pitches p ON p.user_id = u.id",
            Scatter,
        ),
        (
            "SELECT * FROM users u FULL JOIN pitches p ON p.user_id = u.id",
            Scatter,
        ),
        // Unrelated pins of one value through one parameter: one shard holds all rows.
        (
            "SELECT * FROM users u, pitches p WHERE u.id = $1 AND p.user_id = $1",
            One(P(1)),
        ),
    ]);
}

#[test]
fn outer_joins_pin_only_what_they_filter() {
    check(&[
        // The ON of a LEFT JOIN does not filter the left side's rows.
        (
            "SELECT * FROM users u LEFT JOIN pitches p ON p.user_id = u.id AND p.user_id = 4",
            Scatter,
        ),
        // A RIGHT join after an inner join keeps rows the inner join's ON filtered.
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id AND u.id = 4 \
             RIGHT JOIN pitches q ON q.user_id = u.id",
            Scatter,
        ),
        // … but WHERE still filters.
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id \
             RIGHT JOIN pitches q ON q.user_id = u.id WHERE u.id = 4",
            One(L(0)),
        ),
        // Pins inside a parenthesized join are not taken.
        (
            "SELECT * FROM users u LEFT JOIN (pitches p JOIN pitches q ON q.user_id = p.user_id \
             AND p.user_id = 1) ON p.user_id = u.id",
            Scatter,
        ),
    ]);
}

#[test]
fn joins_not_on_keys_are_refused() {
    check(&[
        (
            "SELECT * FROM users u JOIN pitches p ON p.author = u.name",
            Refused(
                "joins users and pitches on something other than their shard keys; rows that \
                 match may live on different shards",
            ),
        ),
        (
            "SELECT * FROM users u, pitches p",
            Refused("joins users and pitches"),
        ),
        (
            "SELECT * FROM users u JOIN pitches p ON p.user_id = u.id OR p.x = u.y",
            Refused("joins users and pitches"),
        ),
        (
            "SELECT * FROM users a JOIN users b ON a.referrer = b.id",
            Refused("joins users and users"),
        ),
        (
            "SELECT * FROM users u NATURAL JOIN pitches p",
            Refused("joins users and pitches"),
        ),
        (
            "SELECT * FROM users u JOIN events e ON e.tenant = u.name",
            Refused("joins users and events"),
        ),
        // Pinned on both sides to different values: not known to be one shard.
        (
            "SELECT * FROM users u JOIN pitches p ON p.x = u.y WHERE u.id = 1 AND p.user_id = 2",
            Refused("joins users and pitches"),
        ),
        // With an unsharded table.
        (
            "SELECT * FROM users u JOIN pgbench_accounts a ON a.aid = u.id WHERE u.id = 1",
            Refused(
                "uses sharded table users together with table pgbench_accounts, which is not \
                 sharded and lives only on the default shard",
            ),
        ),
        (
            "SELECT * FROM users WHERE id IN (SELECT uid FROM banned)",
            Refused("together with table banned"),
        ),
    ]);
}

#[test]
fn subqueries() {
    check(&[
        // key IN (SELECT key …): each shard has both sides of every key.
        (
            "SELECT * FROM users WHERE id IN (SELECT user_id FROM pitches WHERE score > 5)",
            Scatter,
        ),
        (
            "SELECT * FROM users WHERE id = $1 AND id IN (SELECT user_id FROM pitches)",
            One(P(1)),
        ),
        (
            "SELECT * FROM users WHERE id IN (SELECT user_id FROM pitches WHERE user_id = 3)",
            One(L(0)),
        ),
        (
            "SELECT * FROM users WHERE id IN (SELECT user_id FROM pitches ORDER BY score LIMIT 10)",
            Refused("subquery, derived table or WITH clause reads sharded table pitches"),
        ),
        (
            "SELECT * FROM users WHERE id IN (SELECT score FROM pitches)",
            Refused("reads sharded table pitches without being pinned"),
        ),
        // Correlated on the key: tied to the outer row.
        (
            "SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM pitches p WHERE p.user_id = u.id)",
            Scatter,
        ),
        (
            "SELECT u.*, (SELECT count(*) FROM pitches p WHERE p.user_id = u.id) FROM users u",
            Scatter,
        ),
        (
            "SELECT u.*, (SELECT score FROM pitches p WHERE p.user_id = u.id ORDER BY score \
             LIMIT 1) FROM users u WHERE u.id = $1",
            One(P(1)),
        ),
        (
            "SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM pitches p WHERE u.id = p.user_id)",
            Scatter,
        ),
        // A pin inside a select-list subquery does not restrict the outer rows.
        (
            "SELECT u.*, (SELECT count(*) FROM pitches p WHERE p.user_id = u.id AND p.user_id = 5) \
             FROM users u",
            Scatter,
        ),
        // A condition on the outer key inside a subquery filters the subquery, not the outer rows.
        (
            "SELECT u.*, (SELECT count(*) FROM pitches p WHERE u.id = 5 AND p.user_id = u.id) \
             FROM users u",
            Scatter,
        ),
        (
            "SELECT u.*, (SELECT 1 FROM countries c WHERE u.id IN (SELECT user_id FROM pitches \
             WHERE user_id = 5)) FROM users u",
            Scatter,
        ),
        (
            "SELECT * FROM users u WHERE u.id IN (SELECT user_id FROM pitches WHERE user_id = 5)",
            One(L(0)),
        ),
        // Not tied: each shard would see part of pitches.
        (
            "SELECT * FROM users WHERE score > (SELECT avg(score) FROM users)",
            Refused("reads sharded table users without being pinned"),
        ),
        (
            "SELECT * FROM users u WHERE u.id = 1 AND EXISTS (SELECT 1 FROM pitches WHERE score > 3)",
            Refused("reads sharded table pitches"),
        ),
        // Pinned alone, to a key of its own.
        ("SELECT (SELECT count(*) FROM users WHERE id = $1)", One(P(1))),
        (
            "SELECT * FROM users WHERE id = $1 AND score > (SELECT avg(score) FROM pitches \
             WHERE user_id = $1)",
            One(P(1)),
        ),
        (
            "SELECT * FROM users WHERE id = 1 AND score > (SELECT avg(score) FROM pitches \
             WHERE user_id = 1)",
            Refused("reads sharded table pitches"),
        ),
        // Tied by IN, but the innermost subquery is not.
        (
            "SELECT * FROM users u WHERE u.id = $1 AND u.id IN (SELECT user_id FROM pitches p \
             WHERE p.score > (SELECT avg(score) FROM pitches))",
            Refused("reads sharded table pitches"),
        ),
        (
            "INSERT INTO users (id) VALUES (1) RETURNING (SELECT count(*) FROM pitches)",
            Refused("reads sharded table pitches"),
        ),
        // Only reference tables inside.
        (
            "SELECT * FROM users WHERE id = 1 AND country IN (SELECT code FROM countries)",
            One(L(0)),
        ),
    ]);
}

#[test]
fn derived_tables_and_with_queries() {
    check(&[
        ("SELECT * FROM (SELECT * FROM users WHERE id = 5) s", One(L(0))),
        (
            "WITH mine AS (SELECT * FROM pitches WHERE user_id = $1) SELECT count(*) FROM mine",
            One(P(1)),
        ),
        (
            "WITH mine AS (SELECT * FROM pitches WHERE user_id = $1) \
             SELECT * FROM users u JOIN mine ON true WHERE u.id = $1",
            One(P(1)),
        ),
        (
            "SELECT * FROM (SELECT * FROM users ORDER BY score LIMIT 5) s",
            Refused("derived table or WITH clause reads sharded table users"),
        ),
        (
            "WITH top AS (SELECT * FROM users) SELECT * FROM top",
            Refused("reads sharded table users"),
        ),
        (
            "SELECT * FROM users u JOIN (SELECT user_id, count(*) FROM pitches GROUP BY user_id) c \
             ON c.user_id = u.id",
            Refused("reads sharded table pitches"),
        ),
        // LATERAL, correlated on the key.
        (
            "SELECT * FROM users u, LATERAL (SELECT * FROM pitches p WHERE p.user_id = u.id \
             ORDER BY score LIMIT 3) best",
            Scatter,
        ),
        // Data-modifying WITH: one key, or refused.
        (
            "WITH d AS (DELETE FROM users WHERE id = 5 RETURNING *) SELECT * FROM d",
            One(L(0)),
        ),
        (
            "WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d",
            Refused("reads sharded table users"),
        ),
        (
            "WITH n AS (INSERT INTO users (id, name) VALUES ($1, $2) RETURNING id) \
             INSERT INTO pitches (user_id, score) SELECT id, 0 FROM n",
            Refused("INSERT … SELECT into sharded table pitches is refused"),
        ),
        (
            "WITH n AS (UPDATE users SET score = 0 WHERE id = $1 RETURNING id) \
             UPDATE pitches SET score = 0 WHERE user_id = $1",
            One(P(1)),
        ),
        (
            "WITH RECURSIVE r AS (SELECT id, referrer FROM users WHERE id = 1 UNION ALL \
             SELECT u.id, u.referrer FROM users u JOIN r ON u.id = r.referrer) SELECT * FROM r",
            Refused("reads sharded table users"),
        ),
    ]);
}

#[test]
fn set_operations() {
    check(&[
        ("SELECT id FROM users WHERE id = $1 UNION SELECT user_id FROM pitches WHERE user_id = $1", One(P(1))),
        ("SELECT id FROM users UNION ALL SELECT user_id FROM pitches", Scatter),
        ("SELECT id FROM users UNION ALL SELECT 1", Scatter),
        ("SELECT code FROM countries UNION SELECT 'x'", Reference),
        (
            "SELECT id FROM users EXCEPT SELECT user_id FROM pitches",
            Refused("INTERSECT or EXCEPT over sharded table users"),
        ),
        (
            "SELECT id FROM users WHERE id = 1 UNION ALL SELECT id FROM users WHERE id = 2",
            Scatter,
        ),
    ]);
}
