//! [`StreamMerge`]: the merge as a state machine fed one shard row at a time, so that a fan-out
//! read holds only what its answer needs, not every shard's whole result: concatenation passes
//! each row on as it comes, ORDER BY keeps one head row per shard (a k-way merge), LIMIT stops
//! asking for rows once enough are out, aggregation keeps only the groups. It says which shard it
//! needs a row from next ([`Step::Need`]), so the caller reads a shard only when the client can
//! take what follows (backpressure), and reports what it holds ([`StreamMerge::held_bytes`]) for the
//! caller's memory budget. No I/O here.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::aggregate::{self, Acc, Context};
use super::error::MergeError;
use super::merge::{
    self, compare, resolve_keys, same_columns, sort_keys, Key, MergeSettings, SortKeys,
};
use super::plan::{AggPlan, Body, Final, Role, ScatterPlan};
use super::values::{self, KeyPart};
use super::wire::{self, Column};

/// Which shard the merge needs a row (or the end) from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Any shard still open: whichever answers first.
    Any,
    Shard(usize),
}

/// What [`StreamMerge::next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A DataRow frame was appended to the output.
    Row,
    /// Feed a row ([`StreamMerge::push`]) or the end ([`StreamMerge::end`]) of a shard.
    Need(Want),
    /// Every row is out; what the shards still send is not needed.
    Done,
}

/// A fan-out read's merge in progress.
pub struct StreamMerge {
    /// The client's RowDescription fields.
    columns: Vec<Column>,
    open: Vec<bool>,
    /// OFFSET rows still to skip, LIMIT rows still to send.
    skip: u64,
    left: u64,
    mode: Mode,
}

enum Mode {
    /// Rows pass through as they come; `hidden` trailing columns are cut.
    Concat {
        visible: usize,
        hidden: usize,
        next: Option<Bytes>,
    },
    Sorted(Sorted),
    Aggregate(Box<Aggregation>),
}

/// The k-way merge: one head row per open shard.
struct Sorted {
    keys: Vec<Key>,
    visible: usize,
    heads: Vec<Option<(SortKeys, Bytes)>>,
    /// Each shard's last row sent, to check that the shard's rows come sorted.
    last: Vec<Option<SortKeys>>,
    held: usize,
}

/// Hash aggregation of the shards' partial rows, groups in order of first appearance.
struct Aggregation {
    agg: AggPlan,
    shard_columns: Vec<Column>,
    order: Vec<Key>,
    cx: Context,
    key_columns: Vec<usize>,
    index: HashMap<Vec<KeyPart>, usize>,
    groups: Vec<Vec<Acc>>,
    rows_per_shard: Vec<usize>,
    /// An estimate of what the groups hold.
    held: usize,
    /// The finished rows, once every shard ended.
    out: Option<VecDeque<Vec<Option<Bytes>>>>,
}

/// Per group, besides its rows' bytes: the map entry, the key, the accumulators and the
/// allocations behind them (measured: ~800 bytes per two-column group at the peak, in RSS).
const GROUP_OVERHEAD: usize = 512;
const GROUP_COLUMN_OVERHEAD: usize = 64;

impl StreamMerge {
    /// A merge of `plan`'s shard query over shards that described their rows as `shards`.
    pub fn new(
        plan: &ScatterPlan,
        shards: &[&[Column]],
        settings: &MergeSettings,
    ) -> Result<StreamMerge, MergeError> {
        let columns = same_columns(shards)?;
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
        let n = shards.len();
        let (client, mode) = match &plan.body {
            Body::Rows { hidden } if plan.order.is_empty() => {
                let visible = visible_of(*hidden)?;
                let mode = Mode::Concat {
                    visible,
                    hidden: *hidden,
                    next: None,
                };
                (columns[..visible].to_vec(), mode)
            }
            Body::Rows { hidden } => {
                let visible = visible_of(*hidden)?;
                let sorted = Sorted {
                    keys: resolve_keys(&plan.order, visible, columns, cx)?,
                    visible,
                    heads: (0..n).map(|_| None).collect(),
                    last: (0..n).map(|_| None).collect(),
                    held: 0,
                };
                (columns[..visible].to_vec(), Mode::Sorted(sorted))
            }
            Body::Aggregate(agg) => {
                if columns.len() != agg.roles.len() {
                    return Err(MergeError::ColumnCount {
                        expected: agg.roles.len(),
                        got: columns.len(),
                    });
                }
                let finals = final_columns(agg, columns)?;
                let mut aggregation = Aggregation {
                    agg: agg.clone(),
                    shard_columns: columns.to_vec(),
                    order: resolve_keys(&plan.order, agg.visible, &finals, cx)?,
                    cx,
                    key_columns: (agg.roles.iter().enumerate())
                        .filter(|(_, r)| **r == Role::Key)
                        .map(|(i, _)| i)
                        .collect(),
                    index: HashMap::new(),
                    groups: Vec::new(),
                    rows_per_shard: vec![0; n],
                    held: 0,
                    out: None,
                };
                if !agg.grouped {
                    let group = aggregation.new_group()?;
                    aggregation.groups.push(group);
                }
                (
                    finals[..agg.visible].to_vec(),
                    Mode::Aggregate(Box::new(aggregation)),
                )
            }
        };
        Ok(StreamMerge {
            columns: client,
            open: vec![true; n],
            skip: plan.offset,
            left: plan.limit.unwrap_or(u64::MAX),
            mode,
        })
    }

