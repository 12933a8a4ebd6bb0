//! The merge fed row by row: it asks only for what the answer needs (the shard whose head went
//! out, none past the LIMIT), holds one head per shard when merging sorted rows, and counts the
//! groups it keeps.

use super::*;

const INT8: u32 = oid::INT8;

fn ints(values: &[i64]) -> Vec<Bytes> {
    values
        .iter()
        .map(|v| text_row(&[Some(&v.to_string())]))
        .collect()
}

fn start(sql: &str, columns: &[Column], shards: usize) -> StreamMerge {
    let plan = plan_scatter(sql).expect("plannable");
    let described: Vec<&[Column]> = (0..shards).map(|_| columns).collect();
    StreamMerge::new(&plan, &described, &MergeSettings::default()).expect("mergeable")
}

/// The values of the DataRows appended to `out`.
fn taken(out: &mut BytesMut) -> Vec<String> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let len = i32::from_be_bytes([out[at + 1], out[at + 2], out[at + 3], out[at + 4]]);
        let end = at + 1 + len as usize;
        for v in frame_values(&out[at..end]) {
            values.push(String::from_utf8(v.expect("not null")).expect("utf-8"));
        }
        at = end;
    }
    out.clear();
    values
}

#[test]
fn a_sorted_merge_asks_for_the_shard_whose_head_went_out() {
    let cols = [text("a", INT8)];
    let mut m = start("SELECT a FROM t ORDER BY a", &cols, 2);
    let mut out = BytesMut::new();
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Shard(0))));
    m.push(0, ints(&[1])[0].clone()).expect("push");
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Shard(1))));
    m.push(1, ints(&[2])[0].clone()).expect("push");
    // Both heads known: the least goes out and its shard is asked again; one head per shard held.
    assert!(m.held_bytes() > 0 && m.held_bytes() < 64);
    assert_eq!(m.next(&mut out), Ok(Step::Row));
    assert_eq!(taken(&mut out), ["1"]);
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Shard(0))));
    m.end(0).expect("end");
    assert_eq!(m.next(&mut out), Ok(Step::Row));
    assert_eq!(taken(&mut out), ["2"]);
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Shard(1))));
    m.end(1).expect("end");
    assert_eq!(m.next(&mut out), Ok(Step::Done));
    assert_eq!(m.held_bytes(), 0);
}

#[test]
fn limit_is_done_before_the_shards_end() {
    let cols = [text("a", INT8)];
    let mut m = start("SELECT a FROM t ORDER BY a LIMIT 2", &cols, 2);
    let mut out = BytesMut::new();
    let rows = [ints(&[1, 3, 5, 7]), ints(&[2, 4, 6])];
    let mut next = [0, 0];
    loop {
        match m.next(&mut out).expect("merges") {
            Step::Row => {}
            Step::Done => break,
            Step::Need(Want::Shard(i)) => {
                m.push(i, rows[i][next[i]].clone()).expect("push");
                next[i] += 1;
            }
            Step::Need(Want::Any) => panic!("a sorted merge names its shard"),
        }
    }
    assert_eq!(taken(&mut out), ["1", "2"]);
    // Only the rows the answer needed were read.
    assert_eq!(next, [2, 1]);
    assert_eq!(m.open_shards().count(), 2);
}

#[test]
fn concatenation_takes_rows_from_any_shard_and_keeps_none() {
    let cols = [text("a", INT8)];
    let mut m = start("SELECT a FROM t OFFSET 1", &cols, 2);
    let mut out = BytesMut::new();
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Any)));
    m.push(1, ints(&[5])[0].clone()).expect("push");
    // Skipped by OFFSET.
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Any)));
    m.push(0, ints(&[6])[0].clone()).expect("push");
    assert_eq!(m.next(&mut out), Ok(Step::Row));
    assert_eq!(m.held_bytes(), 0);
    m.end(0).expect("end");
    m.end(1).expect("end");
    assert_eq!(m.next(&mut out), Ok(Step::Done));
    assert_eq!(taken(&mut out), ["6"]);
    // A second row before the first went out is a driver bug, reported rather than lost.
    let mut m = start("SELECT a FROM t", &cols, 1);
    m.push(0, ints(&[1])[0].clone()).expect("push");
    assert!(m.push(0, ints(&[2])[0].clone()).is_err());
}

#[test]
fn aggregation_holds_its_groups_until_every_shard_ended() {
    let cols = [text("a", INT8), text("count", INT8)];
    let mut m = start("SELECT a, count(*) FROM t GROUP BY a ORDER BY a", &cols, 2);
    let mut out = BytesMut::new();
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Any)));
    m.push(0, text_row(&[Some("2"), Some("1")])).expect("push");
    let one_group = m.held_bytes();
    assert!(one_group > 0);
    m.push(1, text_row(&[Some("2"), Some("3")])).expect("push");
    assert_eq!(m.held_bytes(), one_group, "the same group");
    m.push(1, text_row(&[Some("1"), Some("1")])).expect("push");
    assert!(m.held_bytes() > one_group, "a new group");
    m.end(0).expect("end");
    assert_eq!(m.next(&mut out), Ok(Step::Need(Want::Any)));
    m.end(1).expect("end");
    assert_eq!(m.next(&mut out), Ok(Step::Row));
    assert_eq!(m.next(&mut out), Ok(Step::Row));
    assert_eq!(m.next(&mut out), Ok(Step::Done));
    assert_eq!(taken(&mut out), ["1", "1", "2", "4"]);
}
