//! Catch-up for online resharding: the writes a source shard received while (and after) its moving
//! rows were copied, read from a logical replication slot and replayed on the new owners.
//!
//! The source publishes the sharded tables (`publication_name`) and keeps a `pgoutput` slot
//! (`slot_name`) created before the copy reads any row, so every change after the copy's snapshot
//! is in the slot. A round peeks a bounded batch of committed transactions over SQL
//! (`pg_logical_slot_peek_binary_changes`), decodes them ([`pgoutput`]), routes each change by the
//! hash of its row's key, applies the routed ones to their targets idempotently (upsert / delete by
//! primary key) in commit order, commits the targets and only then advances the slot: a crash
//! between the two replays the batch, which the idempotent apply absorbs, and never loses it.

mod apply;
pub mod pgoutput;
mod target;

use thiserror::Error;

pub use crate::sharding::KeyType;

/// A sharded table as replication sees it.
#[derive(Debug, Clone)]
pub struct CatchupTable {
    /// The table's schema, usually `public`.
    pub schema: String,
    /// The table's name (unqualified).
    pub name: String,
    /// The shard key column.
    pub key_column: String,
    /// The shard key's type, which decides how its text is hashed.
    pub key_type: KeyType,
}

/// Why preparing, applying or measuring the catch-up failed.
#[derive(Debug, Error)]
pub enum CatchupError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "the source server has wal_level = {actual}; online resharding needs wal_level = logical \
         (set it in postgresql.conf and restart the server)"
    )]
    NotLogical { actual: String },
    #[error("no sharded tables to replicate")]
    NoTables,
    #[error("table {table} does not exist on the source")]
    MissingTable { table: String },
    #[error(
        "table {table} has no primary key containing its shard key column {key_column}; logical \
         replication of UPDATE and DELETE needs one"
    )]
    NoReplicaIdentity { table: String, key_column: String },
    #[error(
        "a TRUNCATE of {table} was replicated; resharding cannot replay a TRUNCATE (it would empty \
         the target's copy of rows that did not move): abort this run and start again"
    )]
    Truncate { table: String },
    #[error("cannot decode the replication stream: {0}")]
    Decode(String),
    #[error("replicated change for {table}: {reason}")]
    BadChange { table: String, reason: String },
    #[error("the replication slot {slot} does not exist on the source (was `copy` run?)")]
    MissingSlot { slot: String },
    #[error("route gave target index {index} but only {count} targets were passed")]
    BadTarget { index: usize, count: usize },
    #[error("invalid LSN {0:?}")]
    BadLsn(String),
}

/// Decides where a change goes: given the table (unqualified name) and the hash of the row's key
/// (crate::sharding::ring::hash_key), the index of the target (into `targets`) or None to skip it.
pub type Route<'a> = &'a (dyn Fn(&str, u64) -> Option<usize> + Send + Sync);

/// What one [`apply_round`] did.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Changes written to a target (upserts and deletes; a key-changing update counts once).
    pub changes_applied: u64,
    /// Changes the route sent nowhere.
    pub changes_skipped: u64,
    /// The end LSN of the last commit applied and confirmed on the slot this round, if any.
    pub applied_lsn: Option<String>,
    /// Source `pg_current_wal_lsn()` minus the slot's confirmed flush LSN after the round.
    pub lag_bytes: u64,
}

/// Names are derived so reruns find them: `pgscale_reshard_<run_id>` (only `[a-z0-9_]`, at most 63
/// bytes: other characters become `_`, upper case is lowered, a long id is cut).
pub fn publication_name(run_id: &str) -> String {
    format!("pgscale_reshard_{}", sanitize(run_id))
}

/// The slot of source shard `source_index`: `pgscale_reshard_<run_id>_<source_index>`, same rules
/// as [`publication_name`].
pub fn slot_name(run_id: &str, source_index: usize) -> String {
    format!("pgscale_reshard_{}_{source_index}", sanitize(run_id))
}

/// The run id as identifier characters, cut so that the prefix, an index of up to 20 digits and
/// the separator stay within Postgres' 63-byte identifier limit.
fn sanitize(run_id: &str) -> String {
    const MAX: usize = 63 - "pgscale_reshard_".len() - 1 - 20;
    run_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(MAX)
        .collect()
}

/// On a source primary: checks wal_level = logical and that every table has a primary key
/// containing its key column (clear errors), creates the publication FOR TABLE ... and the logical
/// slot (pgoutput) if they do not exist yet. Idempotent. Must be called before the copy reads any
/// row.
pub async fn prepare(
    source: &tokio_postgres::Client,
    run_id: &str,
    source_index: usize,
    tables: &[CatchupTable],
) -> Result<(), CatchupError> {
    apply::prepare(source, run_id, source_index, tables).await
}

