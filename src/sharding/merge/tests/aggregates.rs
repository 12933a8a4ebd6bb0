//! merge with aggregates: count/sum/min/max/avg of every supported type in both formats, NULLs
//! and empty input, GROUP BY keys compared by value, ORDER BY/LIMIT/OFFSET after aggregation.

use super::super::numeric::Numeric;
use super::*;

const INT4: u32 = oid::INT4;
const INT8: u32 = oid::INT8;
const TEXT: u32 = oid::TEXT;
const NUMERIC: u32 = oid::NUMERIC;
const FLOAT8: u32 = oid::FLOAT8;

#[test]
fn count_sum_min_max_avg_without_group_by_in_text() {
    let sql = "SELECT count(*), count(a), sum(a), min(a), max(a), avg(a) FROM t";
    let cols = [
        text("count", INT8),
        text("count", INT8),
        text("sum", INT8),
        text("min", INT4),
        text("max", INT4),
        text("avg", INT8),
        text("__pgscale_0", INT8),
    ];
    let partial = |v: [Option<&str>; 7]| shard(&cols, vec![text_row(&v)]);
    let merged = run(
        sql,
        vec![
            partial([
                Some("3"),
                Some("2"),
                Some("3"),
                Some("1"),
                Some("2"),
                Some("3"),
                Some("2"),
            ]),
            // A shard with no rows: count 0, the rest NULL.
            partial([Some("0"), Some("0"), None, None, None, None, Some("0")]),
            partial([
                Some("2"),
                Some("1"),
                Some("-7"),
                Some("-7"),
                Some("-7"),
                Some("-7"),
                Some("1"),
            ]),
        ],
    )
    .expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[&[
            Some("5"),
            Some("3"),
            Some("-4"),
            Some("-7"),
            Some("2"),
            Some("-1.3333333333333333")
        ]])
    );
    // avg is numeric to the client, named as the query named it.
    assert_eq!(merged.columns[5].type_oid, NUMERIC);
    assert_eq!(merged.columns[5].type_len, -1);
    assert_eq!(merged.columns[5].name, b"avg");
    assert_eq!(merged.columns.len(), 6);
}

#[test]
fn aggregates_over_no_rows_are_zero_and_nulls() {
    let sql = "SELECT count(*), sum(a), min(a), avg(a) FROM t";
    let cols = [
        text("count", INT8),
        text("sum", INT8),
        text("min", INT4),
        text("avg", INT8),
        text("__pgscale_0", INT8),
    ];
    let empty = || {
        shard(
            &cols,
            vec![text_row(&[Some("0"), None, None, None, Some("0")])],
        )
    };
    let merged = run(sql, vec![empty(), empty()]).expect("merges");
    assert_eq!(texts(&merged), expect(&[&[Some("0"), None, None, None]]));
    // With GROUP BY, no rows is no groups.
    let cols = [text("a", INT4), text("count", INT8)];
    let merged = run(
        "SELECT a, count(*) FROM t GROUP BY a",
        vec![shard(&cols, vec![]), shard(&cols, vec![])],
    )
    .expect("merges");
    assert!(merged.rows.is_empty());
}

#[test]
fn aggregate_shards_must_send_one_row_each() {
    let cols = [text("count", INT8)];
    let err = run("SELECT count(*) FROM t", vec![shard(&cols, vec![])]).expect_err("no row");
    assert_eq!(err, MergeError::AggregateRows { shard: 0, rows: 0 });
    let err = run(
        "SELECT count(*), sum(a) FROM t",
        vec![shard(&cols, vec![text_row(&[Some("1")])])],
    )
    .expect_err("columns");
    assert_eq!(
        err,
        MergeError::ColumnCount {
            expected: 2,
            got: 1
        }
    );
}

#[test]
fn aggregates_in_binary_come_back_in_binary() {
    let sql = "SELECT count(*), sum(a), max(b), avg(a) FROM t";
    let cols = [
        binary("count", INT8),
        binary("sum", NUMERIC),
        binary("max", NUMERIC),
        binary("avg", NUMERIC),
        binary("__pgscale_0", INT8),
    ];
    let n = |s: &str| {
        Numeric::parse_text(s.as_bytes())
            .expect("numeric")
            .to_binary()
    };
    let partial = |count: i64, sum: &str, max: &str| {
        let c = count.to_be_bytes();
        let (s, m) = (n(sum), n(max));
        let values = [Some(&c[..]), Some(&s), Some(&m), Some(&s), Some(&c)];
        shard(&cols, vec![row(&values)])
    };
    let merged = run(sql, vec![partial(2, "10", "1.50"), partial(1, "5", "2.5")]).expect("merges");
    let values = frame_values(&merged.rows[0]);
    assert_eq!(values[0].as_deref(), Some(&3i64.to_be_bytes()[..]));
    assert_eq!(values[1], Some(n("15")));
    assert_eq!(values[2], Some(n("2.5")));
    assert_eq!(values[3], Some(n("5.0000000000000000")));
    assert_eq!(merged.columns[3].type_oid, NUMERIC);
    assert_eq!(merged.columns[3].format, Format::Binary);
}

