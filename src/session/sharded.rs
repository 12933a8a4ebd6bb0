//! Sharded routing for one client: which shard each unit needs (from its statements' shard keys,
//! read from the text or the Bind parameters), the rule that a transaction stays on one shard, and
//! the `BEGIN` the proxy answers itself until the transaction's first statement names a shard.

use bytes::{Bytes, BytesMut};

use super::pending::Expect;
use super::routing::DeferredBegin;
use super::{Flow, Session};
use crate::error::ClientError;
use crate::protocol::codec::{self, BodyReader};
use crate::router::plan::{Kind, StatementPlan};
use crate::sharding::resolve::{resolve, resolve_insert_rows, BindParams, ShardSet};
use crate::sharding::unit::{place, Need, UnitShards};
use crate::sharding::{ShardPlan, Sharding};

/// What the proxy does with a unit of a sharded client.
pub(super) enum Placement {
    /// Run it on this shard (the attached server's, when a transaction is open); `opens`: it
    /// executes statements, so a deferred `BEGIN` is sent ahead of it (a unit that only prepares
    /// or describes runs outside the transaction, on the default shard).
    One { shard: usize, opens: bool },
    /// A statement over several shards, run by the scatter executor.
    Many(Need),
    /// Answered by the proxy (a deferred `BEGIN`, or the `COMMIT` of a transaction that never
    /// reached a server).
    Answered,
    /// Refused with this reason.
    Refuse(String),
    /// The client's transaction failed before reaching a server: refused until it ends.
    Aborted,
}

impl Session {
    /// What one executed statement needs, with its key values from `sql` or the Bind parameters.
    pub(super) fn shard_need(
        sharding: &Sharding,
        statement: &StatementPlan,
        sql: &str,
        bind: Option<&BindParams<'_>>,
    ) -> Need {
        let ring = sharding.ring();
        match &statement.shard {
            ShardPlan::Unsharded => match statement.kind {
                Kind::Session
                | Kind::TxEnd
                | Kind::Begin { .. }
                | Kind::SetTransaction { .. }
                | Kind::Cursor => Need::Any,
                _ => Need::Shard(sharding.default_shard),
            },
            ShardPlan::ReferenceRead => Need::Any,
            ShardPlan::Keyed { key_type, keys } => {
                match resolve(keys, *key_type, sql, bind, &ring) {
                    Ok(ShardSet::One(shard)) => Need::Shard(shard),
                    Ok(ShardSet::Some(shards)) if statement.kind == Kind::Read => {
                        Need::ReadShards(shards)
                    }
                    Ok(ShardSet::All) if statement.kind == Kind::Read => Need::Scatter,
                    Ok(ShardSet::Some(_) | ShardSet::All) => Need::Refuse(
                        "this write touches rows on several shards, and pgscale cannot make a \
                         write across shards atomic; send one statement per shard key"
                            .to_string(),
                    ),
                    Err(e) => Need::Refuse(e.to_string()),
                }
            }
            ShardPlan::InsertRows { key_type, rows } => {
                match resolve_insert_rows(rows, *key_type, sql, bind, &ring) {
                    Ok(row_shards) => match row_shards.first() {
                        Some(&first) if row_shards.iter().all(|&s| s == first) => {
                            Need::Shard(first)
                        }
                        Some(_) if bind.is_some() => Need::Refuse(
                            "this multi-row INSERT has bind parameters and its rows belong to \
                             different shards; pgscale splits only simple-protocol inserts. \
                             Insert the rows of each shard key separately"
                                .to_string(),
                        ),
                        Some(_) => Need::SplitInsert { row_shards },
                        None => Need::Shard(sharding.default_shard),
                    },
                    Err(e) => Need::Refuse(e.to_string()),
                }
            }
            ShardPlan::ScatterRead => Need::Scatter,
            ShardPlan::ScatterWrite { .. } if sharding.allow_broadcast_writes => {
                Need::Broadcast { ddl: false }
            }
            ShardPlan::ScatterWrite { refusal } => Need::Refuse(refusal.to_string()),
            ShardPlan::Ddl => Need::Broadcast { ddl: true },
            ShardPlan::ReferenceWrite => Need::ReferenceWrite,
            ShardPlan::CopyIn {
                key_type,
                column_index,
                ..
            } => Need::CopyIn {
                key_type: *key_type,
                column_index: *column_index,
            },
            ShardPlan::Refused(reason) => Need::Refuse(reason.to_string()),
        }
    }