/// One round: reads pending changes from the slot (up to `upto_lsn` if given, e.g. the source's
/// [`current_lsn`] at freeze; else everything committed so far, in bounded batches), applies
/// the routed ones to the targets idempotently in commit order, commits on the targets, then
/// advances the slot. A crash at any point replays, never loses. `lag_bytes` = source
/// pg_current_wal_lsn() - slot confirmed_flush_lsn after the round (see [`lag_bytes`]).
/// Without `upto_lsn` the round covers every commit acknowledged before it started, even with
/// asynchronous commit; an `upto_lsn` from [`current_lsn`] does too.
pub async fn apply_round(
    source: &tokio_postgres::Client,
    targets: &[&tokio_postgres::Client],
    run_id: &str,
    source_index: usize,
    tables: &[CatchupTable],
    route: Route<'_>,
    upto_lsn: Option<&str>,
) -> Result<Round, CatchupError> {
    apply::apply_round(
        source,
        targets,
        run_id,
        source_index,
        tables,
        route,
        upto_lsn,
        apply::Advance::Yes,
    )
    .await
}

/// Test hook: applies one batch like [`apply_round`] and returns WITHOUT advancing the slot, as a
/// crash between the targets' commit and the advance would; the next round replays that batch.
#[doc(hidden)]
pub async fn apply_batch_then_crash(
    source: &tokio_postgres::Client,
    targets: &[&tokio_postgres::Client],
    run_id: &str,
    source_index: usize,
    tables: &[CatchupTable],
    route: Route<'_>,
) -> Result<Round, CatchupError> {
    apply::apply_round(
        source,
        targets,
        run_id,
        source_index,
        tables,
        route,
        None,
        apply::Advance::CrashBeforeAdvance,
    )
    .await
}

/// The source's WAL position that covers every commit acknowledged so far
/// (`pg_current_wal_insert_lsn()`), as `X/Y` text: the `upto_lsn` to pass to [`apply_round`] at
/// cutover. `pg_current_wal_lsn()` is the write position, which with `synchronous_commit = off` can
/// be before the commit record of a transaction already acknowledged to its client.
pub async fn current_lsn(source: &tokio_postgres::Client) -> Result<String, CatchupError> {
    Ok(source
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .try_get(0)?)
}

/// Lag of the slot in bytes (0 when caught up). Errors if the slot is missing. Measured from the
/// WAL insert position (`pg_current_wal_insert_lsn()`), which with asynchronous commit may be ahead
/// of `pg_current_wal_lsn()`: an acknowledged commit not yet written still counts as lag.
pub async fn lag_bytes(
    source: &tokio_postgres::Client,
    run_id: &str,
    source_index: usize,
) -> Result<u64, CatchupError> {
    let slot = slot_name(run_id, source_index);
    let row = source
        .query_opt(
            "SELECT pg_current_wal_insert_lsn()::text, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .ok_or(CatchupError::MissingSlot { slot })?;
    let current = apply::parse_lsn(&row.try_get::<_, String>(0)?)?;
    let confirmed: Option<String> = row.try_get(1)?;
    let confirmed = confirmed.map_or(Ok(0), |lsn| apply::parse_lsn(&lsn))?;
    if apply::reached(confirmed, current) {
        return Ok(0);
    }
    Ok(current - confirmed)
}

/// Drops the slot if it exists (idempotent).
pub async fn drop_slot(
    source: &tokio_postgres::Client,
    run_id: &str,
    source_index: usize,
) -> Result<(), CatchupError> {
    let slot = slot_name(run_id, source_index);
    source
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(())
}

/// Drops the publication if it exists (idempotent).
pub async fn drop_publication(
    source: &tokio_postgres::Client,
    run_id: &str,
) -> Result<(), CatchupError> {
    let publication = publication_name(run_id);
    source
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {publication}"))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_identifiers_within_63_bytes() {
        assert_eq!(publication_name("ab12"), "pgscale_reshard_ab12");
        assert_eq!(slot_name("ab12", 3), "pgscale_reshard_ab12_3");
        assert_eq!(publication_name("A-b.C"), "pgscale_reshard_a_b_c");
        let long = "x".repeat(200);
        assert!(publication_name(&long).len() <= 63);
        assert!(slot_name(&long, usize::MAX).len() <= 63);
        assert_eq!(slot_name("é", 0), "pgscale_reshard___0");
        for name in [
            slot_name("Ünïcode run!", 7),
            publication_name("Ünïcode run!"),
        ] {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}
