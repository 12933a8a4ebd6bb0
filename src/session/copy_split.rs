//! `COPY sharded_table FROM STDIN` split across shards: a COPY is opened on every shard's primary
//! inside a transaction, the client's rows are cut and sent each to its key's shard, and at the end
//! the shards commit together with two-phase commit — or all roll back.

use bytes::{Bytes, BytesMut};

use super::fanout::MAX_SHARD_RESULT_BYTES;
use super::routing::Target;
use super::two_phase;
use super::{Flow, Session};
use crate::error::ClientError;
use crate::pool::server::ServerError;
use crate::pool::{Pool, PooledConn};
use crate::protocol::codec;
use crate::sharding::copy_split::{Destination, RowFormat, RowSplitter};
use crate::sharding::resolve::{copy_format, CopyFormat};
use crate::sharding::KeyType;
use std::sync::Arc;

/// Rows for a shard are sent once this many bytes are waiting.
const SEND_AT: usize = 64 * 1024;

/// A split COPY in progress.
pub(super) struct CopySplit {
    splitter: RowSplitter,
    /// One per shard, in shard order.
    conns: Vec<PooledConn>,
    /// The shards' primary pools, in shard order (to finish a prepared transaction elsewhere).
    pools: Vec<Arc<Pool>>,
    buffers: Vec<BytesMut>,
    gid: String,
    /// The first problem with the client's data; the rest of the stream is skipped.
    failed: Option<String>,
    /// Started by an extended-protocol Execute: the `ReadyForQuery` comes with the client's Sync
    /// after CopyDone, not with the CommandComplete.
    extended: bool,
}

impl Session {
    /// Opens the COPY on every shard and tells the client to send its rows (`messages`: the tags
    /// of the client's unit, answered first when it used the extended protocol).
    pub(super) async fn start_copy_split(
        &mut self,
        sql: &str,
        messages: &[u8],
        key_type: KeyType,
        column_index: usize,
    ) -> Result<(), ClientError> {
        let format = copy_format_of(sql).map_err(ClientError::ShardRouting)?;
        let shards = self.shared.sharding.as_ref().map_or(1, |s| s.shard_count());
        let mut conns = Vec::with_capacity(shards);
        let mut pools = Vec::with_capacity(shards);
        let mut copy_in_response = None;
        let mut failure = None;
        for shard in 0..shards {
            if let Some(routing) = self.routing.as_deref_mut() {
                routing.shard = shard;
            }
            let pool = self.target_pool(Target::Primary);
            pools.push(pool.clone());
            let mut conn = match Box::pin(pool.checkout()).await {
                Ok(conn) => conn,
                Err(e) => {
                    failure = Some(format!("shard {shard} ({}): {e}", pool.key.addr));
                    break;
                }
            };
            match open_copy(&mut conn, &self.params, sql).await {
                Ok(response) => {
                    copy_in_response.get_or_insert(response);
                    conns.push(conn);
                }
                Err(e) => {
                    failure = Some(format!("shard {shard}: {e}"));
                    break;
                }
            }
        }
        if let Some(failure) = failure {
            for mut conn in conns {
                abort_copy(&mut conn, "another shard failed").await;
            }
            return Err(ClientError::ShardUnavailable(failure));
        }
        // Extended protocol: Parse and Bind succeeded before the COPY starts.
        for message in messages {
            match message {
                b'P' => codec::put_frame(&mut self.to_client, b'1', b""),
                b'B' => codec::put_frame(&mut self.to_client, b'2', b""),
                // A COPY returns no rows.
                b'D' => codec::put_frame(&mut self.to_client, b'n', b""),
                _ => {}
            }
        }
        if let Some(response) = copy_in_response {
            codec::put_frame(&mut self.to_client, b'G', &response);
        }
        self.copy_split = Some(Box::new(CopySplit {
            splitter: RowSplitter::new(format, column_index, key_type),
            buffers: vec![BytesMut::new(); conns.len()],
            conns,
            pools,
            gid: format!("pgscale_copy_{:016x}", rand::random::<u64>()),
            failed: None,
            extended: !messages.contains(&b'Q'),
        }));
        Ok(())
    }

    /// A client message while a split COPY runs.
    pub(super) async fn on_copy_split_frame(&mut self, tag: u8, frame: &[u8]) -> Flow {
        match tag {
            b'd' => {
                self.copy_split_data(&frame[codec::HEADER_LEN..]).await;
                Flow::Continue
            }
            b'c' => self.finish_copy_split(None).await,
            b'f' => {
                let message = String::from_utf8_lossy(
                    frame
                        .get(codec::HEADER_LEN..frame.len().saturating_sub(1))
                        .unwrap_or_default(),
                )
                .into_owned();
                self.finish_copy_split(Some(message)).await
            }
            // Postgres ignores Flush and Sync during COPY FROM STDIN.
            _ => Flow::Continue,
        }
    }