    /// Text that is not UTF-8 (a `client_encoding` other than UTF8) is classified from a lossy copy:
    /// enough to tell reads from writes, not to read shard keys or rebuild statements for other
    /// shards. Statements beyond unsharded tables are refused, clearly, rather than misrouted.
    pub(super) fn refuse_undecodable_sharded(
        &mut self,
        plan: &crate::router::plan::Plan,
        lossy: bool,
    ) {
        if !lossy || self.shared.sharding.is_none() {
            return;
        }
        let Some(routing) = self.routing.as_deref_mut() else {
            return;
        };
        let sharded = plan
            .statements
            .iter()
            .any(|s| !matches!(s.shard, ShardPlan::Unsharded | ShardPlan::ReferenceRead));
        if sharded {
            routing.shard_fold.add(Need::Refuse(
                "this statement's text is not valid UTF-8 (client_encoding is not UTF8) and it \
                 uses sharded or reference tables, whose shard keys pgscale reads from the text; \
                 send it as UTF-8 (client_encoding UTF8), or keep non-UTF-8 text to unsharded \
                 tables"
                    .to_string(),
            ));
        }
    }

    /// Adds what a simple query's statements need to the unit's fold.
    pub(super) fn note_shards_of_query(&mut self, plan: &crate::router::plan::Plan, sql: &str) {
        let Some(sharding) = self.shared.sharding.clone() else {
            return;
        };
        let Some(routing) = self.routing.as_deref_mut() else {
            return;
        };
        routing.ring_seen.get_or_insert(sharding.ring_version());
        for statement in plan.statements.iter() {
            if let Some(probe) = routing.freeze_probe.as_deref_mut() {
                probe.check(statement, sql, None, &routing.catalog.current());
            }
            routing
                .shard_fold
                .add(Session::shard_need(&sharding, statement, sql, None));
        }
    }

    /// Adds what a bound statement needs, its keys read from the Bind message's parameters.
    pub(super) fn note_shards_of_bind(
        &mut self,
        plan: &crate::router::plan::Plan,
        sql: &str,
        bind_body: &[u8],
    ) {
        let Some(sharding) = self.shared.sharding.clone() else {
            return;
        };
        let Some(routing) = self.routing.as_deref_mut() else {
            return;
        };
        let bind = match BindParams::parse(bind_body) {
            Ok(bind) => bind,
            Err(e) => {
                routing
                    .shard_fold
                    .add(Need::Refuse(format!("invalid Bind message: {e}")));
                return;
            }
        };
        routing.ring_seen.get_or_insert(sharding.ring_version());
        for statement in plan.statements.iter() {
            if let Some(probe) = routing.freeze_probe.as_deref_mut() {
                probe.check(statement, sql, Some(&bind), &routing.catalog.current());
            }
            routing
                .shard_fold
                .add(Session::shard_need(&sharding, statement, sql, Some(&bind)));
        }
    }

