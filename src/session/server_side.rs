//! Frames from the server: forwarded to the client as they come, in as few writes as possible. Only
//! headers are read, except for the few frames whose contents matter (`ReadyForQuery`, errors,
//! `ParameterStatus`); rows stream through without being decoded or buffered whole.

use bytes::{Buf, BytesMut};

use super::pending::{Action, Event};
use super::state;
use super::{EndReason, Flow, Session};
use crate::config::PoolMode;
use crate::pool::breaker::FailureKind;
use crate::protocol::codec;

/// Read size from servers.
const READ_CHUNK: usize = 16 * 1024;

/// Postgres never sends frames above 1 GB.
const MAX_SERVER_FRAME: usize = 1 << 30;

/// Whether a server's FATAL means the server itself is failing (a crash of another backend),
/// rather than only this session ending: terminated by an administrator (57P01), a session or
/// idle timeout of the server's own settings (57P05, 25P03), and the like.
fn fatal_is_backend_failure(code: &str) -> bool {
    code == "57P02"
}

/// Frames whose body the proxy reads; they are small, so they are waited for whole.
fn needs_body(tag: u8) -> bool {
    matches!(tag, b'Z' | b'E' | b'S' | b'G')
}

impl Session {
    pub(super) async fn on_server_readable(&mut self) -> Flow {
        let Some(server) = self.server.as_mut() else {
            return Flow::Continue;
        };
        if self.server_buf.capacity() - self.server_buf.len() < 1024 {
            self.server_buf.reserve(READ_CHUNK);
        }
        // A short read does not mean the socket is drained for the reactor: data may arrive just
        // after it. Readiness is cleared only by a read that returns WouldBlock (race-free).
        match server.stream.try_read_buf(&mut self.server_buf) {
            Ok(0) => return self.server_lost("server closed the connection").await,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Flow::Continue,
            Err(e) => return self.server_lost(&e.to_string()).await,
        }
        let mut buf = std::mem::take(&mut self.server_buf);
        let flow = self.process_server_bytes(&mut buf).await;
        if buf.is_empty() && self.server.is_none() {
            buf = BytesMut::new();
        }
        self.server_buf = buf;
        match flow {
            Flow::Continue => self.resume_held().await,
            end => end,
        }
    }