    async fn copy_split_data(&mut self, data: &[u8]) {
        let ring = match self.shared.sharding.as_ref() {
            Some(sharding) => sharding.ring(),
            None => return,
        };
        let Some(copy) = self.copy_split.as_deref_mut() else {
            return;
        };
        if copy.failed.is_some() {
            return;
        }
        let buffers = &mut copy.buffers;
        let mut emit = |destination: Destination, row: &[u8]| match destination {
            Destination::AllShards => buffers.iter_mut().for_each(|b| b.extend_from_slice(row)),
            Destination::Shard(shard) => {
                if let Some(buffer) = buffers.get_mut(shard) {
                    buffer.extend_from_slice(row);
                }
            }
        };
        if let Err(e) = copy.splitter.push(data, &ring, &mut emit) {
            copy.failed = Some(e.to_string());
            return;
        }
        if let Err(e) = send_buffers(copy, SEND_AT).await {
            copy.failed = Some(e);
        }
    }

    /// CopyDone (`client_failed` None) or CopyFail: every shard commits, or every shard rolls back.
    async fn finish_copy_split(&mut self, client_failed: Option<String>) -> Flow {
        let Some(mut copy) = self.copy_split.take() else {
            return Flow::Continue;
        };
        let ring = self.shared.sharding.as_ref().map(|s| s.ring());
        if copy.failed.is_none() && client_failed.is_none() {
            if let Some(ring) = ring {
                let buffers = &mut copy.buffers;
                let mut emit = |destination: Destination, row: &[u8]| match destination {
                    Destination::AllShards => {
                        buffers.iter_mut().for_each(|b| b.extend_from_slice(row))
                    }
                    Destination::Shard(shard) => {
                        if let Some(buffer) = buffers.get_mut(shard) {
                            buffer.extend_from_slice(row);
                        }
                    }
                };
                if let Err(e) = copy.splitter.finish(&ring, &mut emit) {
                    copy.failed = Some(e.to_string());
                }
            }
            if copy.failed.is_none() {
                if let Err(e) = send_buffers(&mut copy, 0).await {
                    copy.failed = Some(e);
                }
            }
        }
        let problem = client_failed
            .map(|m| {
                (
                    String::from("57014"),
                    format!("COPY from stdin failed: {m}"),
                )
            })
            .or(copy.failed.clone().map(|m| (String::from("22P04"), m)));
        let mut participants: Vec<two_phase::Participant> = std::mem::take(&mut copy.conns)
            .into_iter()
            .zip(std::mem::take(&mut copy.pools))
            .enumerate()
            .map(|(shard, (conn, pool))| two_phase::Participant {
                shard,
                pool,
                conn: Some(conn),
                prepared: false,
                clean: true,
            })
            .collect();
        let (rows, problem) = match problem {
            Some(problem) => {
                for p in participants.iter_mut() {
                    if let Some(conn) = p.conn.as_mut() {
                        abort_copy(conn, &problem.1).await;
                    }
                }
                (0, Some(problem))
            }
            None => prepare_all(&mut participants, &copy.gid).await,
        };
        let commit = problem.is_none();
        let finished = two_phase::finish(&mut participants, &copy.gid, commit).await;
        let written: Vec<usize> = participants.iter().map(|p| p.shard).collect();
        two_phase::release(participants);
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.note_writes(&written);
        }
        let unresolved = finished.describe(&copy.gid, commit);
        let failure = match (problem, unresolved) {
            (None, None) => None,
            (None, Some(unresolved)) => Some((
                "08006".to_string(),
                format!("the COPY committed on the other shards, but {unresolved}"),
            )),
            (Some((code, message)), None) => Some((
                code,
                format!("the COPY was rolled back on every shard: {message}"),
            )),
            (Some((code, message)), Some(unresolved)) => Some((
                code,
                format!("the COPY failed ({message}) and could not be rolled back everywhere: {unresolved}"),
            )),
        };
        match failure {
            None => codec::command_complete(&mut self.to_client, &format!("COPY {rows}")),
            Some((code, message)) => {
                codec::error_fields(&mut self.to_client, b'E', "ERROR", &code, &message, None)
            }
        }
        if !copy.extended {
            codec::ready_for_query(&mut self.to_client, b'I');
        }
        Flow::Continue
    }
}

/// Sends each shard's waiting rows once at least `at_least` bytes wait (0: all).
async fn send_buffers(copy: &mut CopySplit, at_least: usize) -> Result<(), String> {
    for (shard, (buffer, conn)) in copy.buffers.iter_mut().zip(&mut copy.conns).enumerate() {
        if buffer.is_empty() || buffer.len() < at_least {
            continue;
        }
        let mut frame = BytesMut::with_capacity(buffer.len() + codec::HEADER_LEN);
        codec::put_frame(&mut frame, b'd', buffer);
        buffer.clear();
        conn.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("shard {shard} stopped taking rows: {e}"))?;
    }
    Ok(())
}

