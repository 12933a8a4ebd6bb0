//! Fan-out reads, the pure half: a key-less `SELECT` is rewritten for every shard
//! ([`plan_scatter`]), or the query shape is refused with why and what to do.
//!
//! - `analyze` (with `names`, `aggregates`, `literals`, `shape`): the query shape, what is
//!   supported and what is refused ([`Unmergeable`]); the only files here that see sqlparser types.
//! - `rewrite`: the shard query (hidden columns, `avg` split into `sum` and `count`, `LIMIT n+m`).
//! - `plan`: [`ScatterPlan`], what the merge needs.
//! - `wire`: RowDescription and DataRow bodies in, frames out.
//! - `values` (with `numeric`, `float`, `datetime`): decoding the few types sorting and
//!   aggregation need, by type OID and format, and encoding aggregate results as Postgres would.

#![allow(dead_code)]

mod analyze;
mod datetime;
mod error;
mod float;
mod numeric;
mod plan;
mod rewrite;
mod values;
mod wire;

#[cfg(test)]
mod tests;

pub use analyze::plan_scatter;
pub use error::{MergeError, Unmergeable};
pub use plan::ScatterPlan;
pub use wire::{command_tag, parse_row_description, row_description_frame, Column, Format};
