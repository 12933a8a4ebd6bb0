//! Read/write splitting for one client (transaction mode). While no server is attached, the messages of
//! a unit — one simple query, or an extended-protocol batch up to Sync or Flush — are held, classified
//! (plan cache), and routed as a whole: reads and read-only transactions to the nearest fresh replica,
//! everything else to the primary (the choice of server and the retry of a failed read are in
//! `targets`; the choice of shard in `sharded`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::functions::DbCatalog;
use super::lifecycle::AttachError;
use super::sharded::Placement;
use super::{Flow, Session};
use crate::error::ClientError;
use crate::pool::topology::Topology;
use crate::pool::Pool;
use crate::protocol::codec::{self, BodyReader};
use crate::router::fingerprint::leading_hint;
use crate::router::plan::{Decision, Plan, PrimaryReason, UnitRouter};
use crate::sharding::unit::ShardFold;

/// A unit larger than this is routed before it is complete (to the primary unless it is all reads).
const MAX_HELD_BYTES: usize = 1 << 20;

/// Which server of the shard a unit runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Primary,
    Replica(usize),
}

/// A unit that may be sent again: nothing of its answer has reached the client yet.
pub(super) struct Retry {
    pub(super) frames: Bytes,
    pub(super) decision: Decision,
    pub(super) tried: Vec<usize>,
    pub(super) ops_len: usize,
    pub(super) client_mark: usize,
}

/// This client's pools on one shard's servers.
pub(super) struct ShardPools {
    pub(super) primary: Arc<Pool>,
    /// In the topology's order (the balancer's replica indexes).
    pub(super) replicas: Vec<Arc<Pool>>,
}

/// A routing client's state.
pub(super) struct Routing {
    /// This client's pools, per shard in the topology's order.
    pub(super) shards: Vec<ShardPools>,
    /// The backends those pools connect to (their health picks replicas), as of the client's last
    /// move to a reloaded config.
    pub(super) topology: Arc<Topology>,
    /// The shard of the unit being routed, or of the one holding the server.
    pub(super) shard: usize,
    pub(super) catalog: Arc<DbCatalog>,
    pub(super) unit: UnitRouter,
    /// The shards the held unit's statements need (sharded topologies only).
    pub(super) shard_fold: ShardFold,
    /// A `BEGIN` the proxy answered itself: it is sent ahead of the transaction's first unit, once
    /// that unit's shard is known.
    pub(super) deferred_begin: Option<DeferredBegin>,
    /// The first unit of a deferred transaction failed: the client is in an aborted transaction
    /// that no server has; only COMMIT/ROLLBACK end it.
    pub(super) deferred_failed: bool,
    /// A Flush-ended unit was refused inside a transaction: the client's next Sync makes the
    /// server fail the transaction (with this reason) before answering.
    pub(super) abort_at_sync: Option<String>,
    held: BytesMut,
    /// The held messages end a unit (Sync, Flush or a simple query came).
    held_ready: bool,
    /// A unit routed to a replica was sent in full: what the client sends next (pipelining) waits
    /// until it has been answered, so it is routed on its own rather than follow it to the replica.
    busy: bool,
    /// Held messages arrived while busy (sharded clients): they are noted for routing one unit at
    /// a time, when dispatched.
    unnoted: bool,
    /// No message of the held unit changes the client's statement names (so it can be replayed).
    retryable: bool,
    /// Named statements parsed in the held unit (registered only when it is sent): name, plan, text.
    pub(super) unit_statements: Vec<(Vec<u8>, Arc<Plan>, Arc<str>)>,
    /// The unnamed statement's plan, text and parameter types (its keys are read at Bind).
    unnamed_plan: Option<(Arc<Plan>, Arc<str>, Bytes)>,
    pub(super) retry: Option<Retry>,
    /// Where the unit (or transaction) holding the server went, and why.
    pub(super) attached: Option<(Target, Decision)>,
    /// Per shard: when this client last committed a write on its primary, and a primary WAL
    /// position at or past that write once known.
    pub(super) writes: Vec<LastWrite>,
    /// The ring version the held unit's shard needs were read on (resharding swaps rings).
    pub(super) ring_seen: Option<u64>,
    /// While a resharding freeze is checked: whether the unit writes keys that move.
    pub(super) freeze_probe: Option<Box<super::cutover::FreezeProbe>>,
}