    /// Where the unit in `frames` goes, given the transaction it runs in. Answers a deferred
    /// `BEGIN` (and the `COMMIT`/`ROLLBACK` of a transaction that never reached a server) itself.
    pub(super) fn place_unit(&mut self, frames: &[u8]) -> Placement {
        let Some(sharding) = self.shared.sharding.clone() else {
            return Placement::One {
                shard: 0,
                opens: true,
            };
        };
        let in_transaction = self.server.is_some() && self.status != b'I';
        let single_query = single_query_text(frames);
        let kind = single_query
            .as_deref()
            .map(|sql| self.shared.plans.plan(sql))
            .filter(|plan| plan.statements.len() == 1)
            .map(|plan| plan.statements[0].kind);
        let Some(routing) = self.routing.as_deref_mut() else {
            return Placement::One {
                shard: sharding.default_shard,
                opens: true,
            };
        };
        let unit = routing.shard_fold.decide();
        let executes = !routing.shard_fold.is_empty();
        routing.shard_fold = Default::default();
        if self.server.is_none() && routing.deferred_failed {
            if single_query.as_deref().and_then(ends_transaction).is_some() {
                routing.deferred_failed = false;
                routing.unit = Default::default();
                // Postgres answers COMMIT of an aborted transaction with ROLLBACK.
                codec::command_complete(&mut self.to_client, "ROLLBACK");
                codec::ready_for_query(&mut self.to_client, b'I');
                return Placement::Answered;
            }
            return Placement::Aborted;
        }
        if !in_transaction && self.server.is_none() {
            match (kind, routing.deferred_begin.is_some()) {
                (Some(Kind::Begin { read_only }), false) => {
                    routing.deferred_begin = single_query.map(|sql| DeferredBegin {
                        sql: Bytes::from(sql),
                        read_only,
                    });
                    codec::command_complete(&mut self.to_client, "BEGIN");
                    codec::ready_for_query(&mut self.to_client, b'T');
                    return Placement::Answered;
                }
                (Some(Kind::TxEnd), true) => {
                    if let Some(tag) = single_query.as_deref().and_then(ends_transaction) {
                        routing.deferred_begin = None;
                        routing.unit = Default::default();
                        codec::command_complete(&mut self.to_client, tag);
                        codec::ready_for_query(&mut self.to_client, b'I');
                        return Placement::Answered;
                    }
                }
                (_, true) if !executes => {
                    return Placement::One {
                        shard: sharding.default_shard,
                        opens: false,
                    }
                }
                _ => {}
            }
        }
        // A server still attached (a transaction, or a unit ended by Flush) keeps the shard.
        let bound = self.server.is_some().then_some(routing.shard);
        let unit = match (unit, routing.deferred_begin.is_some()) {
            (UnitShards::Many(_), true) => UnitShards::Refuse(
                "statements over several shards (a key-less read, DDL, a broadcast write or a \
                 multi-row insert across shards) cannot run inside a transaction; run it outside \
                 the transaction, or add the shard key to its WHERE clause"
                    .to_string(),
            ),
            (unit, _) => unit,
        };
        match place(unit, bound, sharding.default_shard) {
            UnitShards::One(shard) => Placement::One { shard, opens: true },
            UnitShards::Many(need) => Placement::Many(need),
            UnitShards::Refuse(reason) => Placement::Refuse(reason),
            // `place` never leaves Any.
            UnitShards::Any => Placement::One {
                shard: sharding.default_shard,
                opens: true,
            },
        }
    }

    /// Refuses a unit of a client whose transaction is open on a server: the server itself raises
    /// the error, so the transaction is aborted as it would be on one database (only ROLLBACK is
    /// accepted next) and no later COMMIT can keep half of the client's intent.
    pub(super) fn refuse_in_transaction(&mut self, reason: &str, frames: &[u8]) -> Flow {
        tracing::info!(%reason, "refused a statement inside a sharded transaction");
        if !ends_with_sync_or_query(frames) {
            // Ended by Flush: the client gets the error now; the server is made to fail the
            // transaction in place of the client's next Sync.
            ClientError::ShardRouting(reason.to_string()).write_as_error(&mut self.to_client);
            self.ignore_till_sync = true;
            if let Some(routing) = self.routing.as_deref_mut() {
                routing.abort_at_sync = Some(reason.to_string());
            }
            return Flow::Continue;
        }
        // The client gets the proxy's own error, in its turn; the server's (raised by a DO block,
        // so it would carry a `CONTEXT: PL/pgSQL function …` line) is hidden, only its
        // `ReadyForQuery` (`E`, transaction aborted) goes through.
        let mut error = BytesMut::new();
        ClientError::ShardRouting(reason.to_string()).write_as_error(&mut error);
        if self.pending.is_empty() {
            self.to_client.extend_from_slice(&error);
        } else {
            self.pending.push(Expect::Synthetic(error.freeze()));
        }
        self.forward_query_frame(&raise_frame(reason), true);
        Flow::Continue
    }