#[test]
fn sum_types_follow_postgres() {
    // sum(int4) → int8, sum(int8)/sum(numeric) → numeric keeping the largest scale, sum(float8).
    let cols = [
        text("sum", INT8),
        text("sum", NUMERIC),
        text("sum", NUMERIC),
        text("sum", FLOAT8),
        text("sum", oid::FLOAT4),
    ];
    let partial = |v: [Option<&str>; 5]| shard(&cols, vec![text_row(&v)]);
    let merged = run(
        "SELECT sum(a), sum(b), sum(c), sum(d), sum(e) FROM t",
        vec![
            partial([
                Some("1"),
                Some("9223372036854775807"),
                Some("1.5"),
                Some("0.1"),
                Some("0.1"),
            ]),
            partial([Some("2"), Some("1"), Some("2.25"), Some("0.2"), Some("0.2")]),
            partial([None, None, None, None, None]),
        ],
    )
    .expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[&[
            Some("3"),
            Some("9223372036854775808"),
            Some("3.75"),
            Some("0.30000000000000004"),
            Some("0.3")
        ]])
    );
}

#[test]
fn sums_of_all_nulls_are_null_and_count_skips_nulls() {
    let cols = [
        text("a", INT4),
        text("count", INT8),
        text("sum", NUMERIC),
        text("avg", NUMERIC),
        text("__pgscale_0", INT8),
    ];
    let r = |v: [Option<&str>; 5]| text_row(&v);
    let merged = run(
        "SELECT a, count(b), sum(b), avg(b) FROM t GROUP BY a ORDER BY a",
        vec![
            shard(
                &cols,
                vec![r([Some("1"), Some("0"), None, None, Some("0")])],
            ),
            shard(
                &cols,
                vec![r([Some("1"), Some("0"), None, None, Some("0")])],
            ),
            shard(
                &cols,
                vec![r([
                    Some("2"),
                    Some("1"),
                    Some("4.0"),
                    Some("4.0"),
                    Some("1"),
                ])],
            ),
        ],
    )
    .expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[
            &[Some("1"), Some("0"), None, None],
            &[
                Some("2"),
                Some("1"),
                Some("4.0"),
                Some("4.0000000000000000")
            ],
        ])
    );
}

#[test]
fn sum_overflow_is_an_error() {
    let cols = [text("sum", INT8)];
    let err = run(
        "SELECT sum(a) FROM t",
        vec![
            shard(&cols, vec![text_row(&[Some("9223372036854775807")])]),
            shard(&cols, vec![text_row(&[Some("1")])]),
        ],
    )
    .expect_err("overflow");
    assert_eq!(err, MergeError::OutOfRange("bigint"));
    assert_eq!(err.sqlstate(), "22003");
    let cols = [text("sum", FLOAT8)];
    let err = run(
        "SELECT sum(a) FROM t",
        vec![
            shard(&cols, vec![text_row(&[Some("1e+308")])]),
            shard(&cols, vec![text_row(&[Some("1e+308")])]),
        ],
    )
    .expect_err("overflow");
    assert_eq!(err, MergeError::OutOfRange("double precision"));
}

#[test]
fn avg_of_floats_and_reals() {
    let cols = [text("avg", FLOAT8), text("__pgscale_0", INT8)];
    let merged = run(
        "SELECT avg(x) FROM t",
        vec![
            shard(&cols, vec![text_row(&[Some("1.5"), Some("2")])]),
            shard(&cols, vec![text_row(&[Some("1.5"), Some("1")])]),
        ],
    )
    .expect("merges");
    assert_eq!(texts(&merged), expect(&[&[Some("1")]]));
    assert_eq!(merged.columns[0].type_oid, FLOAT8);
    let cols = [text("avg", oid::FLOAT4), text("__pgscale_0", INT8)];
    let err = run(
        "SELECT avg(x) FROM t",
        vec![shard(&cols, vec![text_row(&[Some("1.5"), Some("2")])])],
    )
    .expect_err("real");
    assert_eq!(err, MergeError::AvgOfReal);
    // Text floats need the default extra_float_digits.
    let cols = [text("sum", FLOAT8)];
    let plan = plan_scatter("SELECT sum(x) FROM t").expect("plannable");
    let settings = MergeSettings {
        extra_float_digits: 0,
        ..MergeSettings::default()
    };
    let shards = vec![shard(&cols, vec![text_row(&[Some("1")])])];
    let err = merge(&plan, shards, &settings).expect_err("extra_float_digits");
    assert_eq!(err, MergeError::FloatDigits);
}