/// A `BEGIN` the proxy answered itself: its text, and the access mode it said (None: not said).
pub(super) struct DeferredBegin {
    pub(super) sql: Bytes,
    pub(super) read_only: Option<bool>,
}

/// A client's last write on one shard (read-your-writes).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LastWrite {
    pub(super) at: Option<Instant>,
    pub(super) min_lsn: Option<u64>,
}

impl Routing {
    pub(super) fn new(
        shards: Vec<ShardPools>,
        topology: Arc<Topology>,
        catalog: Arc<DbCatalog>,
    ) -> Routing {
        Routing {
            writes: vec![LastWrite::default(); shards.len()],
            shards,
            topology,
            shard: 0,
            catalog,
            unit: UnitRouter::default(),
            shard_fold: ShardFold::default(),
            deferred_begin: None,
            deferred_failed: false,
            abort_at_sync: None,
            held: BytesMut::new(),
            held_ready: false,
            busy: false,
            unnoted: false,
            unit_statements: Vec::new(),
            retryable: true,
            unnamed_plan: None,
            retry: None,
            attached: None,
            ring_seen: None,
            freeze_probe: None,
        }
    }

    /// Moves to the pools of a reloaded config (between transactions); what the client wrote is
    /// remembered (the shards are the same: a reload cannot change them).
    pub(super) fn replace_pools(&mut self, new: Routing) {
        self.shards = new.shards;
        self.topology = new.topology;
        self.writes.resize(self.shards.len(), LastWrite::default());
    }

    pub(super) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The unnamed statement's text and parameter types.
    pub(super) fn unnamed_statement(&self) -> Option<(String, Bytes)> {
        self.unnamed_plan
            .as_ref()
            .map(|(_, sql, types)| (sql.to_string(), types.clone()))
    }

    /// The client is inside a transaction the proxy has not sent anywhere yet.
    pub(super) fn in_deferred_transaction(&self) -> bool {
        self.deferred_begin.is_some() || self.deferred_failed
    }

    /// The transaction status to report while no server is attached.
    pub(super) fn idle_status(&self) -> u8 {
        if self.deferred_failed {
            b'E'
        } else if self.deferred_begin.is_some() {
            b'T'
        } else {
            b'I'
        }
    }

    /// The transaction's first unit failed: the client's transaction is now aborted.
    fn deferred_unit_failed(&mut self, had_deferred: bool) {
        if had_deferred {
            self.deferred_begin = None;
            self.deferred_failed = true;
        }
    }

    /// Held messages reached the limit while a replica answers: stop reading the client (TCP
    /// backpressure) rather than buffer without bound.
    pub(super) fn is_full(&self) -> bool {
        self.busy && self.held.len() > MAX_HELD_BYTES
    }

    /// The server is given back: a write it committed makes later reads wait for replicas to catch up.
    pub(super) fn on_release(&mut self) {
        self.retry = None;
        self.busy = false;
        // Neutral units (SET, COMMIT alone) and reads that fell back to the primary wrote nothing.
        if let Some((Target::Primary, Decision::Primary(_))) = self.attached.take() {
            if let Some(write) = self.writes.get_mut(self.shard) {
                *write = LastWrite {
                    at: Some(Instant::now()),
                    min_lsn: None,
                };
            }
        }
    }

    /// A statement over several shards wrote on `shards`' primaries: reads wait for their replicas.
    pub(super) fn note_writes(&mut self, shards: &[usize]) {
        let now = Instant::now();
        for &shard in shards {
            if let Some(write) = self.writes.get_mut(shard) {
                *write = LastWrite {
                    at: Some(now),
                    min_lsn: None,
                };
            }
        }
    }

    /// Bytes reached the client: the unit can no longer be sent again.
    pub(super) fn on_client_bytes(&mut self) {
        self.retry = None;
    }

    /// The server answered everything sent (`ReadyForQuery`): held messages may go.
    pub(super) fn on_ready(&mut self) {
        self.busy = false;
    }

    /// The unit on the server may still be sent again elsewhere.
    pub(super) fn can_retry(&self) -> bool {
        self.retry.is_some()
    }
}

