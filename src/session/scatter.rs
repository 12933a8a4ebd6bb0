//! Statements over several shards, run outside any transaction: key-less reads fanned out to every
//! shard (or to the shards an `IN` list names) and merged into what one database would return;
//! DDL and allowed broadcast writes applied to every primary, with a report of where they failed;
//! multi-row inserts split per shard and committed with two-phase commit.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::fanout::{self, ShardCall, ShardFailure, ShardReply};
use super::routing::Target;
use super::{Flow, Session};
use crate::error::ClientError;
use crate::pool::{Pool, PooledConn};
use crate::protocol::codec::{self, BodyReader};
use crate::router::plan::Decision;
use crate::sharding::unit::Need;

/// The client's request, as one statement (the unit held one executed statement).
pub(super) struct Request {
    pub(super) sql: String,
    /// Extended protocol: the parameter types (i16 count + oids) and what follows the statement
    /// name in the client's Bind; None for a simple query.
    pub(super) extended: Option<(Bytes, Bytes)>,
    /// What the client sent, in order, to answer each in turn: the tag, and for a Describe whether
    /// of a statement (`S`) or a portal (`P`).
    messages: Vec<(u8, u8)>,
    /// The client's frames (for refusals).
    frames: Bytes,
    pub(super) describe_statement: bool,
}

impl Session {
    /// Runs a unit whose one statement needs several shards.
    pub(super) async fn run_multi_shard(&mut self, need: Need, frames: Bytes) -> Flow {
        let request = match self.read_request(frames.clone()) {
            Ok(request) => request,
            Err(reason) => return self.refuse_shards(reason, &frames),
        };
        let is_copy = matches!(need, Need::CopyIn { .. });
        let result = match need {
            Need::Scatter => self.scatter_read(&request, None).await,
            Need::ReadShards(shards) => self.scatter_read(&request, Some(shards)).await,
            other => self
                .run_other(&request, other)
                .await
                .map(|()| Flow::Continue),
        };
        if !is_copy {
            self.request_done(Some(crate::stats::Route::Fanout), b'I', false);
        }
        match result {
            Ok(flow) => flow,
            Err(error) => {
                let mut out = BytesMut::new();
                error.write_as_error(&mut out);
                self.refuse_with_frame(&out, &frames);
                Flow::Continue
            }
        }
    }

    /// A multi-shard statement other than a read.
    async fn run_other(&mut self, request: &Request, need: Need) -> Result<(), ClientError> {
        match need {
            Need::Broadcast { ddl } => self.broadcast(request, ddl).await,
            Need::SplitInsert { row_shards } => self.split_insert(request, &row_shards).await,
            Need::ReferenceWrite => self.reference_write(request).await,
            Need::CopyIn {
                key_type,
                column_index,
            } => {
                let before: Vec<u8> = request.messages.iter().map(|(tag, _)| *tag).collect();
                self.start_copy_split(&request.sql, &before, key_type, column_index)
                    .await
            }
            Need::Any | Need::Shard(_) | Need::Refuse(_) | Need::Scatter | Need::ReadShards(_) => {
                Err(ClientError::ShardRouting(
                    "not a multi-shard statement".to_string(),
                ))
            }
        }
    }

    fn refuse_shards(&mut self, reason: String, frames: &[u8]) -> Flow {
        let mut out = BytesMut::new();
        ClientError::ShardRouting(reason).write_as_error(&mut out);
        self.refuse_with_frame(&out, frames);
        Flow::Continue
    }

