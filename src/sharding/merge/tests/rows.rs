//! merge without aggregates: concatenation and the k-way merge of sorted shards (every sort key
//! type in both formats, NULLs, LIMIT/OFFSET, hidden columns), wire parsing, and the errors.

use super::super::numeric::Numeric;
use super::*;

const INT4: u32 = oid::INT4;
const INT8: u32 = oid::INT8;
const TEXT: u32 = oid::TEXT;
const NUMERIC: u32 = oid::NUMERIC;

/// Text rows of one column.
fn ints(values: &[Option<i64>]) -> Vec<Bytes> {
    values
        .iter()
        .map(|v| text_row(&[v.map(|v| v.to_string()).as_deref()]))
        .collect()
}

#[test]
fn concatenation_keeps_shard_order_and_columns() {
    let cols = [text("a", INT4), text("b", TEXT)];
    let merged = run(
        "SELECT a, b FROM t",
        vec![
            shard(&cols, vec![text_row(&[Some("1"), Some("x")])]),
            shard(&cols, vec![]),
            shard(&cols, vec![text_row(&[Some("2"), None])]),
        ],
    )
    .expect("merges");
    assert_eq!(merged.columns, cols);
    assert_eq!(
        texts(&merged),
        expect(&[&[Some("1"), Some("x")], &[Some("2"), None]])
    );
}

#[test]
fn limit_offset_without_order_takes_any_rows() {
    let cols = [text("a", INT4)];
    let merged = run(
        "SELECT a FROM t LIMIT 2 OFFSET 1",
        vec![
            shard(&cols, ints(&[Some(1), Some(2), Some(3)])),
            shard(&cols, ints(&[Some(4), Some(5), Some(6)])),
        ],
    )
    .expect("merges");
    assert_eq!(texts(&merged).len(), 2);
}

#[test]
fn order_limit_offset_merges_sorted_shards() {
    let cols = [text("a", INT4)];
    let shards = || {
        vec![
            shard(&cols, ints(&[Some(1), Some(4), Some(9)])),
            shard(&cols, ints(&[Some(2), Some(3), Some(10)])),
            shard(&cols, ints(&[Some(-5), Some(7)])),
        ]
    };
    let merged = run("SELECT a FROM t ORDER BY a LIMIT 4 OFFSET 2", shards()).expect("merges");
    assert_eq!(column(&texts(&merged), 0), some(&["2", "3", "4", "7"]));
    let merged = run("SELECT a FROM t ORDER BY a OFFSET 6", shards()).expect("merges");
    assert_eq!(column(&texts(&merged), 0), some(&["9", "10"]));
    let merged = run("SELECT a FROM t ORDER BY a LIMIT 0", shards()).expect("merges");
    assert!(merged.rows.is_empty());
}

#[test]
fn descending_and_multi_key_order() {
    let cols = [text("a", INT4), text("b", INT4)];
    let rows = |r: &[(i64, i64)]| {
        r.iter()
            .map(|(a, b)| text_row(&[Some(&a.to_string()), Some(&b.to_string())]))
            .collect()
    };
    let merged = run(
        "SELECT a, b FROM t ORDER BY a DESC, b",
        vec![
            shard(&cols, rows(&[(3, 1), (2, 5), (1, 1)])),
            shard(&cols, rows(&[(3, 0), (2, 2)])),
        ],
    )
    .expect("merges");
    assert_eq!(
        texts(&merged),
        expect(&[
            &[Some("3"), Some("0")],
            &[Some("3"), Some("1")],
            &[Some("2"), Some("2")],
            &[Some("2"), Some("5")],
            &[Some("1"), Some("1")],
        ])
    );
}

