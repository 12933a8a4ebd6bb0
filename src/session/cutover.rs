//! A session's side of a resharding cutover (`RESHARD FREEZE` … `SWITCH`/`ABORT`, see
//! `sharding::freeze`): a unit that writes keys the new ring moves waits, without an error, until
//! the freeze is released, and is then routed on the ring in force; a unit whose shard needs were
//! read on a ring since swapped is read again.

use std::sync::Arc;

use bytes::BytesMut;

use super::{EndReason, Flow, Session};
use crate::protocol::codec;
use crate::router::functions::FunctionCatalog;
use crate::router::plan::{Kind, StatementPlan};
use crate::sharding::freeze::Freeze;
use crate::sharding::resolve::{resolve, resolve_insert_rows, BindParams, ShardSet};
use crate::sharding::{Ring, ShardPlan};
use crate::stats::ClientState;

/// Finds out, while a unit's statements are noted, whether it writes keys that move.
pub(super) struct FreezeProbe {
    freeze: Arc<Freeze>,
    moving: bool,
}

impl FreezeProbe {
    /// Notes one executed statement.
    pub(super) fn check(
        &mut self,
        statement: &StatementPlan,
        sql: &str,
        bind: Option<&BindParams<'_>>,
        catalog: &FunctionCatalog,
    ) {
        if self.moving || !writes(statement, catalog) {
            return;
        }
        let (old, new) = (&*self.freeze.old, &*self.freeze.new);
        self.moving = match &statement.shard {
            ShardPlan::Unsharded | ShardPlan::ReferenceRead | ShardPlan::Refused(_) => false,
            ShardPlan::Keyed { key_type, keys } => {
                match (
                    resolve(keys, *key_type, sql, bind, old),
                    resolve(keys, *key_type, sql, bind, new),
                ) {
                    (Ok(before), Ok(after)) => names(&before, old) != names(&after, new),
                    // Refused on either ring: it fails rather than writes.
                    _ => false,
                }
            }
            ShardPlan::InsertRows { key_type, rows } => {
                match (
                    resolve_insert_rows(rows, *key_type, sql, bind, old),
                    resolve_insert_rows(rows, *key_type, sql, bind, new),
                ) {
                    (Ok(before), Ok(after)) => before
                        .iter()
                        .zip(&after)
                        .any(|(&b, &a)| old.shards().get(b) != new.shards().get(a)),
                    _ => false,
                }
            }
            // Every shard, or keys only the rows will tell (COPY): the new shard's too.
            ShardPlan::ScatterRead
            | ShardPlan::ScatterWrite { .. }
            | ShardPlan::CopyIn { .. }
            | ShardPlan::ReferenceWrite
            | ShardPlan::Ddl => true,
        };
    }
}

/// Whether a statement writes (a write function called by a read counts).
fn writes(statement: &StatementPlan, catalog: &FunctionCatalog) -> bool {
    match statement.kind {
        Kind::Write(_) => true,
        Kind::Read => statement.functions.iter().any(|f| catalog.is_write(f)),
        Kind::Begin { .. }
        | Kind::SetTransaction { .. }
        | Kind::TxEnd
        | Kind::Session
        | Kind::Cursor => false,
    }
}

/// The shard names a set of shards means on `ring` (indices differ between rings).
fn names<'a>(set: &ShardSet, ring: &'a Ring) -> Vec<&'a str> {
    let mut names: Vec<&str> = match set {
        ShardSet::One(i) => ring
            .shards()
            .get(*i)
            .map(String::as_str)
            .into_iter()
            .collect(),
        ShardSet::Some(shards) => shards
            .iter()
            .filter_map(|i| ring.shards().get(*i).map(String::as_str))
            .collect(),
        ShardSet::All => ring.shards().iter().map(String::as_str).collect(),
    };
    names.sort_unstable();
    names
}

/// How a wait for the freeze's release ended early.
enum Interrupted {
    Cancelled,
    ClientGone,
    Shutdown,
}

