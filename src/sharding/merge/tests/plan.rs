//! plan_scatter: the shard SQL of every supported shape, and a refusal (with its why and what to
//! do) for every unsupported one.

use super::super::plan::{Body, ColumnRef, Final, Role, SortKey};
use super::*;

fn shard_sql(sql: &str) -> String {
    plan_scatter(sql)
        .expect("plannable")
        .shard_sql()
        .to_string()
}

fn refusal(sql: &str) -> Unmergeable {
    plan_scatter(sql).expect_err("refused")
}

#[test]
fn plain_select_is_sent_as_is_and_concatenated() {
    let plan = plan_scatter("SELECT a, b FROM t WHERE c > 1").expect("plannable");
    assert_eq!(plan.shard_sql(), "SELECT a, b FROM t WHERE c > 1");
    assert!(plan.is_concat());
    assert!(plan_scatter("SELECT * FROM t JOIN r ON r.id = t.rid")
        .expect("plannable")
        .is_concat());
}

#[test]
fn limit_and_offset_become_limit_n_plus_m() {
    let plan = plan_scatter("SELECT a FROM t LIMIT 10 OFFSET 5").expect("plannable");
    assert_eq!(plan.shard_sql(), "SELECT a FROM t LIMIT 15");
    assert!(!plan.is_concat());
    assert_eq!((plan.offset, plan.limit), (5, Some(10)));
    assert_eq!(shard_sql("SELECT a FROM t OFFSET 5"), "SELECT a FROM t");
    assert_eq!(shard_sql("SELECT a FROM t LIMIT ALL"), "SELECT a FROM t");
    assert_eq!(shard_sql("SELECT a FROM t LIMIT NULL"), "SELECT a FROM t");
}

#[test]
fn order_by_output_columns_uses_positions() {
    for sql in [
        "SELECT a, b FROM t ORDER BY 2 DESC, 1",
        "SELECT a, b FROM t ORDER BY b DESC, a",
        "SELECT a, b AS bb FROM t ORDER BY bb DESC, t.a",
        "SELECT t.a, b FROM t ORDER BY b DESC, a",
    ] {
        let sql_out = shard_sql(sql);
        let plan = plan_scatter(sql).expect("plannable");
        assert!(sql_out.ends_with("ORDER BY 2 DESC, 1") || sql_out.contains("__pgscale_0"));
        assert_eq!(plan.order[0].column, ColumnRef::Visible(1), "{sql}");
        assert!(
            plan.order[0].descending && plan.order[0].nulls_first,
            "{sql}"
        );
    }
    assert_eq!(
        shard_sql("SELECT a + 1, b FROM t ORDER BY a + 1 NULLS FIRST LIMIT 3"),
        "SELECT a + 1, b FROM t ORDER BY 1 NULLS FIRST LIMIT 3"
    );
}

#[test]
fn output_names_win_over_table_columns_in_order_by() {
    // `a` is the output column (the cast of b), as in Postgres.
    let plan = plan_scatter("SELECT b::int AS a, a AS c FROM t ORDER BY a").expect("plannable");
    assert_eq!(plan.order[0].column, ColumnRef::Visible(0));
    // An unaliased cast of a column keeps the column's name.
    let plan = plan_scatter("SELECT x, CAST(b AS int) FROM t ORDER BY b").expect("plannable");
    assert_eq!(plan.order[0].column, ColumnRef::Visible(1));
    // Two different output columns named `a`: Postgres calls it ambiguous.
    assert!(matches!(
        refusal("SELECT b AS a, a FROM t ORDER BY a"),
        Unmergeable::AmbiguousName(_)
    ));
}

#[test]
fn order_by_other_expressions_adds_hidden_columns() {
    let plan = plan_scatter("SELECT a FROM t ORDER BY b DESC, lower(c), b DESC LIMIT 2 OFFSET 1")
        .expect("plannable");
    assert_eq!(
        plan.shard_sql(),
        "SELECT a, b AS __pgscale_0, lower(c) AS __pgscale_1 FROM t \
         ORDER BY __pgscale_0 DESC, __pgscale_1, __pgscale_0 DESC LIMIT 3"
    );
    assert_eq!(plan.body, Body::Rows { hidden: 2 });
    let columns: Vec<_> = plan.order.iter().map(|k| k.column).collect();
    assert_eq!(
        columns,
        [
            ColumnRef::Hidden(0),
            ColumnRef::Hidden(1),
            ColumnRef::Hidden(0)
        ]
    );
    // After a `*` positions are unknown: an output column is selected again, hidden.
    assert_eq!(
        shard_sql("SELECT *, a + 1 AS n FROM t ORDER BY n, 1"),
        "SELECT *, a + 1 AS n, a + 1 AS __pgscale_0 FROM t ORDER BY __pgscale_0, 1"
    );
}