/// Whether a client message ends a unit (its answer ends with `ReadyForQuery`, or `Flush` asks for
/// what is there).
fn ends_unit(tag: u8) -> bool {
    matches!(tag, b'Q' | b'S' | b'H' | b'F')
}

/// Where the first unit of `frames` ends, if it does.
fn first_unit_end(frames: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
        at += total;
        if ends_unit(tag) {
            return Some(at);
        }
        if at >= frames.len() {
            break;
        }
    }
    None
}

/// Whether a `Close` frame closes a named statement (answered by the proxy in transaction mode).
pub(super) fn closes_named_statement(frame: &[u8]) -> bool {
    frame.get(codec::HEADER_LEN) == Some(&b'S') && frame.get(codec::HEADER_LEN + 1) != Some(&0)
}

impl Session {
    /// Whether a client message must wait in the held unit rather than go to a server now.
    pub(super) fn should_hold(&self, tag: u8) -> bool {
        let Some(routing) = self.routing.as_deref() else {
            return false;
        };
        // COPY data only ever follows a COPY that is running on the attached server.
        if matches!(tag, b'd' | b'c' | b'f') || self.copy_in {
            return false;
        }
        if routing.busy {
            return true;
        }
        // Inside a transaction, a sharded client's units are still checked: they must stay on the
        // transaction's shard.
        if self.server.is_some() && self.shared.sharding.is_none() {
            return false;
        }
        // A Sync or Flush with nothing held is answered as usual.
        !matches!(tag, b'S' | b'H') || routing.is_holding()
    }

    /// A message arrived while no server is attached (or while a replica answers the previous unit):
    /// hold it until its unit is complete, then route the unit.
    pub(super) async fn hold(&mut self, tag: u8, frame: BytesMut) -> Flow {
        let (busy, nothing_held) = match self.routing.as_deref() {
            Some(r) => (r.busy, !r.is_holding()),
            None => return Flow::Continue,
        };
        let quiet = !busy && nothing_held;
        if busy && self.shared.sharding.is_some() {
            // Noted when its turn comes: each pipelined unit is routed on its own.
            if let Some(routing) = self.routing.as_deref_mut() {
                routing.held.extend_from_slice(&frame);
                routing.unnoted = true;
                routing.held_ready |= ends_unit(tag);
            }
            return Flow::Continue;
        }
        if quiet && tag == b'C' && closes_named_statement(&frame) {
            return self.on_close_statement(&frame);
        }
        // Before a Parse may be answered without a server: the Describe or Bind after it needs its
        // plan to find the right server.
        if let Err(message) = self.note_for_routing(tag, &frame) {
            return self.protocol_violation(&message).await;
        }
        if quiet && tag == b'P' && self.parse_without_server(&frame) {
            return Flow::Continue;
        }
        if quiet && tag == b'Q' {
            // The common case, a simple query alone: no copy.
            return self.dispatch(frame.freeze()).await;
        }
        let Some(routing) = self.routing.as_deref_mut() else {
            return Flow::Continue;
        };
        routing.held.extend_from_slice(&frame);
        let ends_unit = ends_unit(tag);
        routing.held_ready |= ends_unit;
        if !busy && (ends_unit || routing.held.len() > MAX_HELD_BYTES) {
            return self.dispatch_unit().await;
        }
        Flow::Continue
    }

    /// A Sync or simple query went to the server: if it went to a replica, what the client sends
    /// next waits for the answer (it may need another server).
    pub(super) fn unit_sent(&mut self) {
        let sharded = self.shared.sharding.is_some();
        if let Some(routing) = self.routing.as_deref_mut() {
            // A sharded client's next unit may need another shard: it waits for this one too.
            if sharded || matches!(routing.attached, Some((Target::Replica(_), _))) {
                routing.busy = true;
            }
        }
    }