    /// The client's Sync after a refused Flush-ended unit: the server fails the transaction (its
    /// error hidden: the client has it), and its `ReadyForQuery` answers the Sync.
    pub(super) fn abort_instead_of_sync(&mut self) -> bool {
        let Some(reason) = self
            .routing
            .as_deref_mut()
            .and_then(|r| r.abort_at_sync.take())
        else {
            return false;
        };
        if self.server.is_none() {
            return false;
        }
        self.forward_query_frame(&raise_frame(&reason), true);
        true
    }
}

/// A query that makes the server raise `reason` (SQLSTATE 0A000). The message travels hex-encoded,
/// so no setting (`standard_conforming_strings`) or character in it can break the statement.
fn raise_frame(reason: &str) -> BytesMut {
    let hex: String = reason.bytes().map(|b| format!("{b:02x}")).collect();
    let sql = format!(
        "DO $pgscale$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', \
         MESSAGE = convert_from(decode('{hex}', 'hex'), 'UTF8'); END $pgscale$"
    );
    let mut frame = BytesMut::new();
    codec::query(&mut frame, &sql);
    frame
}

/// The text of `frames` when they are exactly one simple query.
fn single_query_text(frames: &[u8]) -> Option<String> {
    let (tag, total) = codec::peek_header(frames, usize::MAX).ok()??;
    if tag != b'Q' || total != frames.len() {
        return None;
    }
    let mut reader = BodyReader::new(&frames[codec::HEADER_LEN..]);
    reader.cstr_utf8().ok().map(str::to_string)
}

/// The command tag Postgres answers a transaction end with, for `COMMIT`/`END`/`ROLLBACK`/`ABORT`
/// (None for savepoint commands and `PREPARE TRANSACTION`, which need a real transaction).
fn ends_transaction(sql: &str) -> Option<&'static str> {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()?
        .to_ascii_lowercase();
    let rest = sql.trim_start()[first.len()..]
        .trim_start()
        .to_ascii_lowercase();
    if rest.starts_with("to") || rest.starts_with("prepared") || rest.contains("chain") {
        return None;
    }
    match first.as_str() {
        "commit" | "end" => Some("COMMIT"),
        "rollback" | "abort" => Some("ROLLBACK"),
        _ => None,
    }
}

/// Whether a unit's last message is a Sync or a simple query (its answer ends in ReadyForQuery).
fn ends_with_sync_or_query(frames: &[u8]) -> bool {
    let mut at = 0;
    let mut last = None;
    while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
        last = Some(tag);
        at += total;
        if at >= frames.len() {
            break;
        }
    }
    matches!(last, Some(b'S' | b'Q'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_which_statements_end_a_transaction() {
        assert_eq!(ends_transaction("COMMIT"), Some("COMMIT"));
        assert_eq!(ends_transaction("  end work;"), Some("COMMIT"));
        assert_eq!(ends_transaction("rollback"), Some("ROLLBACK"));
        assert_eq!(ends_transaction("ABORT"), Some("ROLLBACK"));
        assert_eq!(ends_transaction("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(ends_transaction("COMMIT PREPARED 'x'"), None);
        assert_eq!(ends_transaction("SAVEPOINT a"), None);
    }

    #[test]
    fn finds_a_lone_simple_query() {
        let mut q = BytesMut::new();
        codec::query(&mut q, "BEGIN");
        assert_eq!(single_query_text(&q).as_deref(), Some("BEGIN"));
        assert!(ends_with_sync_or_query(&q));
        let mut two = q.clone();
        two.extend_from_slice(&q);
        assert_eq!(single_query_text(&two), None);
        assert_eq!(single_query_text(b"S\0\0\0\x04"), None);
        assert!(ends_with_sync_or_query(b"S\0\0\0\x04"));
        assert!(!ends_with_sync_or_query(b"H\0\0\0\x04"));
    }
}
