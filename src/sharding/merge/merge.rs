//! [`merge`]: the shards' rows of one execution into the client's rows, all at once, by feeding
//! them to a [`StreamMerge`] (which the session drives row by row from the shards' sockets). Also
//! the sort keys and their comparison, which both share.

use std::cmp::Ordering;

use bytes::{Bytes, BytesMut};

use super::aggregate::Context;
use super::error::MergeError;
use super::plan::{ColumnRef, SortKey};
use super::stream::{Step, StreamMerge, Want};
use super::values::{self, SortValue};
use super::wire::Column;

/// One shard's result: its RowDescription and its DataRow bodies, in the order it sent them.
#[derive(Debug, Clone, Default)]
pub struct ShardRows {
    pub columns: Vec<Column>,
    pub rows: Vec<Bytes>,
}

/// The client's result: its RowDescription fields and complete DataRow frames.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub columns: Vec<Column>,
    pub rows: Vec<BytesMut>,
}

/// How the database orders text (its default collation), which only the caller can find out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextOrder {
    /// A linguistic collation pgscale does not reproduce: text sort keys and min/max of text are
    /// refused unless the query says `COLLATE "C"`.
    #[default]
    Collated,
    /// `C` or `POSIX`: byte order.
    Bytewise,
}

/// The session settings a merge depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeSettings {
    pub text_order: TextOrder,
    /// The session's `extra_float_digits`: float sums and averages are printed in text only when
    /// it is at least 1 (shortest exact digits, the default since Postgres 12).
    pub extra_float_digits: i32,
}

impl Default for MergeSettings {
    fn default() -> MergeSettings {
        MergeSettings {
            text_order: TextOrder::Collated,
            extra_float_digits: 1,
        }
    }
}

impl MergeSettings {
    pub(super) fn context(&self) -> Context {
        Context {
            bytewise_text: self.text_order == TextOrder::Bytewise,
            shortest_floats: self.extra_float_digits >= 1,
        }
    }
}

/// Merges every shard's result of `plan`'s shard query into what one database would return.
/// Shards are read in order where any will do, so concatenation keeps shard order.
pub fn merge(
    plan: &super::ScatterPlan,
    shards: Vec<ShardRows>,
    settings: &MergeSettings,
) -> Result<Merged, MergeError> {
    let columns: Vec<&[Column]> = shards.iter().map(|s| s.columns.as_slice()).collect();
    let mut stream = StreamMerge::new(plan, &columns, settings)?;
    let mut next = vec![0usize; shards.len()];
    let mut rows = Vec::new();
    let mut out = BytesMut::new();
    loop {
        let want = match stream.next(&mut out)? {
            Step::Row => {
                rows.push(out.split());
                continue;
            }
            Step::Done => break,
            Step::Need(want) => want,
        };
        let shard = match want {
            Want::Shard(i) => i,
            Want::Any => stream.open_shards().next().ok_or(MergeError::NoShards)?,
        };
        match shards[shard].rows.get(next[shard]) {
            Some(body) => {
                next[shard] += 1;
                stream.push(shard, body.clone())?;
            }
            None => stream.end(shard)?,
        }
    }
    Ok(Merged {
        columns: stream.columns().to_vec(),
        rows,
    })
}

/// Shard 0's columns, once every shard is seen to return the same types in the same formats.
pub(super) fn same_columns<'a>(shards: &[&'a [Column]]) -> Result<&'a [Column], MergeError> {
    let first = *shards.first().ok_or(MergeError::NoShards)?;
    for (i, shard) in shards.iter().enumerate().skip(1) {
        let same = shard.len() == first.len()
            && (shard.iter().zip(first))
                .all(|(a, b)| a.type_oid == b.type_oid && a.format == b.format);
        if !same {
            return Err(MergeError::ColumnsDiffer { shard: i });
        }
    }
    Ok(first)
}

/// A DataRow frame around a body as a shard sent it.
pub(super) fn frame(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(b"D");
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A sort key bound to its column.
pub(super) struct Key {
    index: usize,
    column: Column,
    spec: SortKey,
    bytewise: bool,
}

pub(super) fn resolve_keys(
    order: &[SortKey],
    visible: usize,
    columns: &[Column],
    cx: Context,
) -> Result<Vec<Key>, MergeError> {
    order
        .iter()
        .map(|spec| {
            let index = match spec.column {
                ColumnRef::Visible(i) if i < visible => i,
                ColumnRef::Visible(i) => return Err(MergeError::SortPosition(i + 1)),
                ColumnRef::Hidden(k) => visible + k,
            };
            let column = columns.get(index).ok_or(MergeError::ColumnCount {
                expected: index + 1,
                got: columns.len(),
            })?;
            Ok(Key {
                index,
                column: column.clone(),
                spec: *spec,
                bytewise: spec.bytewise || cx.bytewise_text,
            })
        })
        .collect()
}

/// A row's sort key values (`None` = NULL).
pub(super) type SortKeys = Vec<Option<SortValue>>;

pub(super) fn sort_keys(keys: &[Key], values: &[Option<Bytes>]) -> Result<SortKeys, MergeError> {
    keys.iter()
        .map(|k| {
            let value = values
                .get(k.index)
                .ok_or(MergeError::Malformed("DataRow"))?;
            value
                .as_ref()
                .map(|v| values::sort_value(&k.column, v, k.bytewise, "sort"))
                .transpose()
        })
        .collect()
}

/// Postgres' ORDER BY comparison of two rows' keys.
pub(super) fn compare(keys: &[Key], a: &SortKeys, b: &SortKeys) -> Ordering {
    for (k, (a, b)) in keys.iter().zip(a.iter().zip(b)) {
        let order = match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if k.spec.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if k.spec.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) if k.spec.descending => b.cmp(a),
            (Some(a), Some(b)) => a.cmp(b),
        };
        if order.is_ne() {
            return order;
        }
    }
    Ordering::Equal
}