    /// The client's RowDescription fields.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The shards whose end was not fed yet.
    pub fn open_shards(&self) -> impl Iterator<Item = usize> + '_ {
        (self.open.iter().enumerate())
            .filter(|(_, open)| **open)
            .map(|(i, _)| i)
    }

    /// What the merge holds: rows waiting to go out, or the groups.
    pub fn held_bytes(&self) -> usize {
        match &self.mode {
            Mode::Concat { next, .. } => next.as_ref().map_or(0, Bytes::len),
            Mode::Sorted(sorted) => sorted.held,
            Mode::Aggregate(aggregation) => aggregation.held,
        }
    }

    /// Appends the next DataRow frame to `out`, or says what it needs first.
    pub fn next(&mut self, out: &mut BytesMut) -> Result<Step, MergeError> {
        loop {
            if self.left == 0 {
                return Ok(Step::Done);
            }
            let any_open = self.open.iter().any(|o| *o);
            let mark = out.len();
            let produced = match &mut self.mode {
                Mode::Concat {
                    visible,
                    hidden,
                    next,
                } => match next.take() {
                    Some(body) if self.skip > 0 => {
                        drop(body);
                        false
                    }
                    Some(body) => {
                        match *hidden {
                            0 => out.extend_from_slice(&merge::frame(&body)),
                            _ => wire::put_prefix_frame(out, &body, *visible)?,
                        }
                        true
                    }
                    None if any_open => return Ok(Step::Need(Want::Any)),
                    None => return Ok(Step::Done),
                },
                Mode::Sorted(sorted) => {
                    if let Some(i) =
                        (0..self.open.len()).find(|&i| self.open[i] && sorted.heads[i].is_none())
                    {
                        return Ok(Step::Need(Want::Shard(i)));
                    }
                    let Some((keys, body)) = sorted.pop() else {
                        return Ok(Step::Done);
                    };
                    if self.skip == 0 {
                        wire::put_prefix_frame(out, &body, sorted.visible)?;
                    }
                    drop(keys);
                    self.skip == 0
                }
                Mode::Aggregate(aggregation) => {
                    if any_open {
                        return Ok(Step::Need(Want::Any));
                    }
                    let Some(row) = aggregation.next_row()? else {
                        return Ok(Step::Done);
                    };
                    if self.skip == 0 {
                        let visible = aggregation.agg.visible;
                        let frame =
                            wire::data_row_frame(row[..visible].iter().map(|v| v.as_deref()));
                        out.extend_from_slice(&frame);
                    }
                    self.skip == 0
                }
            };
            if produced {
                self.left -= 1;
                return Ok(Step::Row);
            }
            out.truncate(mark);
            self.skip -= 1;
        }
    }

    /// A row from `shard` (its DataRow body).
    pub fn push(&mut self, shard: usize, body: Bytes) -> Result<(), MergeError> {
        if !self.open.get(shard).copied().unwrap_or(false) {
            return Err(MergeError::Malformed("DataRow after the end of its result"));
        }
        match &mut self.mode {
            Mode::Concat { next, .. } => {
                if next.replace(body).is_some() {
                    return Err(MergeError::Malformed("DataRow sequence"));
                }
            }
            Mode::Sorted(sorted) => {
                let keys = sort_keys(&sorted.keys, &wire::fields(&body)?)?;
                if let Some(previous) = &sorted.last[shard] {
                    if compare(&sorted.keys, previous, &keys).is_gt() {
                        return Err(MergeError::Unsorted { shard });
                    }
                }
                sorted.held += body.len();
                if let Some((_, old)) = sorted.heads[shard].replace((keys, body)) {
                    sorted.held -= old.len();
                }
            }
            Mode::Aggregate(aggregation) => aggregation.add(shard, &body)?,
        }
        Ok(())
    }

    /// `shard` sent all its rows.
    pub fn end(&mut self, shard: usize) -> Result<(), MergeError> {
        if let Some(open) = self.open.get_mut(shard) {
            *open = false;
        }
        if let Mode::Aggregate(aggregation) = &self.mode {
            let rows = aggregation.rows_per_shard.get(shard).copied().unwrap_or(0);
            if !aggregation.agg.grouped && rows != 1 {
                return Err(MergeError::AggregateRows { shard, rows });
            }
        }
        Ok(())
    }
}