    /// After the server answered: messages held meanwhile go on — into the open transaction on the
    /// same server, or, once the server is given back, routed as a new unit.
    pub(super) async fn resume_held(&mut self) -> Flow {
        let Some(routing) = self.routing.as_deref_mut() else {
            return Flow::Continue;
        };
        if routing.busy || !routing.is_holding() {
            return Flow::Continue;
        }
        let flow = if self.server.is_some() && self.shared.sharding.is_none() {
            // The transaction goes on: what was held belongs to it, not to a unit of its own.
            routing.held_ready = false;
            routing.unit = UnitRouter::default();
            routing.retryable = true;
            let frames = std::mem::take(&mut routing.held).freeze();
            self.replay(&frames).await
        } else if routing.held_ready {
            self.dispatch_unit().await
        } else {
            return Flow::Continue;
        };
        if let Flow::End(reason) = flow {
            return Flow::End(reason);
        }
        self.flush().await
    }

    /// Feeds what one message says about its statements into the unit's routing.
    pub(super) fn note_for_routing(&mut self, tag: u8, frame: &[u8]) -> Result<(), String> {
        let body = &frame[codec::HEADER_LEN..];
        let mut reader = BodyReader::new(body);
        let bad = |what: &str, e: codec::CodecError| format!("invalid {what} message: {e}");
        match tag {
            b'Q' => {
                let sql = reader.cstr_text().map_err(|e| bad("Query", e))?;
                let plan = self.route_sql(&sql);
                self.note_shards_of_query(&plan, &sql);
                self.refuse_undecodable_sharded(&plan, matches!(sql, Cow::Owned(_)));
            }
            b'P' => {
                let name = reader.cstr().map_err(|e| bad("Parse", e))?;
                let sql = reader.cstr_text().map_err(|e| bad("Parse", e))?;
                let named = !name.is_empty();
                let types = Bytes::copy_from_slice(reader.remaining());
                let plan = self.route_sql(&sql);
                self.refuse_undecodable_sharded(&plan, matches!(sql, Cow::Owned(_)));
                if let Some(routing) = self.routing.as_deref_mut() {
                    if named {
                        routing.retryable = false;
                        routing
                            .unit_statements
                            .push((name.to_vec(), plan, Arc::from(&*sql)));
                    } else {
                        routing.unnamed_plan = Some((plan, Arc::from(&*sql), types));
                    }
                }
            }
            b'B' => {
                let _portal = reader.cstr().map_err(|e| bad("Bind", e))?;
                let name = reader.cstr().map_err(|e| bad("Bind", e))?;
                let Some(routing) = self.routing.as_deref_mut() else {
                    return Ok(());
                };
                let plan = if name.is_empty() {
                    routing
                        .unnamed_plan
                        .as_ref()
                        .map(|(plan, sql, _)| (plan.clone(), sql.clone()))
                } else {
                    // A statement parsed earlier in this unit is not registered yet.
                    let in_unit = routing
                        .unit_statements
                        .iter()
                        .rev()
                        .find(|(n, _, _)| n.as_slice() == name)
                        .map(|(_, plan, sql)| (plan.clone(), sql.clone()));
                    in_unit.or_else(|| {
                        self.statements
                            .get(name)
                            .map(|s| (s.plan.clone(), s.sql.clone()))
                    })
                };
                if let Some((plan, sql)) = plan {
                    routing.unit.add(&plan, &routing.catalog.current());
                    self.note_shards_of_bind(&plan, &sql, body);
                }
            }
            b'F' => {
                if let Some(routing) = self.routing.as_deref_mut() {
                    routing.unit.add_function_call();
                    // It executes: it opens a deferred transaction, on the transaction's shard
                    // or the default one.
                    routing.shard_fold.add(crate::sharding::unit::Need::Any);
                }
            }
            b'C' if closes_named_statement(frame) => {
                if let Some(routing) = self.routing.as_deref_mut() {
                    routing.retryable = false;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Classifies one statement text (plan cache) into the unit's routing.
    fn route_sql(&mut self, sql: &str) -> Arc<Plan> {
        let plan = self.shared.plans.plan(sql);
        if let Some(routing) = self.routing.as_deref_mut() {
            if let Some(hint) = leading_hint(sql) {
                routing.unit.add_hint(hint);
            }
            routing.unit.add(&plan, &routing.catalog.current());
        }
        plan
    }

    /// Routes the held unit (if any), attaches a server for it and sends it.
    pub(super) async fn dispatch_unit(&mut self) -> Flow {
        if let Some(routing) = self.routing.as_deref_mut().filter(|r| r.unnoted) {
            // Pipelined units of a sharded client: the first one alone, noted now.
            let Some(end) = first_unit_end(&routing.held) else {
                return Flow::Continue;
            };
            let frames = routing.held.split_to(end).freeze();
            routing.held_ready = first_unit_end(&routing.held).is_some();
            routing.unnoted = !routing.held.is_empty();
            let mut at = 0;
            while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
                if let Err(message) = self.note_for_routing(tag, &frames[at..at + total]) {
                    return self.protocol_violation(&message).await;
                }
                at += total;
                if at >= frames.len() {
                    break;
                }
            }
            return self.dispatch(frames).await;
        }
        match self.routing.as_deref_mut() {
            Some(routing) if !routing.held.is_empty() => {
                routing.held_ready = false;
                let frames = std::mem::take(&mut routing.held).freeze();
                self.dispatch(frames).await
            }
            _ => Flow::Continue,
        }
    }

    /// Routes a complete unit (its messages are `frames`), attaches a server for it and sends it.
    async fn dispatch(&mut self, frames: Bytes) -> Flow {
        self.enter_gate().await;
        if self.shared.sharding.is_some() {
            if let Some(flow) = self.cutover_gate(&frames).await {
                return flow;
            }
        }
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.unit_statements.clear();
        }
        let mut deferred_begin = None;
        if self.shared.sharding.is_some() {
            let placement = self.place_unit(&frames);
            let attached = self.server.is_some();
            let Some(routing) = self.routing.as_deref_mut() else {
                return Flow::Continue;
            };
            if let Placement::One { shard, opens } = placement {
                if !attached {
                    routing.shard = shard;
                    if opens {
                        deferred_begin = routing.deferred_begin.take();
                    }
                }
            } else {
                routing.unit = UnitRouter::default();
            }
            match placement {
                Placement::One { .. } if !attached => {}
                Placement::Answered => return Flow::Continue,
                Placement::Aborted => {
                    let mut error = BytesMut::new();
                    codec::error_fields(
                        &mut error,
                        b'E',
                        "ERROR",
                        "25P02",
                        "current transaction is aborted, commands ignored until end of transaction block",
                        None,
                    );
                    self.refuse_with_frame(&error, &frames);
                    return Flow::Continue;
                }
                Placement::Refuse(reason) if self.server.is_some() => {
                    return self.refuse_in_transaction(&reason, &frames)
                }
                Placement::Refuse(reason) => {
                    let had_deferred = routing.deferred_begin.is_some();
                    routing.deferred_unit_failed(had_deferred);
                    let error = RouteError::Refused(ClientError::ShardRouting(reason));
                    self.refuse_unit(&error, &frames);
                    return Flow::Continue;
                }
                Placement::Many(need) => return self.run_multi_shard(need, frames).await,
                Placement::One { .. } => {
                    // The transaction goes on, on its shard.
                    routing.unit = UnitRouter::default();
                    routing.retryable = true;
                    return self.replay(&frames).await;
                }
            }
        }
        let default_read_only = self.params.default_read_only();
        let pending_empty = self.pending.is_empty();
        let Some(routing) = self.routing.as_deref_mut() else {
            return Flow::Continue;
        };
        let mut decision = routing.unit.decide(default_read_only);
        if let Some(begin) = &deferred_begin {
            // The unit opens the client's transaction: the transaction's access mode decides.
            decision = if begin.read_only.unwrap_or(default_read_only)
                && !matches!(decision, Decision::Primary(_))
            {
                Decision::Replica
            } else {
                Decision::Primary(PrimaryReason::ReadWriteTransaction)
            };
        }
        if routing.unit.needs_catalog_refresh() {
            routing.catalog.mark_stale();
        }
        routing.unit = UnitRouter::default();
        let retryable = std::mem::replace(&mut routing.retryable, true)
            && decision == Decision::Replica
            && pending_empty
            && deferred_begin.is_none();
        let mut tried = Vec::new();
        let target = match self.attach_for(decision, &mut tried).await {
            Ok(target) => target,
            Err(error) => {
                if let Some(routing) = self.routing.as_deref_mut() {
                    routing.deferred_unit_failed(deferred_begin.is_some());
                }
                self.refuse_unit(&error, &frames);
                return Flow::Continue;
            }
        };
        if let Some(begin) = deferred_begin {
            if let Err(error) = self.open_deferred_transaction(&begin.sql).await {
                if let Some(routing) = self.routing.as_deref_mut() {
                    routing.deferred_unit_failed(true);
                }
                self.refuse_unit(&error, &frames);
                return Flow::Continue;
            }
        }
        let ops_len = self.inflight_ops.len();
        let client_mark = self.to_client.len();
        if let Some(routing) = self.routing.as_deref_mut() {
            self.shared
                .catalogs
                .refresh_if_due(&routing.catalog, &self.pool);
            routing.attached = Some((target, decision));
            routing.retry = retryable.then(|| Retry {
                frames: frames.clone(),
                decision,
                tried,
                ops_len,
                client_mark,
            });
        }
        self.replay(&frames).await
    }

    /// Runs held messages through the normal path, now that a server is attached.
    pub(super) async fn replay(&mut self, frames: &[u8]) -> Flow {
        let mut at = 0;
        while at < frames.len() {
            // Held frames were checked when they arrived.
            let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) else {
                break;
            };
            let frame = &frames[at..at + total];
            let flow = match tag {
                b'S' => self.on_sync(frame).await,
                b'H' => self.on_flush(frame).await,
                _ => self.process_frame(tag, frame).await,
            };
            if let Flow::End(reason) = flow {
                return Flow::End(reason);
            }
            at += total;
        }
        Flow::Continue
    }

    /// The unit could not be routed: each of its batches (up to a Sync, or a simple query) gets the
    /// error and its `ReadyForQuery`; a batch not yet ended by a Sync is skipped up to it.
    fn refuse_unit(&mut self, error: &RouteError, frames: &[u8]) {
        tracing::warn!(pool = %self.pool.key, %error, "no server for client's statements");
        let mut error_frame = BytesMut::new();
        match error {
            RouteError::Attach(e) => match e.server_frame() {
                Some(frame) => error_frame.extend_from_slice(frame),
                None => e.client_error(&self.pool).write_as_error(&mut error_frame),
            },
            RouteError::Refused(e) => e.write_as_error(&mut error_frame),
        }
        self.refuse_with_frame(&error_frame, frames);
    }

    /// Answers each batch of `frames` with `error_frame` (see [`Session::refuse_unit`]).
    pub(super) fn refuse_with_frame(&mut self, error_frame: &[u8], frames: &[u8]) {
        let status = self.routing.as_ref().map_or(b'I', |r| r.idle_status());
        let mut at = 0;
        let mut open_batch = false;
        while at < frames.len() {
            let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) else {
                break;
            };
            at += total;
            match tag {
                b'Q' | b'S' | b'F' => {
                    self.to_client.extend_from_slice(error_frame);
                    self.pending.drain_synthetic(&mut self.to_client);
                    codec::ready_for_query(&mut self.to_client, status);
                    open_batch = false;
                }
                b'H' => {}
                _ => open_batch = true,
            }
        }
        if open_batch {
            self.to_client.extend_from_slice(error_frame);
            self.ignore_till_sync = true;
        }
    }

    /// Sends the `BEGIN` the proxy answered earlier to the server just attached for the
    /// transaction's first unit.
    async fn open_deferred_transaction(&mut self, begin: &[u8]) -> Result<(), RouteError> {
        let sql = String::from_utf8_lossy(begin);
        let Some(conn) = self.server.as_mut() else {
            return Ok(());
        };
        match Box::pin(conn.run_hidden(&sql)).await {
            Ok(result) => {
                self.status = result.status;
                Ok(())
            }
            Err(e) => {
                // Its state is unknown: close it rather than give it back.
                self.cancel_slot.set(None);
                drop(self.server.take());
                Err(RouteError::Attach(AttachError::Settings(e)))
            }
        }
    }
}

/// Why a unit found no server.
#[derive(Debug, thiserror::Error)]
pub(super) enum RouteError {
    #[error(transparent)]
    Attach(AttachError),
    #[error(transparent)]
    Refused(ClientError),
}