#[test]
fn group_keys_compare_by_value() {
    // numeric 1.0 = 1.00, float -0 = 0, NULL is a group, char(n) ignores trailing blanks.
    let cols = [
        text("k", NUMERIC),
        text("f", FLOAT8),
        text("c", oid::BPCHAR),
        text("count", INT8),
    ];
    let r = |k: Option<&str>, f: &str, c: &str, n: &str| text_row(&[k, Some(f), Some(c), Some(n)]);
    let merged = run(
        "SELECT k, f, c, count(*) FROM t GROUP BY k, f, c ORDER BY 4",
        vec![
            shard(
                &cols,
                vec![r(Some("1.0"), "0", "a ", "1"), r(None, "1", "b", "2")],
            ),
            shard(
                &cols,
                vec![r(Some("1.00"), "-0", "a", "10"), r(None, "1", "b", "20")],
            ),
        ],
    )
    .expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[
            &[Some("1.0"), Some("0"), Some("a "), Some("11")],
            &[None, Some("1"), Some("b"), Some("22")],
        ])
    );
    let cols = [text("k", 1186), text("count", INT8)];
    let err = run(
        "SELECT k, count(*) FROM t GROUP BY k",
        vec![shard(&cols, vec![text_row(&[Some("1 day"), Some("1")])])],
    )
    .expect_err("interval");
    assert_eq!(
        err,
        MergeError::UnsupportedType {
            what: "group by",
            type_oid: 1186
        }
    );
}

#[test]
fn group_by_order_by_aggregate_then_limit_and_offset() {
    let sql = "SELECT a, count(*) FROM t GROUP BY a ORDER BY count(*) DESC, a LIMIT 2 OFFSET 1";
    let cols = [text("a", TEXT), text("count", INT8)];
    let r = |a: &str, n: &str| text_row(&[Some(a), Some(n)]);
    let shards = || {
        vec![
            shard(&cols, vec![r("x", "5"), r("y", "1"), r("z", "2")]),
            shard(&cols, vec![r("y", "6"), r("w", "3")]),
            shard(&cols, vec![r("z", "2"), r("w", "1")]),
        ]
    };
    // Text key `a` in ORDER BY under a linguistic collation: refused.
    assert_eq!(
        run(sql, shards()).expect_err("collated"),
        MergeError::CollatedText
    );
    // y 7, x 5, w 4, z 4
    let merged = run_c(sql, shards()).expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[&[Some("x"), Some("5")], &[Some("w"), Some("4")]])
    );
}

#[test]
fn order_by_hidden_aggregates_and_keys() {
    // Shards return sum(b), then hidden a, sum(c), count(c).
    let cols = [
        text("sum", INT8),
        text("__pgscale_0", INT4),
        text("__pgscale_1", INT8),
        text("__pgscale_2", INT8),
    ];
    let r =
        |s: &str, a: &str, cs: &str, cc: &str| text_row(&[Some(s), Some(a), Some(cs), Some(cc)]);
    let merged = run(
        "SELECT sum(b) FROM t GROUP BY a ORDER BY a DESC, avg(c)",
        vec![
            shard(&cols, vec![r("1", "1", "2", "1"), r("10", "2", "0", "1")]),
            shard(&cols, vec![r("2", "1", "2", "1"), r("20", "3", "4", "2")]),
        ],
    )
    .expect("merges");
    assert_eq!(merged.columns.len(), 1);
    assert_eq!(column(&texts(&merged), 0), some(&["20", "10", "3"]));
}

#[test]
fn min_max_pick_the_shard_value_as_is() {
    let cols = [text("min", NUMERIC), text("max", TEXT)];
    let shards = || {
        vec![
            shard(&cols, vec![text_row(&[Some("1.50"), Some("b")])]),
            shard(&cols, vec![text_row(&[Some("-2.000"), Some("a")])]),
            shard(&cols, vec![text_row(&[None, None])]),
        ]
    };
    let err = run("SELECT min(x), max(y) FROM t", shards()).expect_err("collated");
    assert_eq!(err, MergeError::CollatedText);
    let merged = run_c("SELECT min(x), max(y) FROM t", shards()).expect("merges");
    assert_eq!(texts(&merged), expect(&[&[Some("-2.000"), Some("b")]]));
    let merged = run("SELECT min(x), max(y COLLATE \"C\") FROM t", shards()).expect("merges");
    assert_eq!(texts(&merged), expect(&[&[Some("-2.000"), Some("b")]]));
}
