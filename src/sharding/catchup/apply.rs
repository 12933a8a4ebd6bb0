//! Preparing a source (publication + slot) and one catch-up round: peek a bounded batch of whole
//! transactions, decode and route it, apply it on the targets, commit them, then advance the slot.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::pgoutput::{self, Message, Relation, Tuple, Value};
use super::target::{Op, Targets};
use super::{publication_name, slot_name, CatchupError, CatchupTable, Round, Route};
use crate::sharding::{hash_key, ShardKey};

/// Rows (messages) per peek; decoding stops at the first commit past it, so a batch holds whole
/// transactions and memory stays bounded by this plus the largest transaction.
const BATCH_MESSAGES: i32 = 2000;

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(super) fn qualified(table: &CatchupTable) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// `X/Y` (hex halves) to a number.
pub(super) fn parse_lsn(text: &str) -> Result<u64, CatchupError> {
    let bad = || CatchupError::BadLsn(text.to_owned());
    let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
    let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
    let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
    Ok((u64::from(high) << 32) | u64::from(low))
}

pub(super) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

pub(super) async fn prepare(
    source: &Client,
    run_id: &str,
    source_index: usize,
    tables: &[CatchupTable],
) -> Result<(), CatchupError> {
    if tables.is_empty() {
        return Err(CatchupError::NoTables);
    }
    let wal_level: String = source.query_one("SHOW wal_level", &[]).await?.try_get(0)?;
    if wal_level != "logical" {
        return Err(CatchupError::NotLogical { actual: wal_level });
    }
    for table in tables {
        check_table(source, table).await?;
    }
    let publication = publication_name(run_id);
    let exists = source
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    let list = tables.iter().map(qualified).collect::<Vec<_>>().join(", ");
    if !exists {
        tracing::info!(%publication, tables = %list, "creating publication");
        source
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {list}",
                quote_ident(&publication)
            ))
            .await?;
    } else {
        // A rerun with more tables adds them (changes before this point are not in the slot for
        // them, which the copy that follows covers).
        for table in tables {
            let published = source
                .query_opt(
                    "SELECT 1 FROM pg_publication_tables \
                     WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                    &[&publication, &table.schema, &table.name],
                )
                .await?
                .is_some();
            if !published {
                source
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE {}",
                        quote_ident(&publication),
                        qualified(table)
                    ))
                    .await?;
            }
        }
    }
    let slot = slot_name(run_id, source_index);
    let exists = source
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .is_some();
    if !exists {
        tracing::info!(%slot, "creating logical replication slot");
        source
            .execute(
                "SELECT pg_create_logical_replication_slot($1::text::name, 'pgoutput')",
                &[&slot],
            )
            .await?;
    }
    Ok(())
}

/// The table exists and has a primary key containing the shard key column, and its replica
/// identity is that key (or the full row), so updates and deletes carry the old key.
async fn check_table(source: &Client, table: &CatchupTable) -> Result<(), CatchupError> {
    let row = source
        .query_opt(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                 WHERE i.indrelid = c.oid AND i.indisprimary AND a.attname = $2) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&qualified(table), &table.key_column],
        )
        .await?;
    let Some(row) = row else {
        return Err(CatchupError::MissingTable {
            table: qualified(table),
        });
    };
    let identity: String = row.try_get(0)?;
    let pk_has_key: bool = row.try_get(1)?;
    if !pk_has_key || !(identity == "d" || identity == "f") {
        return Err(CatchupError::NoReplicaIdentity {
            table: qualified(table),
            key_column: table.key_column.clone(),
        });
    }
    Ok(())
}

/// The slot's confirmed flush LSN; errors clearly when the slot is missing.
async fn confirmed_lsn(source: &Client, slot: &str) -> Result<u64, CatchupError> {
    let row = source
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .ok_or_else(|| CatchupError::MissingSlot {
            slot: slot.to_owned(),
        })?;
    let lsn: Option<String> = row.try_get(0)?;
    lsn.map_or(Ok(0), |lsn| parse_lsn(&lsn))
}

