//! [`merge`]: the shards' rows of one execution into the client's rows. Concatenation, a k-way
//! merge of the shards' sorted rows (a heap; stops once OFFSET + LIMIT rows are out), or hash
//! aggregation followed by a sort.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};

use super::aggregate::{self, Acc, Context};
use super::error::MergeError;
use super::plan::{AggPlan, Body, ColumnRef, Final, Role, ScatterPlan, SortKey};
use super::values::{self, KeyPart, SortValue};
use super::wire::{self, Column};

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
    fn context(&self) -> Context {
        Context {
            bytewise_text: self.text_order == TextOrder::Bytewise,
            shortest_floats: self.extra_float_digits >= 1,
        }
    }
}

/// Merges every shard's result of `plan`'s shard query into what one database would return.
pub fn merge(
    plan: &ScatterPlan,
    shards: Vec<ShardRows>,
    settings: &MergeSettings,
) -> Result<Merged, MergeError> {
    let columns = same_columns(&shards)?;
    let cx = settings.context();
    let visible_of = |hidden: usize| {
        columns
            .len()
            .checked_sub(hidden)
            .ok_or(MergeError::ColumnCount {
                expected: hidden,
                got: columns.len(),
            })
    };
    match &plan.body {
        Body::Rows { hidden } if plan.order.is_empty() => {
            let visible = visible_of(*hidden)?;
            let rows = shards.iter().flat_map(|s| &s.rows);
            let rows = window(plan, rows).map(|body| match *hidden {
                0 => Ok(frame(body)),
                _ => wire::prefix_frame(body, visible),
            });
            Ok(Merged {
                columns: columns[..visible].to_vec(),
                rows: rows.collect::<Result<_, _>>()?,
            })
        }
        Body::Rows { hidden } => {
            let visible = visible_of(*hidden)?;
            let keys = resolve_keys(&plan.order, visible, columns, cx)?;
            let rows = sorted_merge(plan, &shards, &keys, visible)?;
            Ok(Merged {
                columns: columns[..visible].to_vec(),
                rows,
            })
        }
        Body::Aggregate(agg) => {
            if columns.len() != agg.roles.len() {
                return Err(MergeError::ColumnCount {
                    expected: agg.roles.len(),
                    got: columns.len(),
                });
            }
            aggregate_and_sort(plan, agg, &shards, cx)
        }
    }
}

/// Shard 0's columns, once every shard is seen to return the same types in the same formats.
fn same_columns(shards: &[ShardRows]) -> Result<&[Column], MergeError> {
    let first = shards.first().ok_or(MergeError::NoShards)?;
    for (i, shard) in shards.iter().enumerate().skip(1) {
        let same = shard.columns.len() == first.columns.len()
            && (shard.columns.iter().zip(&first.columns))
                .all(|(a, b)| a.type_oid == b.type_oid && a.format == b.format);
        if !same {
            return Err(MergeError::ColumnsDiffer { shard: i });
        }
    }
    Ok(&first.columns)
}

/// OFFSET then LIMIT over any row iterator.
fn window<T>(plan: &ScatterPlan, rows: impl Iterator<Item = T>) -> impl Iterator<Item = T> {
    let offset = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let limit = plan
        .limit
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    rows.skip(offset).take(limit)
}

/// A DataRow frame around a body as a shard sent it.
fn frame(body: &Bytes) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'D');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

/// A sort key bound to its column.
struct Key<'c> {
    index: usize,
    column: &'c Column,
    spec: SortKey,
    bytewise: bool,
}

fn resolve_keys<'c>(
    order: &[SortKey],
    visible: usize,
    columns: &'c [Column],
    cx: Context,
) -> Result<Vec<Key<'c>>, MergeError> {
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
                column,
                spec: *spec,
                bytewise: spec.bytewise || cx.bytewise_text,
            })
        })
        .collect()
}

/// A row's sort key values (`None` = NULL).
type SortKeys = Vec<Option<SortValue>>;

fn sort_keys(keys: &[Key], values: &[Option<Bytes>]) -> Result<SortKeys, MergeError> {
    keys.iter()
        .map(|k| {
            let value = values
                .get(k.index)
                .ok_or(MergeError::Malformed("DataRow"))?;
            value
                .as_ref()
                .map(|v| values::sort_value(k.column, v, k.bytewise, "sort"))
                .transpose()
        })
        .collect()
}

/// Postgres' ORDER BY comparison of two rows' keys.
fn compare(keys: &[Key], a: &SortKeys, b: &SortKeys) -> Ordering {
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

/// The next row of one shard in the merge heap.
struct Head<'k, 'c> {
    keys: SortKeys,
    order: &'k [Key<'c>],
    shard: usize,
    row: usize,
}

impl Ord for Head<'_, '_> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.order, &self.keys, &other.keys).then(self.shard.cmp(&other.shard))
    }
}

impl PartialOrd for Head<'_, '_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head<'_, '_> {}

