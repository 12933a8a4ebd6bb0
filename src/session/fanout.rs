//! Running one request on several shards at once: a server connection per shard (checked out,
//! brought to the client's settings), the same kind of batch sent to each, and either each shard's
//! whole answer collected ([`run_all`], for writes, whose answers are small) or the connections
//! handed over to be read as rows are needed ([`start_all`], for reads: `fanout_read`). What to
//! make of the answers is the caller's business (`scatter`).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::params::ClientParams;
use crate::pool::breaker::FailureKind;
use crate::pool::query::query_rows;
use crate::pool::server::ServerError;
use crate::pool::{CheckoutError, Pool, PooledConn};
use crate::protocol::codec::{self, BodyReader};

/// Results larger than this (per shard) are refused rather than buffered without bound.
pub(super) const MAX_SHARD_RESULT_BYTES: usize = 256 << 20;

/// One shard's whole answer to a batch ending in Sync (or a simple query).
#[derive(Debug, Default)]
pub(super) struct ShardReply {
    pub shard: usize,
    /// `ParameterDescription` body (after a statement Describe).
    pub param_desc: Option<Bytes>,
    /// The last `RowDescription` body.
    pub row_desc: Option<Bytes>,
    /// `DataRow` bodies, in order.
    pub rows: Vec<Bytes>,
    /// Every `CommandComplete` tag, in order.
    pub tags: Vec<String>,
    /// The first `ErrorResponse`, whole.
    pub error: Option<BytesMut>,
    /// Transaction status from the final `ReadyForQuery`.
    pub status: u8,
}

impl ShardReply {
    /// The SQLSTATE and message of the shard's error.
    pub fn error_fields(&self) -> Option<(String, String)> {
        self.error
            .as_ref()
            .map(|frame| codec::parse_error_fields(&frame[codec::HEADER_LEN.min(frame.len())..]))
    }
}

/// Why a shard gave no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ShardFailure {
    #[error("shard {shard} ({backend}): {source}")]
    Checkout {
        shard: usize,
        backend: String,
        source: CheckoutError,
    },
    #[error("shard {shard} ({backend}): {source}")]
    Server {
        shard: usize,
        backend: String,
        source: ServerError,
    },
    #[error("shard {shard} ({backend}) sent more than {MAX_SHARD_RESULT_BYTES} bytes of rows; add the shard key to WHERE or a LIMIT")]
    TooLarge { shard: usize, backend: String },
}

/// A request for one shard.
pub(super) struct ShardCall {
    pub shard: usize,
    pub pool: Arc<Pool>,
    /// The frames to send (ending with Sync, or one simple query).
    pub frames: Bytes,
    /// Also find out whether the database's collation orders text bytewise.
    pub probe_collation: bool,
    /// How many `ReadyForQuery` end the answer (one per simple query or Sync in `frames`).
    pub readies: usize,
}

/// Runs each call on its shard at once and waits for all. A shard that answers keeps its
/// connection for the caller (to release, or to finish a two-phase commit on).
pub(super) async fn run_all(
    calls: Vec<ShardCall>,
    params: &ClientParams,
) -> Vec<Result<(PooledConn, ShardReply), ShardFailure>> {
    let futures = calls.into_iter().map(|call| run_one(call, params));
    futures_util::future::join_all(futures).await
}

async fn run_one(
    call: ShardCall,
    params: &ClientParams,
) -> Result<(PooledConn, ShardReply), ShardFailure> {
    let (mut conn, _) = start(&call, params).await?;
    let reply = match exchange(&mut conn, call.shard, call.readies).await {
        Ok(reply) => reply,
        Err(Exchange::Server(e)) => return Err(server_failure(&conn, call.shard, e)),
        Err(Exchange::TooLarge) => {
            return Err(ShardFailure::TooLarge {
                shard: call.shard,
                backend: call.pool.key.addr.to_string(),
            })
        }
    };
    Ok((conn, reply))
}

/// Starts each call on its shard at once: the shards work while the caller reads their answers
/// as it needs them. Each connection that started is returned with its collation probe's answer.
pub(super) async fn start_all(
    calls: &[ShardCall],
    params: &ClientParams,
) -> Vec<Result<(PooledConn, Option<bool>), ShardFailure>> {
    let futures = calls.iter().map(|call| start(call, params));
    futures_util::future::join_all(futures).await
}

/// Checks out a connection for `call`, brings it to the client's settings, probes the collation
/// when asked and sends the call's frames.
async fn start(
    call: &ShardCall,
    params: &ClientParams,
) -> Result<(PooledConn, Option<bool>), ShardFailure> {
    let mut conn =
        Box::pin(call.pool.checkout())
            .await
            .map_err(|source| ShardFailure::Checkout {
                shard: call.shard,
                backend: call.pool.key.addr.to_string(),
                source,
            })?;
    if let Some(sql) = params.sync_sql(&conn.applied) {
        if let Err(e) = conn.run_hidden(&sql).await {
            return Err(server_failure(&conn, call.shard, e));
        }
        params.mark_applied(&mut conn.applied);
    }
    let bytewise_text = if call.probe_collation {
        let rows = match query_rows(&mut conn, BYTEWISE_SQL).await {
            Ok(rows) => rows,
            Err(e) => return Err(server_failure(&conn, call.shard, e)),
        };
        Some(
            rows.first()
                .and_then(|r| r.first())
                .cloned()
                .flatten()
                .as_deref()
                == Some("t"),
        )
    } else {
        None
    };
    if let Err(e) = conn.send(&call.frames).await {
        return Err(server_failure(&conn, call.shard, e));
    }
    Ok((conn, bytewise_text))
}

