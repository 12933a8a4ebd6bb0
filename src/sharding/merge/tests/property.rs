//! Random integer rows dealt randomly to 3 shards: each shard's answer is computed as Postgres
//! would compute it on its part, merged, and compared with the answer computed over all rows in
//! plain Rust (avg by an independent long division at `select_div_scale`'s scale).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

type Row = (Option<i32>, Option<i32>);

const SHARDS: usize = 3;
const CASES: u64 = 300;

fn random_rows(rng: &mut StdRng) -> Vec<Row> {
    let n = rng.gen_range(0..40);
    let maybe = |rng: &mut StdRng, v: i32| (rng.gen_range(0..8) != 0).then_some(v);
    (0..n)
        .map(|_| {
            let a = rng.gen_range(-2..4);
            let b = rng.gen_range(-1000..1000);
            (maybe(rng, a), maybe(rng, b))
        })
        .collect()
}

fn deal(rng: &mut StdRng, rows: &[Row]) -> Vec<Vec<Row>> {
    let mut shards = vec![Vec::new(); SHARDS];
    for r in rows {
        shards[rng.gen_range(0..SHARDS)].push(*r);
    }
    shards
}

/// A value in `format`: int4 or int8.
fn int(v: Option<i64>, width: usize, format: Format) -> Option<Vec<u8>> {
    v.map(|v| match format {
        Format::Text => v.to_string().into_bytes(),
        Format::Binary => v.to_be_bytes()[8 - width..].to_vec(),
    })
}

fn body(values: &[Option<Vec<u8>>]) -> Bytes {
    let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    row(&refs)
}

/// Decodes an int4/int8/numeric result value to text.
fn to_text(v: &Option<Vec<u8>>, c: &Column) -> Option<String> {
    let v = v.as_ref()?;
    Some(match (c.format, c.type_oid) {
        (Format::Text, _) => String::from_utf8(v.clone()).expect("utf-8"),
        (Format::Binary, oid::INT4) => i32::from_be_bytes(v[..].try_into().expect("4")).to_string(),
        (Format::Binary, oid::INT8) => i64::from_be_bytes(v[..].try_into().expect("8")).to_string(),
        (Format::Binary, _) => super::super::numeric::Numeric::decode_binary(v)
            .expect("numeric")
            .to_text(),
    })
}

fn merged_texts(merged: &Merged) -> Vec<Vec<Option<String>>> {
    merged
        .rows
        .iter()
        .map(|f| {
            let values = frame_values(f);
            values
                .iter()
                .zip(&merged.columns)
                .map(|(v, c)| to_text(v, c))
                .collect()
        })
        .collect()
}

/// avg of integers as Postgres prints it: sum / count at select_div_scale's scale, rounded half
/// away from zero. Written without the numeric module, from the definition.
fn expected_avg(sum: i64, count: i64) -> String {
    let first = |v: i128| -> (i64, i128) {
        let (mut weight, mut v) = (0, v.abs());
        if v == 0 {
            return (0, 0);
        }
        while v >= 10_000 {
            v /= 10_000;
            weight += 1;
        }
        (weight, v)
    };
    let (w1, d1) = first(sum.into());
    let (w2, d2) = first(count.into());
    let qweight = w1 - w2 - i64::from(d1 <= d2);
    let rscale = (16 - 4 * qweight).clamp(0, 1000) as u32;
    let scaled = i128::from(sum) * 10i128.pow(rscale);
    let (q, r) = (scaled / i128::from(count), scaled % i128::from(count));
    let q = if 2 * r.abs() >= i128::from(count) {
        q + scaled.signum()
    } else {
        q
    };
    let digits = format!("{:0>width$}", q.abs(), width = rscale as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - rscale as usize);
    let sign = if q < 0 { "-" } else { "" };
    match rscale {
        0 => format!("{sign}{int}"),
        _ => format!("{sign}{int}.{frac}"),
    }
}

/// count, count(b), sum(b), min(b), max(b) of some rows.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    rows: i64,
    count: i64,
    sum: Option<i64>,
    min: Option<i32>,
    max: Option<i32>,
}

