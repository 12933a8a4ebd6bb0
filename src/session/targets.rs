//! Which server of the current shard a unit gets: the primary, or the nearest replica fresh enough
//! for this client's own writes (read-your-writes), moving on when one fails; and the one retry of
//! a read whose server failed before answering.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::lifecycle::AttachError;
use super::routing::{RouteError, Target};
use super::{Flow, Session};
use crate::config::{Consistency, NoReplica};
use crate::error::ClientError;
use crate::pool::balancer::{choose_replica, ReadRequest};
use crate::pool::breaker::FailureKind;
use crate::pool::{CheckoutError, Pool};
use crate::router::plan::Decision;

/// What a read may see, given the client's own writes.
enum Freshness {
    Any,
    /// Only replicas that replayed the primary's WAL up to here.
    AtLeast(u64),
    /// The client wrote so recently that no replica is known to have it.
    PrimaryOnly,
}

impl Session {
    /// Attaches a server for `decision`, moving on to another replica when one fails to connect.
    pub(super) async fn attach_for(
        &mut self,
        decision: Decision,
        tried: &mut Vec<usize>,
    ) -> Result<Target, RouteError> {
        let mut refreshed = false;
        loop {
            let target = self.choose_target(decision, tried)?;
            let pool = self.target_pool(target);
            match self.attach_to(&pool).await {
                Ok(()) => return Ok(target),
                Err(e) => match target {
                    // A closed pool: a reload removed this replica after the session picked up
                    // its pools; another replica (or the primary) takes the read.
                    Target::Replica(i)
                        if e.is_backend_failure()
                            || matches!(e, AttachError::Checkout(CheckoutError::Closed)) =>
                    {
                        tracing::info!(replica = %pool.key.addr, error = %e, "replica failed; trying another");
                        tried.push(i);
                    }
                    // The primary's pool closed: a reload replaced the primary after the session
                    // took its pools. Once more with the new ones.
                    Target::Primary
                        if !refreshed
                            && self.server.is_none()
                            && !self.shared.shutdown.is_cancelled()
                            && matches!(e, AttachError::Checkout(CheckoutError::Closed)) =>
                    {
                        refreshed = true;
                        self.refresh_pools_now();
                    }
                    _ => return Err(RouteError::Attach(e)),
                },
            }
        }
    }

    /// This client's pool for `target` on the current shard.
    pub(super) fn target_pool(&self, target: Target) -> Arc<Pool> {
        let shard = self.routing.as_ref().and_then(|r| r.shards.get(r.shard));
        let pool = match (shard, target) {
            (Some(shard), Target::Primary) => Some(&shard.primary),
            (Some(shard), Target::Replica(i)) => shard.replicas.get(i),
            (None, _) => None,
        };
        pool.unwrap_or(&self.pool).clone()
    }

    /// The current shard's index (0 when not sharding).
    fn shard_index(&self) -> usize {
        self.routing.as_ref().map_or(0, |r| r.shard)
    }

    pub(super) fn choose_target(
        &mut self,
        decision: Decision,
        tried: &[usize],
    ) -> Result<Target, RouteError> {
        let primary_up = self
            .target_pool(Target::Primary)
            .backend()
            .breaker
            .is_closed();
        match decision {
            Decision::Primary(_) => return self.primary_target(None),
            // Any server will do: the primary while it is up, else a replica.
            Decision::Neutral if primary_up => return Ok(Target::Primary),
            Decision::Neutral | Decision::Replica => {}
        }
        let config = self.shared.config();
        let routing_config = &config.routing;
        let Some(topology) = self.routing.as_ref().map(|r| r.topology.clone()) else {
            return self.primary_target(None);
        };
        let Some(shard) = topology.shards.get(self.shard_index()) else {
            return self.primary_target(None);
        };
        if !routing_config.read_write_split || shard.replicas.is_empty() {
            return self.primary_target(None);
        }
        if decision == Decision::Replica && self.params.serializable_default() {
            return self.primary_target(Some(
                "this session's transactions are SERIALIZABLE, which hot standbys refuse",
            ));
        }
        let freshness = match decision {
            Decision::Neutral => Freshness::Any,
            _ => self.freshness(),
        };
        let min_lsn = match freshness {
            Freshness::Any => None,
            Freshness::AtLeast(lsn) => Some(lsn),
            Freshness::PrimaryOnly => {
                return self.primary_target(Some(
                    "this session's last write is not yet known to be on any replica",
                ))
            }
        };
        let request = ReadRequest {
            min_lsn,
            exclude: tried,
            zone: routing_config.zone.as_deref(),
            max_lag_bytes: routing_config.max_replica_lag_bytes,
            max_lag: (routing_config.max_replica_lag_ms > 0)
                .then(|| std::time::Duration::from_millis(routing_config.max_replica_lag_ms)),
        };
        let replicas = self
            .routing
            .as_ref()
            .and_then(|r| r.shards.get(r.shard))
            .map(|s| &s.replicas[..])
            .unwrap_or(&[]);
        let chosen = choose_replica(&shard.replicas, &request, Instant::now(), |i| {
            replicas.get(i).map_or(usize::MAX, |p| p.in_use())
        });
        match (chosen, routing_config.no_replica) {
            (Some(i), _) => Ok(Target::Replica(i)),
            (None, NoReplica::Primary) => self.primary_target(Some("no replica qualifies")),
            (None, NoReplica::Fail) => Err(RouteError::Refused(ClientError::NoReplica {
                reason: format!(
                    "none of the {} replica(s) is healthy and fresh enough, and routing.no_replica = \"fail\"",
                    shard.replicas.len()
                ),
            })),
        }
    }

