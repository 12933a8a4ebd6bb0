//! Getting and giving back server connections, and ending a session without leaving a server dirty.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::{EndReason, Flow, Session};
use crate::config::{PoolMode, ServerReset};
use crate::error::ClientError;
use crate::pool::breaker::{BreakerState, FailureKind};
use crate::pool::server::{send_cancel, ServerError};
use crate::pool::{CheckoutError, Pool};
use crate::stats::ClientState;

/// A server connection holding more prepared statements than this is closed rather than reused.
const MAX_PREPARED_PER_SERVER: usize = 2_000;

/// Clean-up queries on a connection being given back must finish within this.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the session could not get a usable server connection.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttachError {
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error("applying session settings failed: {0}")]
    Settings(ServerError),
    #[error("primary {backend} is unavailable: circuit breaker {state:?}")]
    BackendDown {
        backend: String,
        state: BreakerState,
    },
}

impl AttachError {
    /// The backend itself failed (refused, timed out, broke), rather than the pool being full or the
    /// server refusing this login: another server may do.
    pub(super) fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            AttachError::Checkout(CheckoutError::Connect(
                ServerError::Io { .. }
                    | ServerError::ConnectTimeout { .. }
                    | ServerError::Closed { .. }
                    | ServerError::Tls { .. }
            )) | AttachError::Settings(
                ServerError::Io { .. }
                    | ServerError::ConnectTimeout { .. }
                    | ServerError::Closed { .. }
            )
        )
    }

    /// The server's own error, passed to the client verbatim (wrong database, bad setting value, …).
    pub(super) fn server_frame(&self) -> Option<&BytesMut> {
        match self {
            AttachError::Checkout(CheckoutError::Connect(e)) | AttachError::Settings(e) => {
                e.server_frame()
            }
            _ => None,
        }
    }

    pub(super) fn client_error(&self, pool: &Pool) -> ClientError {
        match self {
            AttachError::Checkout(CheckoutError::Timeout { waited, size }) => {
                ClientError::PoolTimeout {
                    pool: pool.key.to_string(),
                    waited_ms: waited.as_millis() as u64,
                    size: *size,
                }
            }
            AttachError::Checkout(CheckoutError::Closed) => ClientError::ShuttingDown,
            AttachError::Checkout(CheckoutError::Connect(e @ ServerError::Tls { .. })) => {
                ClientError::ServerTls {
                    backend: pool.key.addr.to_string(),
                    reason: e.to_string(),
                }
            }
            AttachError::Checkout(CheckoutError::Connect(e)) | AttachError::Settings(e) => {
                ClientError::ServerUnavailable {
                    backend: pool.key.addr.to_string(),
                    reason: e.to_string(),
                }
            }
            AttachError::BackendDown { backend, state } => ClientError::BackendDown {
                role: "primary",
                backend: backend.clone(),
                reason: format!(
                    "circuit breaker {state:?} after repeated failures; retry once it recovers"
                ),
            },
        }
    }
}

impl Session {
    /// Checks out a connection to the primary (no read/write splitting for this client).
    pub(super) async fn attach_server(&mut self) -> Result<(), AttachError> {
        self.enter_gate().await;
        match self.attach_primary().await {
            // A reload replaced this primary after the session took its pools: once more with the
            // new ones.
            Err(AttachError::Checkout(CheckoutError::Closed))
                if !self.shared.shutdown.is_cancelled() && self.server.is_none() =>
            {
                self.refresh_pools_now();
                self.attach_primary().await
            }
            other => other,
        }
    }

    async fn attach_primary(&mut self) -> Result<(), AttachError> {
        let backend = self.pool.backend();
        if !backend.breaker.is_closed() {
            return Err(AttachError::BackendDown {
                backend: backend.addr.to_string(),
                state: backend.breaker.state(),
            });
        }
        let pool = self.pool.clone();
        self.attach_to(&pool).await
    }