/// K-way merge of rows each shard sorted, checking that they were: a shard whose order disagrees
/// with pgscale's (a collation it was not told about) fails the query instead of misordering it.
fn sorted_merge(
    plan: &ScatterPlan,
    shards: &[ShardRows],
    keys: &[Key],
    visible: usize,
) -> Result<Vec<BytesMut>, MergeError> {
    let head = |shard: usize, row: usize| -> Result<Option<Head>, MergeError> {
        let Some(body) = shards[shard].rows.get(row) else {
            return Ok(None);
        };
        let values = wire::fields(body)?;
        Ok(Some(Head {
            keys: sort_keys(keys, &values)?,
            order: keys,
            shard,
            row,
        }))
    };
    let mut heap = BinaryHeap::with_capacity(shards.len());
    for shard in 0..shards.len() {
        if let Some(h) = head(shard, 0)? {
            heap.push(Reverse(h));
        }
    }
    let mut skip = plan.offset;
    let mut left = plan.limit.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    while left > 0 {
        let Some(Reverse(next)) = heap.pop() else {
            break;
        };
        let body = &shards[next.shard].rows[next.row];
        match skip {
            0 => {
                out.push(wire::prefix_frame(body, visible)?);
                left -= 1;
            }
            _ => skip -= 1,
        }
        if let Some(following) = head(next.shard, next.row + 1)? {
            if compare(keys, &next.keys, &following.keys).is_gt() {
                return Err(MergeError::Unsorted { shard: next.shard });
            }
            heap.push(Reverse(following));
        }
    }
    Ok(out)
}

/// One group's accumulators, one per shard column.
type Group = Vec<Acc>;

fn aggregate_and_sort(
    plan: &ScatterPlan,
    agg: &AggPlan,
    shards: &[ShardRows],
    cx: Context,
) -> Result<Merged, MergeError> {
    let columns = &shards[0].columns;
    let groups = combine(agg, shards, columns, cx)?;
    let finals = final_columns(agg, columns)?;
    let mut rows = groups
        .iter()
        .map(|group| finish(agg, group, columns, cx))
        .collect::<Result<Vec<_>, _>>()?;
    if !plan.order.is_empty() {
        let keys = resolve_keys(&plan.order, agg.visible, &finals, cx)?;
        let mut keyed = rows
            .into_iter()
            .map(|row| Ok((sort_keys(&keys, &row)?, row)))
            .collect::<Result<Vec<_>, MergeError>>()?;
        keyed.sort_by(|a, b| compare(&keys, &a.0, &b.0));
        rows = keyed.into_iter().map(|(_, row)| row).collect();
    }
    let rows = window(plan, rows.iter())
        .map(|row| wire::data_row_frame(row[..agg.visible].iter().map(|v| v.as_deref())))
        .collect();
    Ok(Merged {
        columns: finals[..agg.visible].to_vec(),
        rows,
    })
}

/// Hash aggregation of every shard's partial rows, groups in order of first appearance.
fn combine(
    agg: &AggPlan,
    shards: &[ShardRows],
    columns: &[Column],
    cx: Context,
) -> Result<Vec<Group>, MergeError> {
    let new_group = || -> Result<Group, MergeError> {
        (agg.roles.iter().zip(columns))
            .map(|(role, col)| Acc::new(*role, col))
            .collect()
    };
    let key_columns: Vec<usize> = (agg.roles.iter().enumerate())
        .filter(|(_, r)| **r == Role::Key)
        .map(|(i, _)| i)
        .collect();
    let mut index: HashMap<Vec<KeyPart>, usize> = HashMap::new();
    let mut groups = Vec::new();
    if !agg.grouped {
        groups.push(new_group()?);
    }
    for (shard, rows) in shards.iter().enumerate() {
        if !agg.grouped && rows.rows.len() != 1 {
            return Err(MergeError::AggregateRows {
                shard,
                rows: rows.rows.len(),
            });
        }
        for body in &rows.rows {
            let values = wire::fields(body)?;
            if values.len() != columns.len() {
                return Err(MergeError::Malformed("DataRow"));
            }
            let slot = match agg.grouped {
                false => 0,
                true => {
                    let key = (key_columns.iter())
                        .map(|&i| values::key_part(&columns[i], values[i].as_ref()))
                        .collect::<Result<Vec<_>, _>>()?;
                    match index.get(&key) {
                        Some(&slot) => slot,
                        None => {
                            groups.push(new_group()?);
                            index.insert(key, groups.len() - 1);
                            groups.len() - 1
                        }
                    }
                }
            };
            for ((acc, col), value) in groups[slot].iter_mut().zip(columns).zip(&values) {
                acc.add(col, value.as_ref(), cx)?;
            }
        }
    }
    Ok(groups)
}

/// The merged columns' RowDescription fields (avg's are numeric or float8).
fn final_columns(agg: &AggPlan, columns: &[Column]) -> Result<Vec<Column>, MergeError> {
    agg.finals
        .iter()
        .map(|f| match *f {
            Final::Column(c) => Ok(columns[c].clone()),
            Final::Avg { sum, .. } => aggregate::avg_column(&columns[sum]),
        })
        .collect()
}

/// One group's merged values.
fn finish(
    agg: &AggPlan,
    group: &Group,
    columns: &[Column],
    cx: Context,
) -> Result<Vec<Option<Bytes>>, MergeError> {
    agg.finals
        .iter()
        .map(|f| match *f {
            Final::Column(c) => group[c].finish(&columns[c], cx),
            Final::Avg { sum, count } => {
                aggregate::avg(&group[sum], &group[count], columns[sum].format, cx)
            }
        })
        .collect()
}