impl Stats {
    fn of<'a>(rows: impl Iterator<Item = &'a Row>) -> Stats {
        let mut s = Stats::default();
        for (_, b) in rows {
            s.rows += 1;
            if let Some(b) = *b {
                s.count += 1;
                s.sum = Some(s.sum.unwrap_or(0) + i64::from(b));
                s.min = Some(s.min.map_or(b, |m| m.min(b)));
                s.max = Some(s.max.map_or(b, |m| m.max(b)));
            }
        }
        s
    }

    /// The row a shard sends for `a, sum(b), count(b), count(*), min(b), max(b), avg(b)`
    /// rewritten as `…, sum(b) AS avg, count(b) AS __pgscale_0`.
    fn shard_row(&self, a: Option<i32>, format: Format) -> Bytes {
        body(&[
            int(a.map(i64::from), 4, format),
            int(self.sum, 8, format),
            int(Some(self.count), 8, format),
            int(Some(self.rows), 8, format),
            int(self.min.map(i64::from), 4, format),
            int(self.max.map(i64::from), 4, format),
            int(self.sum, 8, format),
            int(Some(self.count), 8, format),
        ])
    }

    fn expected(&self, a: Option<i32>) -> Vec<Option<String>> {
        vec![
            a.map(|a| a.to_string()),
            self.sum.map(|s| s.to_string()),
            Some(self.count.to_string()),
            Some(self.rows.to_string()),
            self.min.map(|m| m.to_string()),
            self.max.map(|m| m.to_string()),
            self.sum.map(|s| expected_avg(s, self.count)),
        ]
    }
}

fn group_columns(format: Format) -> Vec<Column> {
    let c = |name: &str, t: u32| col(name, t, format);
    vec![
        c("a", oid::INT4),
        c("sum", oid::INT8),
        c("count", oid::INT8),
        c("count", oid::INT8),
        c("min", oid::INT4),
        c("max", oid::INT4),
        c("avg", oid::INT8),
        c("__pgscale_0", oid::INT8),
    ]
}

fn groups<'a>(rows: impl Iterator<Item = &'a Row>) -> BTreeMap<Option<i32>, Vec<Row>> {
    let mut groups: BTreeMap<Option<i32>, Vec<Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.0).or_default().push(*r);
    }
    groups
}

/// `ORDER BY a` with NULLS LAST, then OFFSET and LIMIT.
fn a_order(a: &Option<i32>) -> (bool, i32) {
    (a.is_none(), a.unwrap_or(0))
}

fn window<T>(rows: Vec<T>, offset: usize, limit: Option<usize>) -> Vec<T> {
    rows.into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

fn limit_clause(rng: &mut StdRng) -> (String, usize, Option<usize>) {
    let offset = rng.gen_range(0..4);
    let limit = (rng.gen_range(0..3) != 0).then(|| rng.gen_range(0..8));
    let mut clause = String::new();
    if let Some(l) = limit {
        clause.push_str(&format!(" LIMIT {l}"));
    }
    if offset > 0 {
        clause.push_str(&format!(" OFFSET {offset}"));
    }
    (clause, offset, limit)
}

fn format_of(rng: &mut StdRng) -> Format {
    match rng.gen_bool(0.5) {
        true => Format::Text,
        false => Format::Binary,
    }
}

#[test]
fn group_by_aggregates_match_one_database() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..CASES {
        let rows = random_rows(&mut rng);
        let format = format_of(&mut rng);
        let (clause, offset, limit) = limit_clause(&mut rng);
        let sql = format!(
            "SELECT a, sum(b), count(b), count(*), min(b), max(b), avg(b) FROM t GROUP BY a \
             ORDER BY a{clause}"
        );
        let columns = group_columns(format);
        let shards = deal(&mut rng, &rows)
            .iter()
            .map(|part| {
                let mut out: Vec<Bytes> = groups(part.iter())
                    .iter()
                    .map(|(a, g)| Stats::of(g.iter()).shard_row(*a, format))
                    .collect();
                out.shuffle(&mut rng);
                shard(&columns, out)
            })
            .collect();
        let merged = run(&sql, shards).expect("merges");
        let mut all: Vec<_> = groups(rows.iter()).into_iter().collect();
        all.sort_by_key(|(a, _)| a_order(a));
        let expected: Vec<_> = all
            .iter()
            .map(|(a, g)| Stats::of(g.iter()).expected(*a))
            .collect();
        assert_eq!(
            merged_texts(&merged),
            window(expected, offset, limit),
            "{sql} over {rows:?}"
        );
        assert_eq!(merged.columns.len(), 7);
    }
}