impl Session {
    /// Before a unit is placed: waits while it writes keys that a freeze holds, and notes it
    /// again when the ring changed since it was noted. `Some` ends the unit here.
    pub(super) async fn cutover_gate(&mut self, frames: &[u8]) -> Option<Flow> {
        loop {
            let (freeze, ring_changed) = {
                let sharding = self.shared.sharding.as_deref()?;
                let seen = self.routing.as_deref_mut()?.ring_seen.take();
                let freeze = sharding.cutover.freeze();
                (freeze, seen.is_some_and(|v| v != sharding.ring_version()))
            };
            let Some(freeze) = freeze else {
                if ring_changed {
                    self.refresh_pools();
                    self.renote(frames, None);
                }
                return None;
            };
            // A transaction open at freeze time goes on: FREEZE waits for it to end.
            if self
                .meter
                .ticket
                .as_ref()
                .is_some_and(|t| t.era() < freeze.era)
            {
                return None;
            }
            if !self.renote(frames, Some(freeze.clone())) {
                return None;
            }
            tracing::info!(
                client = self.meter.client_id(),
                "a write to keys that move waits for the resharding cutover"
            );
            match self.wait_for_release(&freeze).await {
                Ok(()) => {
                    // The ring in force now decides; its shards' pools may be new.
                    self.refresh_pools();
                    self.renote(frames, None);
                }
                Err(Interrupted::Cancelled) => {
                    self.answer_cancelled(frames);
                    return Some(Flow::Continue);
                }
                Err(Interrupted::ClientGone) => return Some(Flow::End(EndReason::ClientGone)),
                Err(Interrupted::Shutdown) => return Some(Flow::End(EndReason::Shutdown)),
            }
        }
    }

    /// Notes the unit's statements again (on the ring in force); with a freeze, says whether
    /// they write keys that move.
    fn renote(&mut self, frames: &[u8], freeze: Option<Arc<Freeze>>) -> bool {
        let Some(routing) = self.routing.as_deref_mut() else {
            return false;
        };
        routing.unit = Default::default();
        routing.shard_fold = Default::default();
        routing.unit_statements.clear();
        routing.freeze_probe = freeze.map(|freeze| {
            Box::new(FreezeProbe {
                freeze,
                moving: false,
            })
        });
        let mut at = 0;
        while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
            // The frames were checked when they were first noted.
            let _ = self.note_for_routing(tag, &frames[at..at + total]);
            at += total;
            if at >= frames.len() {
                break;
            }
        }
        let Some(routing) = self.routing.as_deref_mut() else {
            return false;
        };
        routing.ring_seen = None;
        routing
            .freeze_probe
            .take()
            .is_some_and(|probe| probe.moving)
    }

    /// Waits for the freeze's release, unless the client cancels or leaves, or pgscale stops.
    async fn wait_for_release(&mut self, freeze: &Freeze) -> Result<(), Interrupted> {
        let _waiter = freeze.waiter();
        self.meter.set_state(ClientState::Waiting);
        let cancel_slot = self.cancel_slot.clone();
        let hard_stop = self.shared.hard_stop.clone();
        // Bytes already read belong to later messages: the socket's next byte is no message start.
        let watch_client = self.client_buf.is_empty();
        let client = &self.client;
        let result = tokio::select! {
            _ = freeze.released() => Ok(()),
            _ = cancel_slot.cancelled() => Err(Interrupted::Cancelled),
            _ = hard_stop.cancelled() => Err(Interrupted::Shutdown),
            _ = client_leaves(client), if watch_client => Err(Interrupted::ClientGone),
        };
        self.meter.set_state(if self.server.is_some() {
            ClientState::Active
        } else {
            ClientState::Idle
        });
        result
    }

    /// The client cancelled its wait: each batch of the unit gets `57014`, as a cancelled query.
    fn answer_cancelled(&mut self, frames: &[u8]) {
        const MESSAGE: &str = "canceling statement due to user request";
        if self.server.is_some() && self.status != b'I' {
            // The transaction's server fails it, so only ROLLBACK is accepted next.
            self.refuse_in_transaction(MESSAGE, frames);
            return;
        }
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.unit = Default::default();
            routing.shard_fold = Default::default();
            if routing.deferred_begin.take().is_some() {
                routing.deferred_failed = true;
            }
        }
        let mut error = BytesMut::new();
        codec::error_fields(&mut error, b'E', "ERROR", "57014", MESSAGE, None);
        self.refuse_with_frame(&error, frames);
    }
}

/// Resolves when the client closed its connection or sent `Terminate`; stays pending while it
/// sends anything else (read later, in turn).
async fn client_leaves(client: &crate::tls::ClientStream) {
    let mut first = [0u8; 1];
    // Over TLS the bytes are encrypted: only a closed socket tells the client left.
    match client.tcp().peek(&mut first).await {
        Ok(0) | Err(_) => {}
        Ok(_) if !client.is_tls() && first[0] == b'X' => {}
        Ok(_) => std::future::pending().await,
    }
}
