//! Fan-out reads, the pure half: merging shards' rows into what one database would return.
//!
//! - `wire`: RowDescription and DataRow bodies in, frames out.
//! - `values` (with `numeric`, `float`, `datetime`): decoding the few types sorting and
//!   aggregation need, by type OID and format, and encoding aggregate results as Postgres would.

#![allow(dead_code)]

mod datetime;
mod error;
mod float;
mod numeric;
mod values;
mod wire;

#[cfg(test)]
mod tests;

pub use error::{MergeError, Unmergeable};
pub use wire::{command_tag, parse_row_description, row_description_frame, Column, Format};