    /// The executed statement of a unit: a simple query, or Parse/Bind/Describe/Execute/Sync.
    fn read_request(&mut self, frames: Bytes) -> Result<Request, String> {
        let mut request = Request {
            sql: String::new(),
            extended: None,
            messages: Vec::new(),
            frames: frames.clone(),
            describe_statement: false,
        };
        let mut parsed: Option<(String, Bytes)> = None;
        let mut at = 0;
        while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
            let body = &frames[at + codec::HEADER_LEN..at + total];
            at += total;
            request.messages.push((
                tag,
                if tag == b'D' {
                    body.first().copied().unwrap_or(0)
                } else {
                    0
                },
            ));
            let mut reader = BodyReader::new(body);
            let bad = |what: &str| format!("invalid {what} message");
            match tag {
                b'Q' => request.sql = reader.cstr_utf8().map_err(|_| bad("Query"))?.to_string(),
                b'P' => {
                    let name = reader.cstr().map_err(|_| bad("Parse"))?;
                    let rest_at = reader.position();
                    let sql = reader.cstr_utf8().map_err(|_| bad("Parse"))?.to_string();
                    let types = Bytes::copy_from_slice(reader.remaining());
                    if !name.is_empty() {
                        self.remember_statement(name, &body[rest_at..], &sql);
                    }
                    parsed = Some((sql, types));
                }
                b'B' => {
                    let portal = reader.cstr().map_err(|_| bad("Bind"))?;
                    let name = reader.cstr().map_err(|_| bad("Bind"))?;
                    if !portal.is_empty() {
                        return Err(NAMED_PORTAL.to_string());
                    }
                    let tail = Bytes::copy_from_slice(reader.remaining());
                    let (sql, types) = if name.is_empty() {
                        match (&parsed, self.unnamed_statement()) {
                            (Some(p), _) => p.clone(),
                            (None, Some(p)) => p,
                            (None, None) => return Err("no unnamed statement to bind".into()),
                        }
                    } else {
                        let statement = self.statements.get(name).ok_or_else(|| {
                            format!(
                                "prepared statement \"{}\" does not exist",
                                String::from_utf8_lossy(name)
                            )
                        })?;
                        (
                            statement.sql.to_string(),
                            statement_types(&statement.parse_frame),
                        )
                    };
                    request.sql = sql;
                    request.extended = Some((types, tail));
                }
                // Close of a named statement: forgotten by this client (as a server would).
                b'C' if body.first() == Some(&b'S') => {
                    reader.u8().map_err(|_| bad("Close"))?;
                    let name = reader.cstr().map_err(|_| bad("Close"))?;
                    self.statements.remove(name);
                }
                b'D' => {
                    request.describe_statement |= reader.u8().map_err(|_| bad("Describe"))? == b'S';
                }
                b'E' => {
                    let _portal = reader.cstr().map_err(|_| bad("Execute"))?;
                    if reader.i32().map_err(|_| bad("Execute"))? != 0 {
                        return Err(
                            "fetching a multi-shard result in parts (Execute with a row limit) is \
                             not supported; fetch it whole, or add the shard key"
                                .to_string(),
                        );
                    }
                }
                _ => {}
            }
            if at >= frames.len() {
                break;
            }
        }
        Ok(request)
    }

    /// A named statement parsed in a multi-shard unit is remembered for the client's later Binds
    /// (prepared on a server only when one needs it).
    fn remember_statement(&mut self, name: &[u8], rest: &[u8], sql: &str) {
        let statement =
            self.shared
                .statements
                .prepare(rest, sql, &self.shared.plans, self.meter.client_id());
        self.statements.insert(name, statement);
    }

    /// The unnamed statement's text and parameter types, from an earlier unit.
    fn unnamed_statement(&self) -> Option<(String, Bytes)> {
        self.routing.as_ref()?.unnamed_statement()
    }

    /// This client's pool for a read on `shard` (a replica when read/write splitting allows).
    pub(super) fn read_pool(&mut self, shard: usize) -> Result<Arc<Pool>, ClientError> {
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.shard = shard;
        }
        let target = self
            .choose_target(Decision::Replica, &[])
            .map_err(|e| ClientError::ShardRouting(e.to_string()))?;
        Ok(self.target_pool(target))
    }

    /// This client's pool on `shard`'s primary.
    pub(super) fn primary_pool_of(&mut self, shard: usize) -> Arc<Pool> {
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.shard = shard;
        }
        self.target_pool(Target::Primary)
    }

    pub(super) fn same_frames(request: &Request, sql: &str) -> Bytes {
        match &request.extended {
            Some((types, tail)) => {
                fanout::extended_frames(sql, types, request.describe_statement, tail)
            }
            None => fanout::simple_frames(sql),
        }
    }

    /// Runs `calls`; a shard that could not answer fails the whole request.
    async fn run_calls(
        &mut self,
        calls: Vec<ShardCall>,
    ) -> Result<(Vec<PooledConn>, Vec<ShardReply>), ClientError> {
        let results = fanout::run_all(calls, &self.params).await;
        let mut conns = Vec::with_capacity(results.len());
        let mut replies = Vec::with_capacity(results.len());
        let mut failure: Option<ShardFailure> = None;
        for result in results {
            match result {
                Ok((conn, reply)) => {
                    conns.push(conn);
                    replies.push(reply);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(failure) = failure {
            let statuses: Vec<u8> = replies.iter().map(|r| r.status).collect();
            fanout::release_all(conns, &statuses);
            tracing::warn!(%failure, "a shard failed during a multi-shard statement");
            if let ShardFailure::TooLarge { .. } = failure {
                return Err(ClientError::FanoutTooLarge(failure.to_string()));
            }
            return Err(ClientError::ShardUnavailable(failure.to_string()));
        }
        Ok((conns, replies))
    }

    /// The same statement on every shard's primary.
    async fn broadcast(&mut self, request: &Request, ddl: bool) -> Result<(), ClientError> {
        let frames = Session::same_frames(request, &request.sql);
        let mut calls = Vec::new();
        for shard in 0..self.shard_count() {
            calls.push(ShardCall {
                shard,
                pool: self.primary_pool_of(shard),
                frames: frames.clone(),
                probe_collation: false,
                readies: 1,
            });
        }
        let (conns, replies) = self.run_calls(calls).await?;
        let statuses: Vec<u8> = replies.iter().map(|r| r.status).collect();
        fanout::release_all(conns, &statuses);
        let (failed, done): (Vec<&ShardReply>, Vec<&ShardReply>) =
            replies.iter().partition(|r| r.error.is_some());
        if let Some(first) = failed.first() {
            let (code, message) = first.error_fields().unwrap_or_default();
            let what = if ddl {
                "schema change"
            } else {
                "broadcast write"
            };
            let report = format!(
                "{what} failed on shard(s) {}: {message}; it was applied on shard(s) {}{}",
                list(failed.iter().map(|r| r.shard)),
                if done.is_empty() {
                    "none".to_string()
                } else {
                    list(done.iter().map(|r| r.shard))
                },
                if done.is_empty() {
                    String::new()
                } else {
                    ". Fix the cause and apply it again where it failed (IF NOT EXISTS / IF EXISTS help)".to_string()
                }
            );
            let mut out = BytesMut::new();
            codec::error_fields(&mut out, b'E', "ERROR", &code, &report, None);
            self.answer_error(&out, request);
            return Ok(());
        }
        let written: Vec<usize> = replies.iter().map(|r| r.shard).collect();
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.note_writes(&written);
        }
        let tag = sum_tags(
            replies
                .iter()
                .filter_map(|r| r.tags.last().map(String::as_str)),
        );
        let row_desc = replies.first().and_then(|r| r.row_desc.clone());
        let mut rows = BytesMut::new();
        for reply in &replies {
            for row in &reply.rows {
                codec::put_frame(&mut rows, b'D', row);
            }
        }
        let desc_frame = row_desc.map(|d| {
            let mut f = BytesMut::new();
            codec::put_frame(&mut f, b'T', &d);
            f
        });
        let param_desc = replies.first().and_then(|r| r.param_desc.clone());
        match desc_frame {
            Some(desc) => self.answer(request, param_desc, Some(&desc), &rows, &tag),
            None => self.answer(request, param_desc, None, &[], &tag),
        }
        Ok(())
    }

    pub(super) fn shard_count(&self) -> usize {
        self.shared.sharding.as_ref().map_or(1, |s| s.shard_count())
    }

    /// Answers each client message of a successful request; `row_desc` None: it returns no rows.
    pub(super) fn answer(
        &mut self,
        request: &Request,
        param_desc: Option<Bytes>,
        row_desc: Option<&[u8]>,
        rows: &[u8],
        tag: &str,
    ) {
        self.answer_head(request, param_desc, row_desc);
        self.to_client.extend_from_slice(rows);
        self.answer_tail(request, tag);
    }

    /// What goes before the rows: the answers up to the Execute (or a simple query's
    /// RowDescription). False when the request executes nothing (no rows are to be sent).
    pub(super) fn answer_head(
        &mut self,
        request: &Request,
        param_desc: Option<Bytes>,
        row_desc: Option<&[u8]>,
    ) -> bool {
        let out = &mut self.to_client;
        if request.extended.is_none() {
            out.extend_from_slice(row_desc.unwrap_or_default());
            return true;
        }
        for &(message, kind) in &request.messages {
            match message {
                b'P' => codec::put_frame(out, b'1', b""),
                b'B' => codec::put_frame(out, b'2', b""),
                b'D' => {
                    if let (b'S', Some(params)) = (kind, &param_desc) {
                        codec::put_frame(out, b't', params);
                    }
                    match row_desc {
                        Some(desc) => out.extend_from_slice(desc),
                        None => codec::put_frame(out, b'n', b""),
                    }
                }
                b'E' => return true,
                b'C' => codec::put_frame(out, b'3', b""),
                b'S' => codec::ready_for_query(out, b'I'),
                _ => {}
            }
        }
        false
    }

    /// What goes after the rows: the Execute's CommandComplete and the answers after it.
    pub(super) fn answer_tail(&mut self, request: &Request, tag: &str) {
        let out = &mut self.to_client;
        if request.extended.is_none() {
            codec::command_complete(out, tag);
            codec::ready_for_query(out, b'I');
            return;
        }
        let Some(at) = request.messages.iter().position(|(m, _)| *m == b'E') else {
            return;
        };
        codec::command_complete(out, tag);
        for &(message, _) in &request.messages[at + 1..] {
            match message {
                b'C' => codec::put_frame(out, b'3', b""),
                b'S' => codec::ready_for_query(out, b'I'),
                _ => {}
            }
        }
    }

    /// Answers a failed request: the error, then `ReadyForQuery` where the client expects one.
    pub(super) fn answer_error(&mut self, error: &[u8], request: &Request) {
        self.refuse_with_frame(error, &request.frames);
    }
}

const NAMED_PORTAL: &str = "named portals are not supported for statements over several shards; \
                            use the unnamed portal";

/// The parameter types (i16 count + oids) of a registry `Parse` frame.
fn statement_types(parse_frame: &[u8]) -> Bytes {
    let mut body = parse_frame.get(codec::HEADER_LEN..).unwrap_or_default();
    let mut reader = BodyReader::new(body);
    if reader.cstr().is_ok() && reader.cstr().is_ok() {
        body.advance(reader.position());
        return Bytes::copy_from_slice(body);
    }
    Bytes::from_static(b"\0\0")
}

/// The Bind tail (after the statement name) with its result formats replaced by `f(client's)`.
pub(super) fn shard_result_formats(
    tail: &[u8],
    f: impl Fn(&[i16]) -> Vec<i16>,
) -> Result<Bytes, String> {
    let bad = || "invalid Bind message".to_string();
    let mut reader = BodyReader::new(tail);
    let n = usize::try_from(reader.i16().map_err(|_| bad())?).map_err(|_| bad())?;
    reader.bytes(n * 2).map_err(|_| bad())?;
    let params = usize::try_from(reader.i16().map_err(|_| bad())?).map_err(|_| bad())?;
    for _ in 0..params {
        let len = reader.i32().map_err(|_| bad())?;
        if len > 0 {
            reader.bytes(len as usize).map_err(|_| bad())?;
        }
    }
    let head = &tail[..reader.position()];
    let n = usize::try_from(reader.i16().map_err(|_| bad())?).map_err(|_| bad())?;
    let mut client = Vec::with_capacity(n);
    for _ in 0..n {
        client.push(reader.i16().map_err(|_| bad())?);
    }
    let formats = f(&client);
    let mut out = BytesMut::with_capacity(head.len() + 2 + formats.len() * 2);
    out.extend_from_slice(head);
    out.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for format in formats {
        out.extend_from_slice(&format.to_be_bytes());
    }
    Ok(out.freeze())
}

/// `0, 2, 3`.
fn list(shards: impl Iterator<Item = usize>) -> String {
    shards.map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}

/// One tag for the same command on every shard: `UPDATE 3` + `UPDATE 4` = `UPDATE 7`; tags
/// without a count (`CREATE TABLE`) are kept as they are.
fn sum_tags<'a>(tags: impl Iterator<Item = &'a str>) -> String {
    let mut first: Option<String> = None;
    let mut total: u64 = 0;
    let mut counted = true;
    for tag in tags {
        let (head, count) = match tag.rsplit_once(' ') {
            Some((head, n)) => match n.parse::<u64>() {
                Ok(n) => (head, Some(n)),
                Err(_) => (tag, None),
            },
            None => (tag, None),
        };
        match count {
            Some(n) => total += n,
            None => counted = false,
        }
        first.get_or_insert_with(|| head.to_string());
    }
    match (first, counted) {
        (Some(head), true) => format!("{head} {total}"),
        (Some(head), false) => head,
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_command_tags() {
        assert_eq!(sum_tags(["UPDATE 3", "UPDATE 4"].into_iter()), "UPDATE 7");
        assert_eq!(
            sum_tags(["INSERT 0 1", "INSERT 0 2"].into_iter()),
            "INSERT 0 3"
        );
        assert_eq!(
            sum_tags(["CREATE TABLE", "CREATE TABLE"].into_iter()),
            "CREATE TABLE"
        );
    }

    #[test]
    fn reads_a_statements_parameter_types() {
        let mut frame = BytesMut::new();
        let at = codec::begin(&mut frame, b'P');
        codec::put_cstr(&mut frame, b"pgscale_1");
        codec::put_cstr(&mut frame, b"select $1");
        frame.extend_from_slice(b"\0\x01\0\0\0\x14");
        codec::finish(&mut frame, at);
        assert_eq!(&statement_types(&frame)[..], b"\0\x01\0\0\0\x14");
    }
}
