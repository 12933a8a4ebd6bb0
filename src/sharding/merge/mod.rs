//! Fan-out reads, the pure half: a key-less `SELECT` is rewritten for every shard
//! ([`plan_scatter`]) and the shards' rows are merged into exactly what one database holding all
//! the rows would return ([`merge`]), or the query shape is refused with why and what to do.
//!
//! Planning happens once per statement text (the caller caches); merging once per execution.
//! Nothing here does I/O: rows come in and frames go out as Postgres wire bytes.
//!
//! - `analyze` (with `names`, `aggregates`, `literals`, `shape`): the query shape, what is
//!   supported and what is refused ([`Unmergeable`]); the only files here that see sqlparser types.
//! - `rewrite`: the shard query (hidden columns, `avg` split into `sum` and `count`, `LIMIT n+m`).
//! - `plan`: [`ScatterPlan`], what the merge needs.
//! - `wire`: RowDescription and DataRow bodies in, frames out.
//! - `values` (with `numeric`, `float`, `datetime`): decoding the few types sorting and
//!   aggregation need, by type OID and format, and encoding aggregate results as Postgres would.
//! - `aggregate`: per-group accumulators; `stream`: the merge fed row by row (concatenation, k-way
//!   merge, hash aggregation), holding only what the answer needs; `merge`: the same over whole
//!   results, and the sort keys both use.

mod aggregate;
mod analyze;
mod datetime;
mod error;
mod float;
#[allow(clippy::module_inception)]
mod merge;
mod numeric;
mod plan;
mod rewrite;
mod stream;
mod values;
mod wire;

#[cfg(test)]
mod tests;

pub use analyze::plan_scatter;
pub use error::{MergeError, Unmergeable};
pub use merge::{merge, MergeSettings, Merged, ShardRows, TextOrder};
pub use plan::ScatterPlan;
pub use stream::{Step, StreamMerge, Want};
pub use wire::{command_tag, parse_row_description, row_description_frame, Column, Format};