#[test]
fn nulls_defaults_follow_postgres() {
    let plan = plan_scatter(
        "SELECT a, b, c, d FROM t ORDER BY a, b DESC, c ASC NULLS FIRST, d DESC NULLS LAST",
    )
    .expect("plannable");
    let flags: Vec<_> = plan
        .order
        .iter()
        .map(|k| (k.descending, k.nulls_first))
        .collect();
    assert_eq!(
        flags,
        [(false, false), (true, true), (false, true), (true, false)]
    );
}

#[test]
fn collate_c_marks_a_key_bytewise() {
    let plan =
        plan_scatter("SELECT name FROM t ORDER BY name COLLATE \"C\", name").expect("plannable");
    let bytewise: Vec<_> = plan.order.iter().map(|k| k.bytewise).collect();
    assert_eq!(bytewise, [true, false]);
    let plan = plan_scatter("SELECT max(name COLLATE \"C\") FROM t").expect("plannable");
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(agg.roles, [Role::Max { bytewise: true }]);
}

#[test]
fn aggregates_without_group_by() {
    let plan = plan_scatter("SELECT count(*), sum(a), min(b), max(c), avg(d) FROM t LIMIT 5")
        .expect("plannable");
    assert_eq!(
        plan.shard_sql(),
        "SELECT count(*), sum(a), min(b), max(c), sum(d) AS avg, count(d) AS __pgscale_0 FROM t"
    );
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert!(!agg.grouped);
    assert_eq!(
        agg.roles,
        [
            Role::Count,
            Role::Sum,
            Role::Min { bytewise: false },
            Role::Max { bytewise: false },
            Role::Sum,
            Role::Count
        ]
    );
    assert_eq!(agg.finals[4], Final::Avg { sum: 4, count: 5 });
    assert_eq!(plan.limit, Some(5));
}

#[test]
fn avg_partials_go_after_every_item() {
    let plan = plan_scatter("SELECT avg(a), avg(b), sum(b) FROM t").expect("plannable");
    assert_eq!(
        plan.shard_sql(),
        "SELECT sum(a) AS avg, sum(b) AS avg, sum(b), count(a) AS __pgscale_0, count(b) AS \
         __pgscale_1 FROM t"
    );
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(
        agg.roles,
        [Role::Sum, Role::Sum, Role::Sum, Role::Count, Role::Count]
    );
    assert_eq!(
        agg.finals,
        [
            Final::Avg { sum: 0, count: 3 },
            Final::Avg { sum: 1, count: 4 },
            Final::Column(2)
        ]
    );
}

#[test]
fn avg_keeps_its_output_name() {
    assert_eq!(
        shard_sql("SELECT AVG(x) AS \"Mean\", (avg(y)) FROM t"),
        "SELECT sum(x) AS \"Mean\", sum(y) AS avg, count(x) AS __pgscale_0, count(y) AS \
         __pgscale_1 FROM t"
    );
    assert_eq!(
        shard_sql("SELECT pg_catalog.avg(x) FROM t"),
        "SELECT pg_catalog.sum(x) AS avg, pg_catalog.count(x) AS __pgscale_0 FROM t"
    );
}

#[test]
fn group_by_sends_no_order_or_limit_to_shards() {
    let plan = plan_scatter(
        "SELECT a, count(*) FROM t GROUP BY a ORDER BY count(*) DESC LIMIT 3 OFFSET 1",
    )
    .expect("plannable");
    // Groups span shards: every shard's every group is needed before ordering and limiting.
    assert_eq!(plan.shard_sql(), "SELECT a, count(*) FROM t GROUP BY a");
    assert_eq!((plan.offset, plan.limit), (1, Some(3)));
    assert_eq!(
        plan.order,
        [SortKey {
            column: ColumnRef::Visible(1),
            descending: true,
            nulls_first: true,
            bytewise: false
        }]
    );
}

