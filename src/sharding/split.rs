//! Splitting a multi-row `INSERT … VALUES` by shard, for the simple protocol: one INSERT per shard
//! holding that shard's rows (in their order), rebuilt from sqlparser's AST. Everything but the
//! rows (column list, ON CONFLICT, RETURNING) is kept in each.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use thiserror::Error;

/// Why an INSERT could not be split. The messages are meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SplitError {
    #[error("the INSERT could not be parsed for splitting by shard: {0}")]
    Parse(#[from] ParserError),
    #[error("the INSERT could not be parsed for splitting by shard")]
    ParserPanic,
    #[error("only a single INSERT … VALUES statement can be split by shard")]
    NotInsertValues,
    #[error("the INSERT has {rows} rows but {shards} row shards were given")]
    RowCount { rows: usize, shards: usize },
}

/// The INSERT `sql` as one statement per shard: `row_shards[i]` is the shard of row `i` (from
/// `resolve_insert_rows`). Sorted by shard. RETURNING rows come back per shard, so a client sees
/// them grouped by shard rather than in VALUES order.
pub fn split_insert(sql: &str, row_shards: &[usize]) -> Result<Vec<(usize, String)>, SplitError> {
    let statements = catch_unwind(AssertUnwindSafe(|| {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
    }))
    .map_err(|_| SplitError::ParserPanic)??;
    let [Statement::Insert(insert)] = statements.as_slice() else {
        return Err(SplitError::NotInsertValues);
    };
    let rows = match insert.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(values)) => &values.rows,
        _ => return Err(SplitError::NotInsertValues),
    };
    if rows.len() != row_shards.len() {
        return Err(SplitError::RowCount {
            rows: rows.len(),
            shards: row_shards.len(),
        });
    }
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (row, shard) in row_shards.iter().enumerate() {
        by_shard.entry(*shard).or_default().push(row);
    }
    let mut out = Vec::with_capacity(by_shard.len());
    for (shard, picked) in by_shard {
        let mut part = insert.clone();
        if let Some(SetExpr::Values(values)) = part.source.as_deref_mut().map(|q| q.body.as_mut()) {
            values.rows = picked.iter().map(|i| rows[*i].clone()).collect();
        }
        out.push((shard, Statement::Insert(part).to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