async fn wal_position(source: &Client, function: &str) -> Result<u64, CatchupError> {
    let lsn: String = source
        .query_one(&format!("SELECT {function}::text"), &[])
        .await?
        .try_get(0)?;
    parse_lsn(&lsn)
}

async fn flush_lsn(source: &Client) -> Result<u64, CatchupError> {
    wal_position(source, "pg_current_wal_flush_lsn()").await
}

/// The WAL page size and the longest page header: a position just past a header at a page start
/// is "reached" once the WAL up to the page start is (the header holds no record).
const WAL_PAGE: u64 = 8192;
const WAL_PAGE_HEADER_MAX: u64 = 40;

/// Whether WAL up to `position` is all at or before `reached`, allowing for a page header.
pub(super) fn reached(reached: u64, position: u64) -> bool {
    reached >= position
        || (reached.is_multiple_of(WAL_PAGE) && position - reached <= WAL_PAGE_HEADER_MAX)
}

/// Where decoding can stop to cover `target`: decoding reads flushed WAL only, so when the
/// source has not flushed that far (asynchronous commit, or WAL of transactions still open), a
/// tiny synchronously committed transaction makes it flush everything before its commit record
/// (it must write WAL to be flushed: a transactional logical message, which `pgoutput` does not
/// send without its `messages` option).
async fn flushed_up_to(source: &Client, target: u64) -> Result<u64, CatchupError> {
    let flushed = flush_lsn(source).await?;
    if reached(flushed, target) {
        return Ok(flushed);
    }
    source
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = on; \
             SELECT pg_logical_emit_message(true, 'pgscale_reshard_flush', ''); COMMIT",
        )
        .await?;
    flush_lsn(source).await
}

async fn advance(source: &Client, slot: &str, lsn: u64) -> Result<(), CatchupError> {
    source
        .execute(
            "SELECT pg_replication_slot_advance($1::text::name, $2::text::pg_lsn)",
            &[&slot, &format_lsn(lsn)],
        )
        .await?;
    Ok(())
}

/// What a round does after applying a batch: advance the slot (always, outside tests).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Advance {
    Yes,
    /// Apply one batch and stop before advancing, as a crash there would.
    CrashBeforeAdvance,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn apply_round(
    source: &Client,
    targets: &[&Client],
    run_id: &str,
    source_index: usize,
    tables: &[CatchupTable],
    route: Route<'_>,
    upto_lsn: Option<&str>,
    mode: Advance,
) -> Result<Round, CatchupError> {
    let slot = slot_name(run_id, source_index);
    let publication = publication_name(run_id);
    let mut confirmed = confirmed_lsn(source, &slot).await?;
    // Everything committed when the round started (the insert position: with asynchronous
    // commit an acknowledged commit may not be written yet), or up to the caller's LSN.
    let stop = match upto_lsn {
        Some(upto) => {
            let upto = parse_lsn(upto)?;
            flushed_up_to(source, upto).await?.min(upto)
        }
        None => {
            let target = wal_position(source, "pg_current_wal_insert_lsn()").await?;
            flushed_up_to(source, target).await?
        }
    };
    let mut round = Round::default();
    let mut sink = Targets::new(tables);
    loop {
        let flushed_before = flush_lsn(source).await?;
        let rows = source
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1::text::name, \
                 $2::text::pg_lsn, $3::int4, 'proto_version', '1', 'publication_names', $4::text)",
                &[&slot, &format_lsn(stop), &BATCH_MESSAGES, &publication],
            )
            .await?;
        let mut batch = Batch::new(targets.len());
        for row in &rows {
            let data: &[u8] = row.try_get(0)?;
            batch.add(
                pgoutput::decode(data).map_err(|e| CatchupError::Decode(e.0))?,
                tables,
                route,
            )?;
        }
        drop(rows);
        let Some(end) = batch.last_commit_end else {
            // Nothing left before `stop`: the slot can move there (transactions still open keep
            // their changes: the slot's restart point is kept by the server).
            let to = stop.min(flushed_before);
            if mode == Advance::Yes && to > confirmed {
                advance(source, &slot, to).await?;
            }
            break;
        };
        if end <= confirmed {
            // Peeking starts after the confirmed position, so this is not expected; stopping
            // keeps a surprise from looping on the same batch.
            tracing::warn!(slot = %slot, end = %format_lsn(end), "peeked an already confirmed commit");
            break;
        }
        for (index, ops) in batch.per_target.iter().enumerate() {
            if !ops.is_empty() {
                sink.apply(source, targets[index], index, ops).await?;
            }
        }
        round.changes_applied += batch.applied;
        round.changes_skipped += batch.skipped;
        if mode == Advance::CrashBeforeAdvance {
            return Ok(round);
        }
        advance(source, &slot, end).await?;
        confirmed = end;
        round.applied_lsn = Some(format_lsn(end));
    }
    round.lag_bytes = super::lag_bytes(source, run_id, source_index).await?;
    Ok(round)
}