#[test]
fn aggregates_without_group_by_match_one_database() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..CASES {
        let rows = random_rows(&mut rng);
        let format = format_of(&mut rng);
        let sql = "SELECT a, sum(b), count(b), count(*), min(b), max(b), avg(b) FROM t";
        // `a` is carried: a constant would be; here every shard sends 1 as `a`.
        let columns = group_columns(format);
        let shards = deal(&mut rng, &rows)
            .iter()
            .map(|part| {
                shard(
                    &columns,
                    vec![Stats::of(part.iter()).shard_row(Some(1), format)],
                )
            })
            .collect();
        let merged = run(sql, shards).expect("merges");
        let expected = vec![Stats::of(rows.iter()).expected(Some(1))];
        assert_eq!(merged_texts(&merged), expected, "{rows:?}");
    }
}

#[test]
fn ordered_limit_offset_match_one_database() {
    let mut rng = StdRng::seed_from_u64(42);
    // Postgres' order for `ORDER BY b DESC, a`: b descending NULLs first, a ascending NULLs last.
    let key = |r: &Row| {
        (
            std::cmp::Reverse((r.1.is_none(), r.1.unwrap_or(0))),
            (r.0.is_none(), r.0.unwrap_or(0)),
        )
    };
    for _ in 0..CASES {
        let rows = random_rows(&mut rng);
        let format = format_of(&mut rng);
        let (clause, offset, limit) = limit_clause(&mut rng);
        let sql = format!("SELECT a, b FROM t ORDER BY b DESC, a{clause}");
        let columns = [col("a", oid::INT4, format), col("b", oid::INT4, format)];
        let plan = plan_scatter(&sql).expect("plannable");
        let shard_limit = plan
            .shard_sql()
            .rsplit_once("LIMIT ")
            .map(|(_, n)| n.parse::<usize>().expect("n"));
        assert_eq!(shard_limit, limit.map(|l| l + offset));
        let shards = deal(&mut rng, &rows)
            .into_iter()
            .map(|mut part| {
                part.sort_by_key(key);
                part.truncate(shard_limit.unwrap_or(usize::MAX));
                let bodies = part
                    .iter()
                    .map(|(a, b)| {
                        body(&[
                            int(a.map(i64::from), 4, format),
                            int(b.map(i64::from), 4, format),
                        ])
                    })
                    .collect();
                shard(&columns, bodies)
            })
            .collect();
        let merged = merge(&plan, shards, &MergeSettings::default()).expect("merges");
        let mut all = rows.clone();
        all.sort_by_key(key);
        let expected: Vec<Vec<Option<String>>> = window(all, offset, limit)
            .iter()
            .map(|(a, b)| vec![a.map(|v| v.to_string()), b.map(|v| v.to_string())])
            .collect();
        assert_eq!(merged_texts(&merged), expected, "{sql} over {rows:?}");
    }
}

#[test]
fn expected_avg_agrees_with_postgres_examples() {
    assert_eq!(expected_avg(3, 2), "1.5000000000000000");
    assert_eq!(expected_avg(30, 2), "15.0000000000000000");
    assert_eq!(expected_avg(0, 2), "0.00000000000000000000");
    assert_eq!(expected_avg(100002, 2), "50001.000000000000");
    assert_eq!(expected_avg(-2, 3), "-0.66666666666666666667");
}