#[test]
fn nulls_sort_last_ascending_and_first_descending() {
    let cols = [text("a", INT4)];
    let run_order = |order: &str, a: &[Option<i64>], b: &[Option<i64>]| {
        let sql = format!("SELECT a FROM t ORDER BY a {order}");
        let merged = run(&sql, vec![shard(&cols, ints(a)), shard(&cols, ints(b))]).expect("merges");
        column(&texts(&merged), 0)
    };
    let n = None;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        run_order("", &[Some(1), None], &[Some(2), None]),
        [s("1"), s("2"), n.clone(), n.clone()]
    );
    assert_eq!(
        run_order("DESC", &[None, Some(2)], &[None, Some(1)]),
        [n.clone(), n.clone(), s("2"), s("1")]
    );
    assert_eq!(
        run_order("NULLS FIRST", &[None, Some(1)], &[Some(2)]),
        [n.clone(), s("1"), s("2")]
    );
    assert_eq!(
        run_order("DESC NULLS LAST", &[Some(2), None], &[Some(3)]),
        [s("3"), s("2"), n]
    );
}

#[test]
fn hidden_sort_columns_are_cut_off() {
    // Shards return `a` and the hidden `b` sort key.
    let cols = [text("a", TEXT), text("__pgscale_0", INT4)];
    let merged = run(
        "SELECT a FROM t ORDER BY b DESC LIMIT 2",
        vec![
            shard(
                &cols,
                vec![
                    text_row(&[Some("x"), Some("9")]),
                    text_row(&[Some("y"), Some("1")]),
                ],
            ),
            shard(&cols, vec![text_row(&[Some("z"), Some("5")])]),
        ],
    )
    .expect("merges");
    assert_eq!(merged.columns, [text("a", TEXT)]);
    assert_eq!(texts(&merged), expect(&[&[Some("x")], &[Some("z")]]));
}

#[test]
fn wildcard_rows_find_hidden_columns_from_the_end() {
    // SELECT * expanded to three columns on the shards, plus one hidden sort key.
    let cols = [
        text("id", INT4),
        text("name", TEXT),
        text("v", INT4),
        text("__pgscale_0", INT4),
    ];
    let r = |id: &str, key: &str| text_row(&[Some(id), Some("n"), Some("0"), Some(key)]);
    let merged = run(
        "SELECT * FROM t ORDER BY v + 1",
        vec![
            shard(&cols, vec![r("1", "1"), r("3", "3")]),
            shard(&cols, vec![r("2", "2")]),
        ],
    )
    .expect("merges");
    assert_eq!(merged.columns.len(), 3);
    assert_eq!(column(&texts(&merged), 0), some(&["1", "2", "3"]));
}

#[test]
fn text_order_needs_c_collation() {
    let cols = [text("name", TEXT)];
    let shards = || {
        vec![
            shard(&cols, vec![text_row(&[Some("B")]), text_row(&[Some("a")])]),
            shard(&cols, vec![text_row(&[Some("C")])]),
        ]
    };
    let err = run("SELECT name FROM t ORDER BY name", shards()).expect_err("collated");
    assert_eq!(err, MergeError::CollatedText);
    assert!(err.to_string().contains("COLLATE \"C\""));
    let merged = run_c("SELECT name FROM t ORDER BY name", shards()).expect("bytewise");
    assert_eq!(column(&texts(&merged), 0), some(&["B", "C", "a"]));
    // The shards return the COLLATE "C" key as a hidden column.
    let cols = [text("name", TEXT), text("__pgscale_0", TEXT)];
    let r = |v: &str| text_row(&[Some(v), Some(v)]);
    let merged = run(
        "SELECT name FROM t ORDER BY name COLLATE \"C\"",
        vec![
            shard(&cols, vec![r("B"), r("a")]),
            shard(&cols, vec![r("C")]),
        ],
    )
    .expect("collate C");
    assert_eq!(
        texts(&merged),
        expect(&[&[Some("B")], &[Some("C")], &[Some("a")]])
    );
}

