//! Frames from the client: split with a length cap, prepared-statement names rewritten, session
//! changes noted, then batched to the server in one write.

use bytes::{Bytes, BytesMut};

use super::pending::{Expect, ParseTrack};
use super::prepared::{reads_prepared_statements, rename, sql_prepares, PreparedStatement};
use super::routing::closes_named_statement;
use super::{EndReason, Flow, Session};
use crate::error::ClientError;
use crate::protocol::codec::{self, BodyReader};
use crate::router::session_ops::{session_ops, SessionOp};
use std::sync::Arc;

/// Read buffer size when data arrives; given back when the client goes idle.
const READ_CHUNK: usize = 8192;

const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";

/// A server connection holding this many statements has those of other clients closed before
/// another is prepared (below the count at which a connection is closed on release).
const CLOSE_OTHERS_AT: usize = 1_000;
const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";

impl Session {
    pub(super) async fn on_client_readable(&mut self) -> Flow {
        if self.client_buf.capacity() - self.client_buf.len() < 1024 {
            self.client_buf.reserve(READ_CHUNK);
        }
        // Readiness is cleared only by a read that returns WouldBlock: clearing it after a short
        // read could lose a wake-up for data that arrived meanwhile (a hang).
        match self.client.try_read_buf(&mut self.client_buf) {
            Ok(0) => return Flow::End(EndReason::ClientGone),
            Ok(n) => self.meter.received(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Flow::Continue,
            Err(_) => return Flow::End(EndReason::ClientGone),
        }
        loop {
            let (tag, total) = match codec::peek_header(&self.client_buf, self.max_message) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => {
                    let end = self
                        .protocol_violation(&format!("invalid message from client: {e}"))
                        .await;
                    self.flush().await;
                    return end;
                }
            };
            if self.client_buf.len() < total {
                self.client_buf.reserve(total - self.client_buf.len());
                break;
            }
            let frame = self.client_buf.split_to(total);
            match self.on_client_frame(tag, frame).await {
                Flow::Continue => {}
                end => {
                    self.flush().await;
                    return end;
                }
            }
        }
        if self.client_buf.is_empty() {
            self.client_buf = BytesMut::new();
        }
        self.flush().await
    }

    /// Sends what was batched: to the server first (so its answers can start), then proxy-made replies.
    pub(super) async fn flush(&mut self) -> Flow {
        if !self.to_server.is_empty() {
            if let Some(server) = self.server.as_mut() {
                if !self.pending.is_empty() {
                    self.cancel_slot.set_busy(true);
                }
                if let Err(e) = server.stream.write_all(&self.to_server).await {
                    self.to_server.clear();
                    return self.server_lost(&e.to_string()).await;
                }
            }
            self.to_server.clear();
        }
        if !self.to_client.is_empty() {
            if let Some(routing) = self.routing.as_deref_mut() {
                routing.on_client_bytes();
            }
            self.note_proxy_replies();
            self.meter.sent(self.to_client.len());
            let result = self.client.write_all(&self.to_client).await;
            self.to_client.clear();
            if result.is_err() {
                return Flow::End(EndReason::ClientGone);
            }
        }
        if self.to_client.capacity() > READ_CHUNK {
            self.to_client = BytesMut::new();
        }
        Flow::Continue
    }

    pub(super) async fn protocol_violation(&mut self, message: &str) -> Flow {
        tracing::info!(message, "closing client after protocol violation");
        ClientError::ProtocolViolation(message.to_string()).write(&mut self.to_client);
        Flow::End(EndReason::ProtocolError)
    }

    async fn on_client_frame(&mut self, tag: u8, frame: BytesMut) -> Flow {
        if self.ignore_till_sync && tag != b'S' {
            return Flow::Continue;
        }
        match tag {
            b'X' => return Flow::End(EndReason::ClientTerminated),
            b'S' | b'H' | b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'F' | b'd' | b'c' | b'f' => {}
            other => {
                return self
                    .protocol_violation(&format!("invalid frontend message type {other}"))
                    .await
            }
        }
        if self.copy_split.is_some() {
            return self.on_copy_split_frame(tag, &frame).await;
        }
        if self.should_hold(tag) {
            return self.hold(tag, frame).await;
        }
        match tag {
            b'S' => return self.on_sync(&frame).await,
            b'H' => return self.on_flush(&frame).await,
            _ => {}
        }
        if self.server.is_none() && !matches!(tag, b'd' | b'c' | b'f') {
            if self.rename_statements && tag == b'C' && closes_named_statement(&frame) {
                return self.on_close_statement(&frame);
            }
            if tag == b'P' && self.parse_without_server(&frame) {
                return Flow::Continue;
            }
            if let Err(error) = self.attach_server().await {
                return self.refuse_request(tag, error).await;
            }
        }
        self.process_frame(tag, &frame).await
    }