/// A peeked batch decoded into each target's operations, whole transactions only.
struct Batch {
    relations: HashMap<u32, Arc<Relation>>,
    per_target: Vec<Vec<Op>>,
    /// The open transaction's operations, with their target index.
    pending: Vec<(usize, Op)>,
    pending_skipped: u64,
    pending_applied: u64,
    applied: u64,
    skipped: u64,
    last_commit_end: Option<u64>,
}

impl Batch {
    fn new(targets: usize) -> Batch {
        Batch {
            relations: HashMap::new(),
            per_target: vec![Vec::new(); targets],
            pending: Vec::new(),
            pending_skipped: 0,
            pending_applied: 0,
            applied: 0,
            skipped: 0,
            last_commit_end: None,
        }
    }

    fn add(
        &mut self,
        message: Message,
        tables: &[CatchupTable],
        route: Route<'_>,
    ) -> Result<(), CatchupError> {
        match message {
            Message::Begin { .. } => {
                self.pending.clear();
                self.pending_applied = 0;
                self.pending_skipped = 0;
            }
            Message::Commit { end_lsn, .. } => {
                for (target, op) in self.pending.drain(..) {
                    self.per_target[target].push(op);
                }
                self.applied += std::mem::take(&mut self.pending_applied);
                self.skipped += std::mem::take(&mut self.pending_skipped);
                self.last_commit_end = Some(end_lsn);
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.oid, Arc::new(relation));
            }
            Message::Origin { .. } | Message::Type { .. } | Message::Message { .. } => {}
            Message::Truncate { relations, .. } => {
                let table = relations
                    .first()
                    .and_then(|oid| self.relations.get(oid))
                    .map_or_else(
                        || "a published table".to_owned(),
                        |r| format!("{}.{}", r.namespace, r.name),
                    );
                return Err(CatchupError::Truncate { table });
            }
            Message::Insert { relation, new } => {
                let (rel, table) = self.relation(relation, tables)?;
                let hash = key_hash(&rel, &tables[table], &new)?;
                self.route_ops(
                    route,
                    &tables[table].name,
                    vec![(hash, Op::upsert(table, &rel, new))],
                )?;
            }
            Message::Delete { relation, old } => {
                let (rel, table) = self.relation(relation, tables)?;
                let hash = key_hash(&rel, &tables[table], &old)?;
                self.route_ops(
                    route,
                    &tables[table].name,
                    vec![(hash, Op::delete(table, &rel, old))],
                )?;
            }
            Message::Update { relation, old, new } => {
                let (rel, table) = self.relation(relation, tables)?;
                let info = &tables[table];
                // Fill an unchanged shard key from the old key, if sent.
                let new_hash = match (&old, key_value(&rel, info, &new)?) {
                    (Some(old), None) => key_hash(&rel, info, old)?,
                    (_, Some(_)) | (None, None) => key_hash(&rel, info, &new)?,
                };
                let mut ops = Vec::new();
                if let Some(old) = old {
                    if rel.key_changed(&old, &new) {
                        let old_hash = key_hash(&rel, info, &old)?;
                        ops.push((old_hash, Op::delete(table, &rel, old)));
                    }
                }
                ops.push((new_hash, Op::upsert(table, &rel, new)));
                self.route_ops(route, &info.name, ops)?;
            }
        }
        Ok(())
    }

    fn relation(
        &self,
        oid: u32,
        tables: &[CatchupTable],
    ) -> Result<(Arc<Relation>, usize), CatchupError> {
        let rel =
            self.relations.get(&oid).cloned().ok_or_else(|| {
                CatchupError::Decode(format!("change for unknown relation {oid}"))
            })?;
        let table = tables
            .iter()
            .position(|t| t.schema == rel.namespace && t.name == rel.name)
            .ok_or_else(|| CatchupError::BadChange {
                table: format!("{}.{}", rel.namespace, rel.name),
                reason: "the table is published but not among the resharded tables".to_owned(),
            })?;
        Ok((rel, table))
    }

    /// Routes one change's operations; the change counts as applied if any went to a target.
    fn route_ops(
        &mut self,
        route: Route<'_>,
        table: &str,
        ops: Vec<(u64, Op)>,
    ) -> Result<(), CatchupError> {
        let mut routed = false;
        for (hash, op) in ops {
            if let Some(target) = route(table, hash) {
                if target >= self.per_target.len() {
                    return Err(CatchupError::BadTarget {
                        index: target,
                        count: self.per_target.len(),
                    });
                }
                self.pending.push((target, op));
                routed = true;
            }
        }
        if routed {
            self.pending_applied += 1;
        } else {
            self.pending_skipped += 1;
        }
        Ok(())
    }
}