impl Sorted {
    /// The least head (ties: the lower shard), taken out.
    fn pop(&mut self) -> Option<(SortKeys, Bytes)> {
        let mut best: Option<usize> = None;
        for (i, head) in self.heads.iter().enumerate() {
            let Some((keys, _)) = head else { continue };
            let better = match best.and_then(|b| self.heads[b].as_ref()) {
                None => true,
                Some((best_keys, _)) => compare(&self.keys, keys, best_keys).is_lt(),
            };
            if better {
                best = Some(i);
            }
        }
        let i = best?;
        let (keys, body) = self.heads[i].take()?;
        self.held -= body.len();
        self.last[i] = Some(keys.clone());
        Some((keys, body))
    }
}

impl Aggregation {
    fn new_group(&self) -> Result<Vec<Acc>, MergeError> {
        (self.agg.roles.iter().zip(&self.shard_columns))
            .map(|(role, col)| Acc::new(*role, col))
            .collect()
    }

    fn add(&mut self, shard: usize, body: &Bytes) -> Result<(), MergeError> {
        let rows = &mut self.rows_per_shard[shard];
        *rows += 1;
        if !self.agg.grouped && *rows != 1 {
            return Err(MergeError::AggregateRows { shard, rows: *rows });
        }
        let values = wire::fields(body)?;
        let columns = &self.shard_columns;
        if values.len() != columns.len() {
            return Err(MergeError::Malformed("DataRow"));
        }
        let slot = match self.agg.grouped {
            false => 0,
            true => {
                let key = (self.key_columns.iter())
                    .map(|&i| values::key_part(&columns[i], values[i].as_ref()))
                    .collect::<Result<Vec<_>, _>>()?;
                match self.index.get(&key) {
                    Some(&slot) => slot,
                    None => {
                        let group = self.new_group()?;
                        self.groups.push(group);
                        self.index.insert(key, self.groups.len() - 1);
                        // The group keeps values of its first row (and maybe of a later one),
                        // and its finished row.
                        self.held +=
                            3 * body.len() + GROUP_OVERHEAD + GROUP_COLUMN_OVERHEAD * columns.len();
                        self.groups.len() - 1
                    }
                }
            }
        };
        let columns = &self.shard_columns;
        for ((acc, col), value) in self.groups[slot].iter_mut().zip(columns).zip(&values) {
            acc.add(col, value.as_ref(), self.cx)?;
        }
        Ok(())
    }

    /// The next merged row (merged columns, hidden sort keys last), in ORDER BY order.
    fn next_row(&mut self) -> Result<Option<Vec<Option<Bytes>>>, MergeError> {
        if self.out.is_none() {
            self.out = Some(self.finish_all()?);
        }
        Ok(self.out.as_mut().and_then(VecDeque::pop_front))
    }

    /// Every group's merged values, sorted; the groups are let go.
    fn finish_all(&mut self) -> Result<VecDeque<Vec<Option<Bytes>>>, MergeError> {
        self.index = HashMap::new();
        let groups = std::mem::take(&mut self.groups);
        // Each group is let go as soon as its row is made.
        let rows = groups
            .into_iter()
            .map(|group| self.finish(&group))
            .collect::<Result<Vec<_>, _>>()?;
        if self.order.is_empty() {
            return Ok(rows.into());
        }
        let mut keyed = rows
            .into_iter()
            .map(|row| Ok((sort_keys(&self.order, &row)?, row)))
            .collect::<Result<Vec<_>, MergeError>>()?;
        keyed.sort_by(|a, b| compare(&self.order, &a.0, &b.0));
        Ok(keyed.into_iter().map(|(_, row)| row).collect())
    }

    /// One group's merged values.
    fn finish(&self, group: &[Acc]) -> Result<Vec<Option<Bytes>>, MergeError> {
        let columns = &self.shard_columns;
        let cx = self.cx;
        self.agg
            .finals
            .iter()
            .map(|f| match *f {
                Final::Column(c) => group[c].finish(&columns[c], cx),
                Final::Avg { sum, count } => {
                    aggregate::avg(&group[sum], &group[count], columns[sum].format, cx)
                }
            })
            .collect()
    }
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