    /// The primary, unless its breaker is open (then the client is told at once, not after a timeout).
    fn primary_target(&self, why_primary: Option<&str>) -> Result<Target, RouteError> {
        let pool = self.target_pool(Target::Primary);
        let backend = pool.backend();
        if backend.breaker.is_closed() {
            return Ok(Target::Primary);
        }
        let mut reason = format!(
            "circuit breaker {:?} after repeated failures (last: {:?}); statements that need the primary are refused until it recovers",
            backend.breaker.state(),
            backend.breaker.last_failure()
        );
        if let Some(why) = why_primary {
            reason = format!("{why}, and the primary's {reason}");
        }
        Err(RouteError::Refused(ClientError::BackendDown {
            role: "primary",
            backend: backend.addr.to_string(),
            reason,
        }))
    }

    /// What this client's next read may see (read-your-writes).
    fn freshness(&mut self) -> Freshness {
        if self.shared.config().routing.consistency == Consistency::Eventual {
            return Freshness::Any;
        }
        let Some(routing) = self.routing.as_deref_mut() else {
            return Freshness::Any;
        };
        let topology = routing.topology.clone();
        let (Some(shard), Some(write)) = (
            topology.shards.get(routing.shard),
            routing.writes.get_mut(routing.shard),
        ) else {
            return Freshness::Any;
        };
        let Some(wrote_at) = write.at else {
            return Freshness::Any;
        };
        if let Some(lsn) = write.min_lsn {
            return Freshness::AtLeast(lsn);
        }
        match shard.primary_lsn.after(wrote_at) {
            Some(lsn) => {
                write.min_lsn = Some(lsn);
                Freshness::AtLeast(lsn)
            }
            None => Freshness::PrimaryOnly,
        }
    }

    /// The server of a read broke before any byte of its answer reached the client: send the read
    /// once more, to another server. `None` when that is not possible (the caller reports the loss).
    pub(super) async fn retry_read(&mut self) -> Option<Flow> {
        let routing = self.routing.as_deref_mut()?;
        let mut retry = routing.retry.take()?;
        if let Some((Target::Replica(i), _)) = routing.attached.take() {
            retry.tried.push(i);
        }
        if let Some(conn) = self.server.take() {
            conn.pool().backend().record_failure(FailureKind::Broken);
        }
        self.cancel_slot.set(None);
        self.pending = Default::default();
        self.server_skip = 0;
        self.server_buf = BytesMut::new();
        self.copy_in = false;
        self.saw_error = false;
        self.status = b'I';
        self.inflight_ops.truncate(retry.ops_len);
        self.to_client.truncate(retry.client_mark);
        let target = match Box::pin(self.attach_for(retry.decision, &mut retry.tried)).await {
            Ok(target) => target,
            Err(error) => {
                tracing::warn!(%error, "retrying a read found no server");
                return None;
            }
        };
        tracing::info!(?target, "read retried on another server");
        self.shared
            .reads_retried
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.attached = Some((target, retry.decision));
        }
        let flow = Box::pin(self.replay(&retry.frames)).await;
        if let Flow::End(reason) = flow {
            return Some(Flow::End(reason));
        }
        Some(Box::pin(self.flush()).await)
    }
}