    /// Handles the complete frames (and streamable parts) in `buf`, leaving the rest for the next read.
    async fn process_server_bytes(&mut self, buf: &mut BytesMut) -> Flow {
        let mut out = std::mem::take(&mut self.to_client);
        let mut events = Vec::new();
        let mut pos = 0;
        let mut forward_from = 0;
        let mut release = false;
        while pos < buf.len() {
            if self.server_skip > 0 {
                let n = self.server_skip.min(buf.len() - pos);
                pos += n;
                self.server_skip -= n;
                continue;
            }
            let (tag, total) = match codec::peek_header(&buf[pos..], MAX_SERVER_FRAME) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => {
                    self.to_client = out;
                    buf.clear();
                    return self
                        .server_lost(&format!("invalid message from server: {e}"))
                        .await;
                }
            };
            let available = buf.len() - pos;
            if available < total {
                if needs_body(tag) {
                    break;
                }
                // Stream the start of a large frame now; the rest passes through as it arrives.
                self.pending.on_frame(tag, &[], &mut events);
                self.server_skip = total - available;
                pos = buf.len();
                continue;
            }
            let body = &buf[pos + codec::HEADER_LEN..pos + total];
            if tag == b'E'
                && codec::error_is_fatal(body)
                && self.routing.as_ref().is_some_and(|r| r.can_retry())
            {
                // The server is going away (crash, shutdown) before the client saw anything of
                // this read: send it elsewhere rather than pass the error on.
                let (code, message) = codec::parse_error_fields(body);
                if !fatal_is_backend_failure(&code) {
                    // Only this session ended (terminated, timed out): no mark against the server.
                    drop(self.server.take());
                }
                self.to_client = out;
                buf.clear();
                return self.server_lost(&message).await;
            }
            if tag == b'E'
                && codec::error_is_fatal(body)
                && self.pending.is_empty()
                && self.status == b'I'
                && self.mode == PoolMode::Transaction
            {
                // The server is going away while this client owes it nothing (its FATAL came
                // after the last ReadyForQuery): not the client's business. Drop the connection;
                // the next unit gets another.
                let (code, message) = codec::parse_error_fields(body);
                tracing::info!(%message, "server ended an idle connection");
                out.extend_from_slice(&buf[forward_from..pos]);
                buf.clear();
                let write = self.client.write_all(&out).await;
                out.clear();
                self.to_client = out;
                self.drop_idle_server(fatal_is_backend_failure(&code));
                return match write {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::End(EndReason::ClientGone),
                };
            }
            if tag == b'E' {
                let (code, _) = codec::parse_error_fields(body);
                self.shared.stats.count_error(code.as_bytes());
                if codec::error_is_fatal(body) {
                    // The server ends this session with its own error: the client gets that one
                    // error, as from Postgres directly, and the connection is closed.
                    out.extend_from_slice(&buf[forward_from..pos + total]);
                    buf.clear();
                    return self.server_fatal(out, &code).await;
                }
            }
            let action = self.pending.on_frame(tag, body, &mut events);
            match tag {
                b'S' => {
                    if let Some(server) = self.server.as_mut() {
                        server.note_parameter_status(body);
                    }
                    state::note_reported_change(body, &mut self.inflight_ops);
                }
                b'Z' => self.status = body.first().copied().unwrap_or(b'I'),
                _ => {}
            }
            let mut client_status = self.status;
            if tag == b'Z' && self.status == b'I' {
                // A unit that only prepared or described ran outside the client's deferred
                // transaction: the client is still in it.
                let status = self.routing.as_ref().map_or(b'I', |r| r.idle_status());
                if let Some(byte) = buf.get_mut(pos + codec::HEADER_LEN) {
                    *byte = status;
                }
                client_status = status;
            }
            if tag == b'Z' {
                // One request per ReadyForQuery (pipelined ones each count); the transaction ends
                // when the client is told it is idle.
                self.request_done(None, client_status, !self.pending.is_empty());
            }
            match action {
                Action::Forward => {}
                Action::Swallow => {
                    out.extend_from_slice(&buf[forward_from..pos]);
                    forward_from = pos + total;
                }
                Action::Replace(frame) => {
                    out.extend_from_slice(&buf[forward_from..pos]);
                    out.extend_from_slice(&frame);
                    forward_from = pos + total;
                }
            }
            let frame_start = pos;
            pos += total;
            self.apply_events(&mut events);
            if self.pending.has_synthetic_front() {
                out.extend_from_slice(&buf[forward_from..pos]);
                forward_from = pos;
                self.pending.drain_synthetic(&mut out);
            }
            if tag == b'Z' && self.pending.is_empty() {
                self.unsynced = false;
                // The client's query is over: a late cancel must not land on the hidden settings
                // read-back or resync below.
                self.cancel_slot.set_busy(false);
                if let Some(routing) = self.routing.as_deref_mut() {
                    routing.on_ready();
                }
                if self.end_of_request().await {
                    // Settings went back to server defaults: restore the client's before it sees Z.
                    out.extend_from_slice(&buf[forward_from..frame_start]);
                    forward_from = frame_start;
                    if let Err(e) = Box::pin(self.resync(&mut out)).await {
                        self.to_client = out;
                        buf.clear();
                        return self.server_lost(&e).await;
                    }
                }
                // A client pinned to its server (LISTEN, temp tables, SQL PREPARE, …) keeps it.
                release = self.mode == PoolMode::Transaction && self.status == b'I' && !self.pinned;
            }
        }
        if pos > 0 || !out.is_empty() {
            if let Some(routing) = self.routing.as_deref_mut() {
                routing.on_client_bytes();
            }
        }
        if self.pending.is_empty() {
            // Before the client sees the answer: a cancel it sends from now on has nothing to stop.
            self.cancel_slot.set_busy(false);
        }
        let write = if out.is_empty() && forward_from == 0 {
            self.meter.sent(pos);
            self.client.write_all(&buf[..pos]).await
        } else {
            out.extend_from_slice(&buf[forward_from..pos]);
            self.meter.sent(out.len());
            let result = self.client.write_all(&out).await;
            out.clear();
            result
        };
        buf.advance(pos);
        self.to_client = out;
        if write.is_err() {
            return Flow::End(EndReason::ClientGone);
        }
        if release && buf.is_empty() && self.server_skip == 0 && self.pending.is_empty() {
            self.release_server();
        }
        Flow::Continue
    }

    /// Forwards `out` (ending with the server's FATAL) and ends the session; the server is closed,
    /// and counted against its backend only if the FATAL says the server itself failed.
    async fn server_fatal(&mut self, mut out: BytesMut, code: &str) -> Flow {
        let backend_failed = fatal_is_backend_failure(code);
        if let Some(conn) = self.server.take() {
            tracing::info!(backend = %conn.pool().key.addr, code, "server ended the session");
            if backend_failed {
                conn.pool().backend().record_failure(FailureKind::Broken);
            }
        }
        self.cancel_slot.set(None);
        self.meter.sent(out.len());
        let _ = self.client.write_all(&out).await;
        out.clear();
        self.to_client = out;
        Flow::End(EndReason::ServerLost)
    }

    fn apply_events(&mut self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            match event {
                Event::Error => {
                    self.saw_error = true;
                    self.copy_in = false;
                }
                Event::CopyIn => self.copy_in = true,
                Event::Parsed(track) => self.pool.mark_validated(&track.statement.text_id),
                Event::CloseSkipped(name) => {
                    if let Some(server) = self.server.as_mut() {
                        server.prepared.insert(name);
                    }
                }
                Event::ParseFailed(track) => {
                    if let Some(server) = self.server.as_mut() {
                        server.prepared.remove(&track.statement.server_name);
                    }
                    if let Some(name) = &track.client_name {
                        if !track.rename_error {
                            self.statements.remove_if(name, &track.statement);
                        }
                    }
                }
            }
        }
    }

    /// A request finished (`ReadyForQuery`, nothing more owed). Commits or drops session changes;
    /// returns true when the server's settings must be brought back to the client's.
    async fn end_of_request(&mut self) -> bool {
        if self.status != b'I' {
            return false;
        }
        let ops = std::mem::take(&mut self.inflight_ops);
        let failed = std::mem::replace(&mut self.saw_error, false);
        if ops.is_empty() {
            return false;
        }
        self.note_untracked(&ops);
        if self.mode == PoolMode::Transaction && state::needs_verify(&ops, failed) {
            return Box::pin(self.verify_settings(&ops)).await;
        }
        if failed {
            return false;
        }
        match self.server.as_mut() {
            Some(server) => self.params.commit(&ops, &mut server.applied),
            None => false,
        }
    }

    /// Re-applies the client's settings; the `ParameterStatus` this causes goes to the client.
    async fn resync(&mut self, out: &mut BytesMut) -> Result<(), String> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let Some(sql) = self.params.sync_sql(&server.applied) else {
            return Ok(());
        };
        let result = Box::pin(server.run_hidden(&sql))
            .await
            .map_err(|e| e.to_string())?;
        self.params.mark_applied(&mut server.applied);
        out.extend_from_slice(&result.parameter_status);
        Ok(())
    }
}