#[test]
fn a_shard_out_of_order_fails_the_merge() {
    let cols = [text("name", TEXT)];
    // Sorted by a linguistic collation (a < B), which pgscale was told is C.
    let err = run_c(
        "SELECT name FROM t ORDER BY name",
        vec![
            shard(&cols, vec![text_row(&[Some("a")]), text_row(&[Some("B")])]),
            shard(&cols, vec![text_row(&[Some("c")])]),
        ],
    )
    .expect_err("unsorted");
    assert_eq!(err, MergeError::Unsorted { shard: 0 });
}

#[test]
fn shards_must_agree_on_columns() {
    let err = run(
        "SELECT a FROM t",
        vec![
            shard(&[text("a", INT4)], vec![]),
            shard(&[binary("a", INT4)], vec![]),
        ],
    )
    .expect_err("differ");
    assert_eq!(err, MergeError::ColumnsDiffer { shard: 1 });
    assert_eq!(
        run("SELECT a FROM t", vec![]).expect_err("none"),
        MergeError::NoShards
    );
}

/// The values of one type, ascending, as a shard would send them.
fn ascending(strings: &[&str]) -> Vec<Vec<u8>> {
    strings.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn sort_keys_of_every_type_in_both_formats() {
    use oid::*;
    let be = |v: i64, n: usize| v.to_be_bytes()[8 - n..].to_vec();
    let floats = [f64::NEG_INFINITY, -1.5, 0.0, 2.0, f64::INFINITY, f64::NAN];
    let numerics = ["-12345.678", "0.0001", "1", "10000", "NaN"];
    let cases: Vec<(u32, Format, Vec<Vec<u8>>)> = vec![
        (INT2, Format::Binary, vec![be(-3, 2), be(0, 2), be(7, 2)]),
        (
            INT4,
            Format::Binary,
            vec![be(-30000, 4), be(1, 4), be(70000, 4)],
        ),
        (
            INT8,
            Format::Binary,
            vec![be(i64::MIN, 8), be(0, 8), be(i64::MAX, 8)],
        ),
        (INT8, Format::Text, ascending(&["-10", "9", "10"])),
        (
            FLOAT8,
            Format::Binary,
            floats.iter().map(|f| f.to_be_bytes().to_vec()).collect(),
        ),
        (
            FLOAT4,
            Format::Text,
            ascending(&["-Infinity", "-1e+10", "-2", "1.5", "1e+06", "NaN"]),
        ),
        (
            NUMERIC,
            Format::Text,
            ascending(&[
                "-Infinity",
                "-1.50",
                "0.001",
                "2",
                "10.0",
                "Infinity",
                "NaN",
            ]),
        ),
        (
            NUMERIC,
            Format::Binary,
            numerics
                .iter()
                .map(|s| {
                    Numeric::parse_text(s.as_bytes())
                        .expect("numeric")
                        .to_binary()
                })
                .collect(),
        ),
        (BOOL, Format::Text, ascending(&["f", "t"])),
        (BOOL, Format::Binary, vec![vec![0], vec![1]]),
        (
            DATE,
            Format::Binary,
            vec![be(-800_000, 4), be(0, 4), be(9000, 4)],
        ),
        (
            DATE,
            Format::Text,
            ascending(&["0044-03-15 BC", "1999-12-31", "10000-01-01", "infinity"]),
        ),
        (
            TIMESTAMPTZ,
            Format::Text,
            ascending(&[
                "2024-10-27 02:30:00+02",
                "2024-10-27 02:10:00+01",
                "2024-10-27 02:05:00+00",
            ]),
        ),
        (TIMESTAMP, Format::Binary, vec![be(-1, 8), be(5, 8)]),
        (
            UUID,
            Format::Text,
            ascending(&[
                "0a000000-0000-0000-0000-000000000000",
                "a0000000-0000-0000-0000-000000000000",
            ]),
        ),
        (
            BYTEA,
            Format::Text,
            ascending(&["\\x00", "\\x0001", "\\xff"]),
        ),
        (NAME, Format::Text, ascending(&["B", "a"])),
    ];
    for (type_oid, format, sorted) in cases {
        let cols = [col("k", type_oid, format)];
        // Deal the values to two shards alternately, then merge ascending and descending.
        let deal = |parity: usize, desc: bool| {
            let mut rows: Vec<Bytes> = (sorted.iter().enumerate())
                .filter(|(i, _)| i % 2 == parity)
                .map(|(_, v)| row(&[Some(v)]))
                .collect();
            if desc {
                rows.reverse();
            }
            shard(&cols, rows)
        };
        for desc in [false, true] {
            let sql = match desc {
                false => "SELECT k FROM t ORDER BY k",
                true => "SELECT k FROM t ORDER BY k DESC",
            };
            let merged = run(sql, vec![deal(0, desc), deal(1, desc)])
                .unwrap_or_else(|e| panic!("{type_oid} {format:?}: {e}"));
            let got: Vec<Vec<u8>> = merged
                .rows
                .iter()
                .map(|f| frame_values(f)[0].clone().expect("not null"))
                .collect();
            let mut want = sorted.clone();
            if desc {
                want.reverse();
            }
            assert_eq!(got, want, "{type_oid} {format:?} desc={desc}");
        }
    }
}

#[test]
fn unknown_types_and_styles_are_refused_as_sort_keys() {
    let one = |c: Column, v: &str| vec![shard(&[c], vec![text_row(&[Some(v)])])];
    let sql = "SELECT k FROM t ORDER BY k";
    let err = run(sql, one(text("k", 1186), "1 day")).expect_err("interval");
    assert_eq!(
        err,
        MergeError::UnsupportedType {
            what: "sort",
            type_oid: 1186
        }
    );
    let err = run(sql, one(text("k", oid::DATE), "01/05/2024")).expect_err("DateStyle");
    assert_eq!(err, MergeError::DateStyle);
    let err = run(sql, one(text("k", oid::BYTEA), "abc")).expect_err("escape");
    assert_eq!(err, MergeError::ByteaOutput);
    let err =
        run(sql, one(text("k", oid::DATE), "99999999999999999999-01-01")).expect_err("absurd year");
    assert_eq!(err, MergeError::DateStyle);
}

#[test]
fn row_descriptions_round_trip() {
    let cols = vec![
        Column {
            name: b"id".to_vec(),
            table_oid: 16384,
            attnum: 1,
            type_oid: INT8,
            type_len: 8,
            type_mod: -1,
            format: Format::Binary,
        },
        text("avg", NUMERIC),
    ];
    let frame = row_description_frame(&cols);
    assert_eq!(frame[0], b'T');
    assert_eq!(
        i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
        frame.len() - 1
    );
    assert_eq!(parse_row_description(&frame[5..]).expect("parses"), cols);
    assert_eq!(
        parse_row_description(&frame[5..frame.len() - 1]),
        Err(MergeError::Malformed("RowDescription"))
    );
    let mut bad_format = frame[5..].to_vec();
    let last = bad_format.len() - 1;
    bad_format[last] = 7;
    assert_eq!(
        parse_row_description(&bad_format),
        Err(MergeError::UnknownFormat(7))
    );
    assert_eq!(command_tag(42), "SELECT 42");
}

#[test]
fn malformed_rows_are_errors_not_panics() {
    let cols = [text("a", INT4)];
    for body in [
        &b""[..],
        &b"\x00\x01"[..],
        &b"\x00\x01\x00\x00\x00\x05ab"[..],
        &b"\xff\xff"[..],
    ] {
        let shards = vec![
            shard(&cols, vec![Bytes::copy_from_slice(body)]),
            shard(&cols, vec![]),
        ];
        let err = run("SELECT a FROM t ORDER BY a", shards).expect_err("malformed");
        assert!(matches!(err, MergeError::Malformed(_)), "{err:?}");
    }
    let shards = vec![shard(&cols, vec![text_row(&[Some("x")])])];
    let err = run("SELECT a FROM t ORDER BY a", shards).expect_err("not an int");
    assert!(matches!(err, MergeError::Malformed(_)), "{err:?}");
}