#[test]
fn group_by_keys_not_selected_are_hidden() {
    let plan = plan_scatter("SELECT sum(b) FROM t GROUP BY a, c ORDER BY a, avg(d), max(e)")
        .expect("plannable");
    assert_eq!(
        plan.shard_sql(),
        "SELECT sum(b), a AS __pgscale_0, c AS __pgscale_1, sum(d) AS __pgscale_2, count(d) AS \
         __pgscale_3, max(e) AS __pgscale_4 FROM t GROUP BY a, c"
    );
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(
        agg.roles,
        [
            Role::Sum,
            Role::Key,
            Role::Key,
            Role::Sum,
            Role::Count,
            Role::Max { bytewise: false }
        ]
    );
    assert_eq!(
        agg.finals,
        [
            Final::Column(0),
            Final::Column(1),
            Final::Avg { sum: 3, count: 4 },
            Final::Column(5)
        ]
    );
    let columns: Vec<_> = plan.order.iter().map(|k| k.column).collect();
    assert_eq!(
        columns,
        [
            ColumnRef::Hidden(0),
            ColumnRef::Hidden(1),
            ColumnRef::Hidden(2)
        ]
    );
}

#[test]
fn group_by_positions_and_expressions() {
    let plan = plan_scatter("SELECT a + 1, lower(b), count(*) FROM t GROUP BY 1, lower(b)")
        .expect("plannable");
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(agg.roles, [Role::Key, Role::Key, Role::Count]);
    // A select-list value the group determines is taken from any shard.
    let plan = plan_scatter("SELECT a, 'x', count(*) FROM t GROUP BY a").expect("plannable");
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(agg.roles, [Role::Key, Role::Carried, Role::Count]);
    // GROUP BY without aggregates (DISTINCT's mergeable spelling).
    let plan = plan_scatter("SELECT a, b FROM t GROUP BY a, b").expect("plannable");
    assert!(matches!(plan.body, Body::Aggregate(_)));
}

#[test]
fn shard_result_formats_ask_binary_for_hidden_columns() {
    let plan = plan_scatter("SELECT a, avg(b) FROM t GROUP BY a").expect("plannable");
    assert_eq!(plan.shard_result_formats(&[]), Vec::<i16>::new());
    assert_eq!(plan.shard_result_formats(&[1]), [1]);
    assert_eq!(plan.shard_result_formats(&[0, 1]), [0, 1, 1]);
    let plan = plan_scatter("SELECT a FROM t ORDER BY b").expect("plannable");
    assert_eq!(plan.shard_result_formats(&[0, 0]), [0, 0, 1]);
}