trait KeyChanged {
    fn key_changed(&self, old: &Tuple, new: &Tuple) -> bool;
}

impl KeyChanged for Relation {
    /// Whether a key column's value differs (an unchanged TOAST value is the same value).
    fn key_changed(&self, old: &Tuple, new: &Tuple) -> bool {
        self.columns.iter().enumerate().any(|(i, column)| {
            column.key
                && match (old.0.get(i), new.0.get(i)) {
                    (_, Some(Value::UnchangedToast)) => false,
                    (a, b) => a != b,
                }
        })
    }
}

/// The shard key's text in a tuple, `None` when the tuple does not carry it (unchanged TOAST).
fn key_value<'t>(
    rel: &Relation,
    table: &CatchupTable,
    tuple: &'t Tuple,
) -> Result<Option<&'t [u8]>, CatchupError> {
    let bad = |reason: String| CatchupError::BadChange {
        table: format!("{}.{}", rel.namespace, rel.name),
        reason,
    };
    let position = rel
        .columns
        .iter()
        .position(|c| c.name == table.key_column)
        .ok_or_else(|| bad(format!("no column {} in the stream", table.key_column)))?;
    match tuple.0.get(position) {
        Some(Value::Text(text)) => Ok(Some(text)),
        Some(Value::UnchangedToast) => Ok(None),
        Some(Value::Null) => Err(bad(format!("shard key {} is NULL", table.key_column))),
        None => Err(bad("tuple has fewer values than columns".to_owned())),
    }
}

fn key_hash(rel: &Relation, table: &CatchupTable, tuple: &Tuple) -> Result<u64, CatchupError> {
    let text = key_value(rel, table, tuple)?.ok_or_else(|| CatchupError::BadChange {
        table: format!("{}.{}", rel.namespace, rel.name),
        reason: format!("shard key {} was not sent", table.key_column),
    })?;
    let key = ShardKey::from_text(table.key_type, text).map_err(|e| CatchupError::BadChange {
        table: format!("{}.{}", rel.namespace, rel.name),
        reason: e.to_string(),
    })?;
    Ok(hash_key(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("0/16B3748").ok(), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0").ok(), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0000_00FF), "1/FF");
        assert_eq!(parse_lsn(&format_lsn(u64::MAX)).ok(), Some(u64::MAX));
        for bad in ["", "0", "x/1", "1/", "1/2/3", "100000000/0"] {
            assert!(parse_lsn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_header_is_not_lag() {
        assert!(reached(100, 100) && reached(200, 100) && !reached(100, 101));
        assert!(reached(8192, 8192 + 24) && reached(8192, 8192 + 40));
        assert!(!reached(8192, 8192 + 48) && !reached(8100, 8192 + 24));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