    /// Handles one client message with a server attached (or, for COPY data, on whatever is there).
    pub(super) async fn process_frame(&mut self, tag: u8, frame: &[u8]) -> Flow {
        if self.rename_statements && tag == b'C' && closes_named_statement(frame) {
            return self.on_close_statement(frame);
        }
        if self.server.is_none() && !matches!(tag, b'd' | b'c' | b'f') {
            // Only reachable through a replayed unit whose server was lost meanwhile.
            return Flow::Continue;
        }
        if matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C') {
            self.unsynced = true;
        }
        let result = match tag {
            b'Q' => self.on_query(frame),
            b'P' => self.on_parse(frame),
            b'B' => self.on_bind(frame),
            b'D' => self.on_describe(frame),
            b'E' => {
                self.note_ops(self.portal_ops.clone());
                self.forward(frame, Some(Expect::Execute));
                Ok(())
            }
            b'C' => {
                self.forward(frame, Some(Expect::Close));
                Ok(())
            }
            b'F' => {
                self.forward(frame, Some(Expect::UntilReady));
                self.unit_sent();
                Ok(())
            }
            _ => {
                if matches!(tag, b'c' | b'f') {
                    self.copy_in = false;
                }
                if self.server.is_some() {
                    self.forward(frame, None);
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(message) => self.protocol_violation(&message).await,
        }
    }

    /// Sends a simple query made by the proxy in place of the client's unit (its answer goes to
    /// the client).
    pub(super) fn forward_query_frame(&mut self, frame: &[u8], quiet: bool) {
        let expect = if quiet {
            Expect::QuietUntilReady
        } else {
            Expect::UntilReady
        };
        self.forward(frame, Some(expect));
        self.unit_sent();
    }

    fn forward(&mut self, frame: &[u8], expect: Option<Expect>) {
        self.to_server.extend_from_slice(frame);
        if let Some(expect) = expect {
            self.pending.push(expect);
        }
    }

    /// No server could be had: the client gets an error now and its batch is skipped up to `Sync`.
    async fn refuse_request(&mut self, tag: u8, error: super::lifecycle::AttachError) -> Flow {
        tracing::warn!(pool = %self.pool.key, error = %error, "no server connection for client");
        match error.server_frame() {
            Some(frame) => self.to_client.extend_from_slice(frame),
            None => error
                .client_error(&self.pool)
                .write_as_error(&mut self.to_client),
        }
        if tag == b'Q' {
            codec::ready_for_query(&mut self.to_client, b'I');
        } else {
            self.ignore_till_sync = true;
        }
        Flow::Continue
    }

    pub(super) async fn on_sync(&mut self, frame: &[u8]) -> Flow {
        self.ignore_till_sync = false;
        if self.abort_instead_of_sync() {
            return Flow::Continue;
        }
        if self.copy_in {
            // Ignored by a server in COPY FROM STDIN; no ReadyForQuery will answer it.
            self.forward(frame, None);
        } else if self.server.is_some() {
            self.forward(frame, Some(Expect::UntilReady));
            self.unit_sent();
        } else {
            // Nothing reached a server since the last ReadyForQuery: answer for it.
            self.pending.drain_synthetic(&mut self.to_client);
            let status = self.routing.as_ref().map_or(b'I', |r| r.idle_status());
            codec::ready_for_query(&mut self.to_client, status);
        }
        Flow::Continue
    }

    /// `Flush`: the server is asked to send what it has (a held unit was routed before this).
    pub(super) async fn on_flush(&mut self, frame: &[u8]) -> Flow {
        if self.server.is_some() {
            self.to_server.extend_from_slice(frame);
        }
        Flow::Continue
    }

    fn on_query(&mut self, frame: &[u8]) -> Result<(), String> {
        let mut reader = BodyReader::new(&frame[codec::HEADER_LEN..]);
        let sql = reader
            .cstr_text()
            .map_err(|e| format!("invalid Query message: {e}"))?;
        if self.meter.log_statements {
            tracing::info!(
                client = self.meter.client_id(),
                sql = &*sql,
                "statement (log.statements)"
            );
        }
        let ops = session_ops(&sql);
        self.note_ops(ops);
        self.note_statement_text(&sql);
        self.forward(frame, Some(Expect::UntilReady));
        self.unit_sent();
        Ok(())
    }

    fn note_ops(&mut self, ops: Vec<SessionOp>) {
        if ops
            .iter()
            .any(|op| matches!(op, SessionOp::DiscardAll | SessionOp::DeallocateAll))
        {
            // Every statement on the server goes, the client's own included (as on Postgres);
            // what is parsed after this in the same transaction must really be parsed again.
            self.server_prepared_unknown = true;
            if let Some(server) = self.server.as_mut() {
                server.prepared.clear();
            }
            self.statements.clear();
        }
        self.inflight_ops.extend(ops);
    }

    /// A look at `pg_prepared_statements` first closes the statements of other clients on this
    /// connection. (SQL `PREPARE` pins the client to its server: see `SessionOp::Pin`.)
    fn note_statement_text(&mut self, sql: &str) {
        if self.rename_statements && reads_prepared_statements(sql) {
            self.close_foreign_statements();
        }
    }

    /// Closes, unseen by the client, the statements on its server connection that are not its own.
    fn close_foreign_statements(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let mine = self.statements.server_names();
        let foreign: Vec<Arc<str>> = server
            .prepared
            .iter()
            .filter(|name| !mine.contains(&***name))
            .cloned()
            .collect();
        for name in foreign {
            server.prepared.remove(&name);
            let at = codec::begin(&mut self.to_server, b'C');
            self.to_server.extend_from_slice(b"S");
            codec::put_cstr(&mut self.to_server, name.as_bytes());
            codec::finish(&mut self.to_server, at);
            self.pending.push(Expect::CloseHidden(name));
        }
    }

    fn on_parse(&mut self, frame: &[u8]) -> Result<(), String> {
        let body = &frame[codec::HEADER_LEN..];
        let mut reader = BodyReader::new(body);
        let name = reader
            .cstr()
            .map_err(|e| format!("invalid Parse message: {e}"))?;
        let rest_at = reader.position();
        let sql = reader
            .cstr_text()
            .map_err(|e| format!("invalid Parse message: {e}"))?;
        if self.meter.log_statements {
            tracing::info!(
                client = self.meter.client_id(),
                sql = &*sql,
                "prepared statement (log.statements)"
            );
        }
        self.note_statement_text(&sql);
        if name.is_empty() || !self.rename_statements {
            self.unnamed_ops = session_ops(&sql);
            self.forward(
                frame,
                Some(Expect::Parse {
                    swallow: false,
                    track: None,
                }),
            );
            return Ok(());
        }
        let client_name = Bytes::copy_from_slice(name);
        if let Some(existing) = self.statements.get(&client_name).cloned() {
            // Postgres refuses a name in use; let the server say so, then put the client's name back.
            self.ensure_prepared(&existing);
            let at = codec::HEADER_LEN;
            let renamed = rename(frame, at, at + client_name.len(), &existing.server_name);
            self.to_server.extend_from_slice(&renamed);
            self.pending.push(Expect::Parse {
                swallow: false,
                track: Some(ParseTrack {
                    statement: existing,
                    client_name: Some(client_name),
                    rename_error: true,
                }),
            });
            return Ok(());
        }
        // A name of its own: parsed now, against the schema as it is now.
        let statement = self.shared.statements.prepare(
            &body[rest_at..],
            &sql,
            &self.shared.plans,
            self.meter.client_id(),
        );
        self.statements.insert(&client_name, statement.clone());
        self.send_parse(statement, Some(client_name), false);
        Ok(())
    }

    /// A `Parse` of a statement this pool already knows to be valid needs no server now: answered at
    /// once, prepared on whichever connection the client gets when it binds. Without this, a client
    /// that prepares while other clients hold every connection (pgbench -M prepared) would wait on
    /// them. Returns false when the frame must go to a server.
    pub(super) fn parse_without_server(&mut self, frame: &[u8]) -> bool {
        if !self.rename_statements {
            return false;
        }
        let body = &frame[codec::HEADER_LEN..];
        let mut reader = BodyReader::new(body);
        let Ok(name) = reader.cstr() else {
            return false;
        };
        let rest_at = reader.position();
        let Ok(sql) = reader.cstr_text() else {
            return false;
        };
        if name.is_empty() || self.statements.get(name).is_some() {
            return false;
        }
        let text = self
            .shared
            .statements
            .text(&body[rest_at..], &sql, &self.shared.plans);
        if !self.pool.is_validated(&text.id) || sql_prepares(&sql) {
            return false;
        }
        let statement =
            self.shared
                .statements
                .statement(&text, &body[rest_at..], self.meter.client_id());
        self.statements.insert(name, statement);
        self.synthetic(PARSE_COMPLETE);
        true
    }

    /// Queues a reply made by the proxy; it goes out once everything before it has been answered.
    fn synthetic(&mut self, reply: &'static [u8]) {
        if self.pending.is_empty() {
            self.to_client.extend_from_slice(reply);
        } else {
            self.pending
                .push(Expect::Synthetic(Bytes::from_static(reply)));
        }
    }

    fn send_parse(
        &mut self,
        statement: Arc<PreparedStatement>,
        client_name: Option<Bytes>,
        swallow: bool,
    ) {
        if self
            .server
            .as_ref()
            .is_some_and(|s| s.prepared.len() >= CLOSE_OTHERS_AT)
        {
            self.close_foreign_statements();
        }
        if let Some(server) = self.server.as_mut() {
            server.prepared.insert(statement.server_name.clone());
        }
        self.to_server.extend_from_slice(&statement.parse_frame);
        self.pending.push(Expect::Parse {
            swallow,
            track: Some(ParseTrack {
                statement,
                client_name,
                rename_error: false,
            }),
        });
    }

    /// Prepares `statement` on the current server if it is not there yet (hidden from the client).
    fn ensure_prepared(&mut self, statement: &Arc<PreparedStatement>) {
        let present = self
            .server
            .as_ref()
            .is_some_and(|s| s.prepared.contains(&statement.server_name));
        if !present {
            self.send_parse(statement.clone(), None, true);
        }
    }

    /// Rewrites the statement name found at `name_at` in `frame` to its server name. Unknown names go
    /// to the server unchanged, so the client gets Postgres' own "does not exist" error.
    fn forward_renamed(
        &mut self,
        frame: &[u8],
        name_at: usize,
        name: &[u8],
        expect: Expect,
    ) -> Option<Arc<PreparedStatement>> {
        let found = if name.is_empty() || !self.rename_statements {
            None
        } else {
            self.statements.get(name).cloned()
        };
        match &found {
            Some(statement) => {
                if statement.lists_statements {
                    self.close_foreign_statements();
                }
                self.ensure_prepared(statement);
                let renamed = rename(frame, name_at, name_at + name.len(), &statement.server_name);
                self.to_server.extend_from_slice(&renamed);
                self.pending.push(expect);
            }
            None => self.forward(frame, Some(expect)),
        }
        found
    }

    fn on_bind(&mut self, frame: &[u8]) -> Result<(), String> {
        let mut reader = BodyReader::new(&frame[codec::HEADER_LEN..]);
        let portal = reader
            .cstr()
            .map_err(|e| format!("invalid Bind message: {e}"))?;
        let unnamed_portal = portal.is_empty();
        let name_at = codec::HEADER_LEN + reader.position();
        let name = reader
            .cstr()
            .map_err(|e| format!("invalid Bind message: {e}"))?
            .to_vec();
        let found = self.forward_renamed(frame, name_at, &name, Expect::Bind);
        if unnamed_portal {
            self.portal_ops = match (&found, name.is_empty()) {
                (Some(statement), _) => statement.ops.clone(),
                (None, true) => self.unnamed_ops.clone(),
                (None, false) => Vec::new(),
            };
        }
        Ok(())
    }

    fn on_describe(&mut self, frame: &[u8]) -> Result<(), String> {
        let mut reader = BodyReader::new(&frame[codec::HEADER_LEN..]);
        let kind = reader
            .u8()
            .map_err(|e| format!("invalid Describe message: {e}"))?;
        let name_at = codec::HEADER_LEN + reader.position();
        let name = reader
            .cstr()
            .map_err(|e| format!("invalid Describe message: {e}"))?
            .to_vec();
        if kind == b'S' {
            self.forward_renamed(frame, name_at, &name, Expect::Describe);
        } else {
            self.forward(frame, Some(Expect::Describe));
        }
        Ok(())
    }

    /// `Close` of a named statement: forgotten by this client, and closed on the attached server
    /// (other server connections drop it when they fill up, see [`CLOSE_OTHERS_AT`]).
    pub(super) fn on_close_statement(&mut self, frame: &[u8]) -> Flow {
        let mut reader = BodyReader::new(&frame[codec::HEADER_LEN + 1..]);
        let closed = reader
            .cstr()
            .ok()
            .and_then(|name| self.statements.take(name));
        if let (Some(statement), Some(server)) = (closed, self.server.as_mut()) {
            if server.prepared.remove(&statement.server_name) {
                let at = codec::begin(&mut self.to_server, b'C');
                self.to_server.extend_from_slice(b"S");
                codec::put_cstr(&mut self.to_server, statement.server_name.as_bytes());
                codec::finish(&mut self.to_server, at);
                self.pending
                    .push(Expect::CloseHidden(statement.server_name.clone()));
            }
        }
        self.synthetic(CLOSE_COMPLETE);
        Flow::Continue
    }
}
