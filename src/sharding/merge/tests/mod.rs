//! Tests of planning and merging, on hand-built wire rows; no server. Expected values were
//! checked against Postgres 15 (`SELECT avg(x) …`, `numeric_send(…)`, float output).

mod aggregates;
mod plan;
mod property;
mod rows;
mod stream;
mod values;

use bytes::{BufMut, Bytes, BytesMut};

use super::values::oid;
use super::*;

/// A result column of `type_oid` in `format`, as a computed column (no table).
fn col(name: &str, type_oid: u32, format: Format) -> Column {
    let type_len = match type_oid {
        oid::BOOL => 1,
        oid::INT2 => 2,
        oid::INT4 | oid::FLOAT4 | oid::DATE => 4,
        oid::INT8 | oid::FLOAT8 | oid::TIMESTAMP | oid::TIMESTAMPTZ => 8,
        oid::UUID => 16,
        _ => -1,
    };
    Column {
        name: name.as_bytes().to_vec(),
        table_oid: 0,
        attnum: 0,
        type_oid,
        type_len,
        type_mod: -1,
        format,
    }
}

fn text(name: &str, type_oid: u32) -> Column {
    col(name, type_oid, Format::Text)
}

fn binary(name: &str, type_oid: u32) -> Column {
    col(name, type_oid, Format::Binary)
}

/// A DataRow body.
fn row(values: &[Option<&[u8]>]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => body.put_i32(-1),
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v);
            }
        }
    }
    body.freeze()
}

/// A DataRow body of text values (`None` = NULL).
fn text_row(values: &[Option<&str>]) -> Bytes {
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
    row(&values)
}

fn shard(columns: &[Column], rows: Vec<Bytes>) -> ShardRows {
    ShardRows {
        columns: columns.to_vec(),
        rows,
    }
}

/// A DataRow frame's values.
fn frame_values(frame: &[u8]) -> Vec<Option<Vec<u8>>> {
    assert_eq!(frame[0], b'D');
    let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    assert_eq!(len + 1, frame.len(), "frame length");
    let body = Bytes::copy_from_slice(&frame[5..]);
    let values = super::wire::fields(&body).expect("well-formed DataRow");
    values.into_iter().map(|v| v.map(|b| b.to_vec())).collect()
}

/// The merged rows as text (`None` = NULL); for text-format results.
fn texts(merged: &Merged) -> Vec<Vec<Option<String>>> {
    merged
        .rows
        .iter()
        .map(|f| {
            frame_values(f)
                .into_iter()
                .map(|v| v.map(|b| String::from_utf8(b).expect("utf-8")))
                .collect()
        })
        .collect()
}

/// Rows of text values, for comparing with [`texts`].
fn expect(rows: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
        .collect()
}

fn run(sql: &str, shards: Vec<ShardRows>) -> Result<Merged, MergeError> {
    let plan = plan_scatter(sql).expect("plannable");
    merge(&plan, shards, &MergeSettings::default())
}

fn run_c(sql: &str, shards: Vec<ShardRows>) -> Result<Merged, MergeError> {
    let plan = plan_scatter(sql).expect("plannable");
    let settings = MergeSettings {
        text_order: TextOrder::Bytewise,
        ..MergeSettings::default()
    };
    merge(&plan, shards, &settings)
}

/// Column `i` of text rows.
fn column(rows: &[Vec<Option<String>>], i: usize) -> Vec<Option<String>> {
    rows.iter().map(|r| r[i].clone()).collect()
}

/// Non-NULL text values.
fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}