/// A shard's server error; a broken connection counts against its backend's breaker.
pub(super) fn server_failure(conn: &PooledConn, shard: usize, source: ServerError) -> ShardFailure {
    if matches!(source, ServerError::Io { .. } | ServerError::Closed { .. }) {
        conn.pool().backend().record_failure(FailureKind::Broken);
    }
    ShardFailure::Server {
        shard,
        backend: conn.pool().key.addr.to_string(),
        source,
    }
}

/// Whether the current database's default collation sorts text by bytes.
const BYTEWISE_SQL: &str = "SELECT datcollate IN ('C', 'POSIX') FROM pg_catalog.pg_database \
                            WHERE datname = current_database()";

enum Exchange {
    Server(ServerError),
    TooLarge,
}

/// Reads up to the `ReadyForQuery` that ends the frames sent.
async fn exchange(
    conn: &mut PooledConn,
    shard: usize,
    readies: usize,
) -> Result<ShardReply, Exchange> {
    let mut readies = readies.max(1);
    let mut buf = BytesMut::with_capacity(8192);
    let mut reply = ShardReply {
        shard,
        ..ShardReply::default()
    };
    let mut size = 0usize;
    loop {
        let (tag, body) = conn
            .read_frame_up_to(&mut buf, MAX_SHARD_RESULT_BYTES)
            .await
            .map_err(Exchange::Server)?;
        match tag {
            b'D' => {
                size += body.len();
                if size > MAX_SHARD_RESULT_BYTES {
                    return Err(Exchange::TooLarge);
                }
                reply.rows.push(body.freeze());
            }
            b'T' => reply.row_desc = Some(body.freeze()),
            b't' => reply.param_desc = Some(body.freeze()),
            b'C' => {
                let mut reader = BodyReader::new(&body);
                let tag = reader.cstr().unwrap_or_default();
                reply.tags.push(String::from_utf8_lossy(tag).into_owned());
            }
            b'E' if reply.error.is_none() => {
                let mut frame = BytesMut::with_capacity(body.len() + codec::HEADER_LEN);
                codec::put_frame(&mut frame, b'E', &body);
                reply.error = Some(frame);
            }
            b'S' => conn.note_parameter_status(&body),
            b'Z' => {
                reply.status = body.first().copied().unwrap_or(b'I');
                readies -= 1;
                if readies == 0 {
                    return Ok(reply);
                }
            }
            // ParseComplete, BindComplete, NoData, notices, EmptyQueryResponse.
            _ => {}
        }
    }
}

/// Gives back the connections that ended idle; the others (mid-transaction, unknown) are closed.
pub(super) fn release_all(conns: Vec<PooledConn>, statuses: &[u8]) {
    for (conn, status) in conns.into_iter().zip(statuses) {
        if *status == b'I' {
            conn.release();
        }
    }
}

/// Frames of an extended-protocol request for one shard: the unnamed statement `sql` with the
/// client's parameter types, a statement Describe when asked, the client's Bind (parameters and
/// result formats, re-aimed at the unnamed statement and portal), a portal Describe, Execute, Sync.
pub(super) fn extended_frames(
    sql: &str,
    param_types: &[u8],
    describe_statement: bool,
    bind_tail: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(sql.len() + bind_tail.len() + 64);
    let at = codec::begin(&mut out, b'P');
    codec::put_cstr(&mut out, b"");
    codec::put_cstr(&mut out, sql.as_bytes());
    out.put_slice(param_types);
    codec::finish(&mut out, at);
    if describe_statement {
        codec::put_frame(&mut out, b'D', b"S\0");
    }
    let at = codec::begin(&mut out, b'B');
    codec::put_cstr(&mut out, b"");
    codec::put_cstr(&mut out, b"");
    out.put_slice(bind_tail);
    codec::finish(&mut out, at);
    codec::put_frame(&mut out, b'D', b"P\0");
    codec::put_frame(&mut out, b'E', b"\0\0\0\0\0");
    codec::put_frame(&mut out, b'S', b"");
    out.freeze()
}

/// A simple query's frame.
pub(super) fn simple_frames(sql: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    codec::query(&mut out, sql);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_extended_request() {
        let frames = extended_frames("select $1", b"\0\x01\0\0\0\x14", true, b"\0\0\0\0\0\0");
        let mut at = 0;
        let mut tags = Vec::new();
        while let Ok(Some((tag, total))) = codec::peek_header(&frames[at..], usize::MAX) {
            tags.push(tag);
            at += total;
        }
        assert_eq!(at, frames.len());
        assert_eq!(tags, b"PDBDES");
    }
}