#[test]
fn refusals_say_why_and_what_to_do() {
    use Unmergeable as U;
    let cases: &[(&str, Unmergeable)] = &[
        ("SELEC a FROM t", U::Unparsable),
        ("SELECT a FROM t; SELECT b FROM t", U::NotOneSelect),
        ("INSERT INTO t VALUES (1)", U::NotOneSelect),
        ("SELECT 1", U::NoFrom),
        ("SELECT a FROM t UNION SELECT a FROM u", U::SetOperation),
        ("WITH w AS (SELECT a FROM t) SELECT a FROM w", U::With),
        ("SELECT a FROM t WHERE a IN (SELECT b FROM u)", U::Subquery),
        ("SELECT a, (SELECT max(b) FROM u) FROM t", U::Subquery),
        ("SELECT a FROM (SELECT a FROM t) s", U::Subquery),
        (
            "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u)",
            U::Subquery,
        ),
        ("SELECT DISTINCT a FROM t", U::Distinct),
        ("SELECT DISTINCT ON (a) a, b FROM t", U::DistinctOn),
        ("SELECT count(DISTINCT a) FROM t", U::DistinctAggregate),
        (
            "SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1",
            U::Having,
        ),
        ("SELECT a, row_number() OVER (ORDER BY a) FROM t", U::Window),
        ("SELECT sum(a) OVER () FROM t", U::Window),
        ("SELECT a FROM t WINDOW w AS (ORDER BY a)", U::Window),
        ("SELECT count(*) + 1 FROM t", U::ExpressionOverAggregate),
        (
            "SELECT coalesce(sum(a), 0) FROM t",
            U::ExpressionOverAggregate,
        ),
        ("SELECT count(*)::int FROM t", U::ExpressionOverAggregate),
        (
            "SELECT a FROM t GROUP BY a ORDER BY count(*) + 1",
            U::ExpressionOverAggregate,
        ),
        (
            "SELECT count(*) FILTER (WHERE a > 1) FROM t",
            U::AggregateClause,
        ),
        ("SELECT sum(a ORDER BY b) FROM t", U::AggregateClause),
        (
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t",
            U::UnsupportedAggregate("percentile_cont"),
        ),
        (
            "SELECT string_agg(a, ',') FROM t",
            U::UnsupportedAggregate("string_agg"),
        ),
        (
            "SELECT array_agg(a) FROM t",
            U::UnsupportedAggregate("array_agg"),
        ),
        (
            "SELECT bool_and(a) FROM t",
            U::UnsupportedAggregate("bool_and"),
        ),
        (
            "SELECT coalesce(string_agg(a, ','), '') FROM t",
            U::UnsupportedAggregate("string_agg"),
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY ROLLUP (a)",
            U::GroupingSets,
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY GROUPING SETS ((a), ())",
            U::GroupingSets,
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY CUBE (a)",
            U::GroupingSets,
        ),
        (
            "SELECT *, count(*) FROM t GROUP BY a",
            U::WildcardWithAggregates,
        ),
        (
            "SELECT a FROM t ORDER BY a FETCH FIRST 3 ROWS ONLY",
            U::Fetch,
        ),
        (
            "SELECT a FROM t ORDER BY a FETCH FIRST 3 ROWS WITH TIES",
            U::Fetch,
        ),
        ("SELECT a FROM t FOR UPDATE", U::Locking),
        ("SELECT a INTO u FROM t", U::Into),
        ("SELECT a FROM t LIMIT $1", U::NonLiteralLimit),
        ("SELECT a FROM t LIMIT 2 OFFSET $1", U::NonLiteralLimit),
        ("SELECT a FROM t LIMIT 1 + 1", U::NonLiteralLimit),
        ("SELECT a FROM t ORDER BY a USING <", U::OrderByUsing),
        ("SELECT a FROM t ORDER BY 'a'", U::ConstantKey),
        (
            "SELECT a FROM t ORDER BY 0",
            U::Position {
                clause: "ORDER BY",
                position: 0,
            },
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY 3",
            U::Position {
                clause: "GROUP BY",
                position: 3,
            },
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY 2",
            U::AggregateInGroupBy,
        ),
        (
            "SELECT a, count(*) FROM t GROUP BY a ORDER BY 3",
            U::Position {
                clause: "ORDER BY",
                position: 3,
            },
        ),
        (
            "SELECT lower(b) AS a, count(*) FROM t GROUP BY a",
            U::AmbiguousName("a".into()),
        ),
        ("SELECT 0x1F FROM t", U::GluedNumber),
        ("SELECT 0b101 FROM t", U::GluedNumber),
        ("SELECT 12abc FROM t", U::GluedNumber),
        ("SELECT 'héé',\n  0o17 FROM t", U::GluedNumber),
    ];
    for (sql, expected) in cases {
        let got = refusal(sql);
        assert_eq!(&got, expected, "{sql}");
        let message = got.to_string();
        assert!(message.len() > 40, "{sql}: message too short: {message}");
        assert_eq!(got.sqlstate(), "0A000");
    }
    // Messages name the construct, the reason and a way out.
    let message = refusal("SELECT DISTINCT a FROM t").to_string();
    assert!(message
        .starts_with("pgscale cannot merge DISTINCT across shards: it would return duplicates"));
    assert!(message.contains("GROUP BY") && message.contains("add the shard key to WHERE"));
    let message = refusal("SELECT string_agg(a, ',') FROM t").to_string();
    assert!(message.contains("not string_agg"), "{message}");
}

#[test]
fn group_by_an_alias_of_itself_is_fine() {
    let plan = plan_scatter("SELECT a AS a, count(*) FROM t GROUP BY a").expect("plannable");
    let Body::Aggregate(agg) = &plan.body else {
        panic!("aggregate")
    };
    assert_eq!(agg.roles, [Role::Key, Role::Count]);
}

#[test]
fn user_functions_are_not_aggregates() {
    // Qualified in another schema: a user function (it might be an aggregate, which the caller's
    // rules must keep away; see plan_scatter's contract).
    assert!(plan_scatter("SELECT myschema.count(a) FROM t")
        .expect("plannable")
        .is_concat());
    assert!(plan_scatter("SELECT lower(a), now() FROM t")
        .expect("plannable")
        .is_concat());
}

#[test]
fn ordinary_numbers_and_bit_strings_are_fine() {
    let sql = "SELECT X'1F', x'0a', 1e5, 2.5, .5, 7 FROM t WHERE b = 0.5 AND c = 'héé' LIMIT 10";
    assert!(plan_scatter(sql).is_ok());
}