/// Ends every shard's COPY and prepares its transaction (phase one). The rows copied, and the
/// first problem (SQLSTATE, message) if a shard failed.
async fn prepare_all(
    participants: &mut [two_phase::Participant],
    gid: &str,
) -> (u64, Option<(String, String)>) {
    let mut done = BytesMut::new();
    codec::put_frame(&mut done, b'c', b"");
    let mut rows = 0u64;
    for p in participants.iter_mut() {
        let Some(conn) = p.conn.as_mut() else {
            continue;
        };
        match finish_statement(conn, &done).await {
            Ok(tag) => {
                rows += tag
                    .strip_prefix("COPY ")
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            Err((code, message)) => {
                return (rows, Some((code, format!("shard {}: {message}", p.shard))))
            }
        }
    }
    for p in participants.iter_mut() {
        let Some(conn) = p.conn.as_mut() else {
            continue;
        };
        match conn
            .run_hidden(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
        {
            Ok(_) => p.prepared = true,
            Err(e) => {
                return (
                    rows,
                    Some((
                        "55000".to_string(),
                        format!(
                            "shard {} could not prepare the COPY for a two-phase commit ({e}); \
                             it needs max_prepared_transactions > 0 on every shard",
                            p.shard
                        ),
                    )),
                )
            }
        }
    }
    (rows, None)
}

/// Brings the connection to the client's settings, opens a transaction and the COPY; returns
/// the server's CopyInResponse body.
async fn open_copy(
    conn: &mut PooledConn,
    params: &super::params::ClientParams,
    sql: &str,
) -> Result<Bytes, String> {
    if let Some(settings) = params.sync_sql(&conn.applied) {
        conn.run_hidden(&settings)
            .await
            .map_err(|e| e.to_string())?;
        params.mark_applied(&mut conn.applied);
    }
    conn.run_hidden("BEGIN").await.map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    codec::query(&mut out, sql);
    conn.send(&out).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    let mut error = None;
    loop {
        let (tag, body) = conn
            .read_frame_up_to(&mut buf, MAX_SHARD_RESULT_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        match tag {
            b'G' => return Ok(body.freeze()),
            b'E' => error = Some(codec::parse_error_fields(&body).1),
            b'Z' => {
                let _ = conn.run_hidden("ROLLBACK").await;
                return Err(error.unwrap_or_else(|| "the server did not start the COPY".into()));
            }
            _ => {}
        }
    }
}

/// Sends `frame` (CopyDone/CopyFail) and reads to ReadyForQuery: the CommandComplete tag, or the
/// error's SQLSTATE and message.
async fn finish_statement(conn: &mut PooledConn, frame: &[u8]) -> Result<String, (String, String)> {
    let io = |e: ServerError| ("08006".to_string(), e.to_string());
    conn.send(frame).await.map_err(io)?;
    let mut buf = BytesMut::new();
    let mut tag = String::new();
    let mut error = None;
    loop {
        let (kind, body) = conn
            .read_frame_up_to(&mut buf, MAX_SHARD_RESULT_BYTES)
            .await
            .map_err(io)?;
        match kind {
            b'C' => {
                tag =
                    String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned()
            }
            b'E' if error.is_none() => error = Some(codec::parse_error_fields(&body)),
            b'Z' => {
                return match error {
                    Some(e) => Err(e),
                    None => Ok(tag),
                }
            }
            _ => {}
        }
    }
}

/// Ends a shard's COPY with CopyFail (its transaction is rolled back in phase two).
async fn abort_copy(conn: &mut PooledConn, why: &str) {
    let mut fail = BytesMut::new();
    let at = codec::begin(&mut fail, b'f');
    codec::put_cstr(&mut fail, why.as_bytes());
    codec::finish(&mut fail, at);
    let _ = finish_statement(conn, &fail).await;
}

/// The row format the splitter needs, from the statement's options (text and CSV; binary is
/// refused).
fn copy_format_of(sql: &str) -> Result<RowFormat, String> {
    let byte = |c: char| {
        u8::try_from(c).map_err(|_| "COPY delimiters and quotes must be one byte".to_string())
    };
    match copy_format(sql).map_err(|e| e.to_string())? {
        CopyFormat::Text { delimiter, .. } => Ok(RowFormat::Text {
            delimiter: byte(delimiter)?,
        }),
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            header,
            ..
        } => Ok(RowFormat::Csv {
            delimiter: byte(delimiter)?,
            quote: byte(quote)?,
            escape: byte(escape)?,
            header,
        }),
        CopyFormat::Binary => Err(unsupported_format("binary")),
    }
}

fn unsupported_format(name: &str) -> String {
    format!(
        "COPY of a sharded table in {name} format is not split across shards (text and CSV are); \
         use FORMAT text or csv"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_copy_format() {
        assert_eq!(
            copy_format_of("COPY users (id, name) FROM STDIN"),
            Ok(RowFormat::Text { delimiter: b'\t' })
        );
        assert_eq!(
            copy_format_of("COPY users FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';')"),
            Ok(RowFormat::Csv {
                delimiter: b';',
                quote: b'"',
                escape: b'"',
                header: true
            })
        );
        assert_eq!(
            copy_format_of("COPY users FROM STDIN CSV HEADER"),
            Ok(RowFormat::Csv {
                delimiter: b',',
                quote: b'"',
                escape: b'"',
                header: true
            })
        );
        assert!(copy_format_of("COPY users FROM STDIN WITH (FORMAT binary)")
            .is_err_and(|e| e.contains("binary format")));
    }
}