    /// Checks out a server connection from `pool` and brings its session settings in line with this
    /// client's.
    pub(super) async fn attach_to(&mut self, pool: &Arc<Pool>) -> Result<(), AttachError> {
        self.enter_gate().await;
        self.meter.set_state(ClientState::Waiting);
        // Boxed (here and below): rare, deep futures kept out of every idle session's state.
        let checked_out = Box::pin(pool.checkout_for(self.meter.client_id())).await;
        let mut conn = match checked_out {
            Ok(conn) => conn,
            Err(e) => {
                self.meter.set_state(ClientState::Idle);
                return Err(e.into());
            }
        };
        self.meter.set_state(ClientState::Active);
        self.meter.attached();
        if let Some(tracker) = &conn.tracker {
            self.meter
                .listing
                .entry
                .server_id
                .store(tracker.entry.id, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(sql) = self.params.sync_sql(&conn.applied) {
            match Box::pin(conn.run_hidden(&sql)).await {
                Ok(_) => self.params.mark_applied(&mut conn.applied),
                Err(e) => return Err(AttachError::Settings(e)),
            }
        }
        self.cancel_slot.set(Some(conn.cancel_key()));
        self.status = b'I';
        self.unsynced = false;
        self.server = Some(conn);
        Ok(())
    }

    /// Gives the (idle, clean) server connection back to its pool.
    pub(super) fn release_server(&mut self) {
        let Some(conn) = self.server.take() else {
            return;
        };
        let cancels = self.cancel_slot.detach();
        self.meter.set_state(ClientState::Idle);
        self.meter
            .listing
            .entry
            .server_id
            .store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.on_release();
        }
        if self.server_prepared_unknown
            || self.server_dirty
            || conn.prepared.len() > MAX_PREPARED_PER_SERVER
        {
            drop(conn);
        } else if cancels.none() {
            conn.release();
        } else {
            // A cancel of this client's query is on its way to the server: the next client gets
            // the connection only once it has landed (or never, if it does not).
            tokio::spawn(async move {
                if cancels.wait().await {
                    conn.release();
                }
            });
        }
        self.server_prepared_unknown = false;
        self.server_dirty = false;
        self.copy_in = false;
        self.server_skip = 0;
        if self.server_buf.is_empty() {
            self.server_buf = BytesMut::new();
        }
    }

    /// The attached server ended its connection while idle: it is closed (and counted as a
    /// failure of its backend if `backend_failed`); the client keeps its session.
    pub(super) fn drop_idle_server(&mut self, backend_failed: bool) {
        if let Some(conn) = self.server.take() {
            if backend_failed {
                conn.pool().backend().record_failure(FailureKind::Broken);
            }
        }
        self.cancel_slot.set(None);
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.on_release();
        }
        self.server_skip = 0;
        self.copy_in = false;
    }

    /// The server connection broke: the client's session cannot go on.
    pub(super) async fn server_lost(&mut self, what: &str) -> Flow {
        let backend = match &self.server {
            Some(conn) => conn.pool().key.addr.to_string(),
            None => self.pool.key.addr.to_string(),
        };
        tracing::warn!(%backend, what, "server connection lost");
        if let Some(flow) = self.retry_read().await {
            return flow;
        }
        if let Some(conn) = self.server.take() {
            conn.pool().backend().record_failure(FailureKind::Broken);
        }
        self.cancel_slot.set(None);
        let mut out = BytesMut::new();
        ClientError::ServerLost {
            backend,
            reason: what.to_string(),
        }
        .write(&mut out);
        let _ = self.client.write_all(&out).await;
        Flow::End(EndReason::ServerLost)
    }

    /// Ends the session: the server connection goes back clean or is closed; never handed on dirty.
    pub(super) async fn goodbye(&mut self, reason: EndReason) {
        self.shared.cancels.unregister(self.pid, self.secret);
        if reason == EndReason::Shutdown {
            let mut out = BytesMut::new();
            ClientError::ShuttingDown.write(&mut out);
            let _ = self.client.write_all(&out).await;
        }
        let _ = self.client.shutdown().await;
        let Some(mut conn) = self.server.take() else {
            return;
        };
        if !self.pending.is_empty() || self.server_skip > 0 || !self.server_buf.is_empty() {
            self.cancel_slot.set(None);
            // A query is still running: stop it and close; Postgres rolls back on disconnect.
            let key = conn.cancel_key();
            drop(conn);
            let _ = tokio::time::timeout(CLEANUP_TIMEOUT, send_cancel(&key)).await;
            return;
        }
        if self.unsynced {
            // A unit cut off before its Sync: the server may skip everything up to a Sync, or hold
            // an implicit transaction that a Sync would commit. Closing rolls it back.
            self.cancel_slot.set(None);
            return;
        }
        // A session-mode client's connection, or one a client was pinned to, holds its state; so may
        // one left mid-transaction (advisory locks, SQL PREPARE and LOAD outlive a ROLLBACK).
        let reset = self.mode == PoolMode::Session || self.pinned || self.status != b'I';
        if reset && self.shared.config().pool.server_reset == ServerReset::Close {
            return; // dropping closes the connection: the next client gets a new backend
        }
        let mut cleanup = Vec::new();
        if self.status != b'I' {
            cleanup.push("ROLLBACK");
        }
        if reset {
            cleanup.push("DISCARD ALL");
        }
        for sql in cleanup {
            let done = tokio::time::timeout(CLEANUP_TIMEOUT, conn.run_hidden(sql)).await;
            match done {
                Ok(Ok(result)) if result.status == b'I' => {}
                _ => return, // dropping closes the connection
            }
        }
        if reset {
            conn.applied.clear();
            conn.prepared.clear();
        }
        self.server = Some(conn);
        self.release_server();
    }
}
