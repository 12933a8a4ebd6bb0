//! Writes over several shards that must land everywhere or nowhere: a multi-row INSERT split per
//! shard, and a write of a reference table applied to every shard's copy. Each shard runs its part
//! inside a transaction it then prepares (`PREPARE TRANSACTION`); once every shard has prepared,
//! all commit, else all roll back (`two_phase`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::fanout::{self, ShardCall, ShardReply};
use super::scatter::Request;
use super::two_phase;
use super::Session;
use crate::error::ClientError;
use crate::pool::Pool;
use crate::protocol::codec;

/// One shard's part: the frames of its statement (one simple query, or an extended batch).
struct Part {
    shard: usize,
    statement: Bytes,
}

/// What the parts answered, once every shard committed.
struct Committed {
    replies: Vec<ShardReply>,
}

impl Session {
    /// A multi-row INSERT split into one INSERT per shard, all committed or none.
    pub(super) async fn split_insert(
        &mut self,
        request: &Request,
        row_shards: &[usize],
    ) -> Result<(), ClientError> {
        if request.extended.is_some() {
            return Err(ClientError::ShardRouting(
                "a multi-row INSERT with rows on several shards is split only when sent as a \
                 simple query"
                    .to_string(),
            ));
        }
        let parts = crate::sharding::split::split_insert(&request.sql, row_shards)
            .map_err(|e| ClientError::ShardRouting(e.to_string()))?;
        let parts = parts
            .iter()
            .map(|(shard, sql)| Part {
                shard: *shard,
                statement: fanout::simple_frames(sql),
            })
            .collect();
        let Some(done) = self.write_atomically(request, parts, "INSERT").await? else {
            return Ok(());
        };
        let rows: u64 = done
            .replies
            .iter()
            .flat_map(|r| r.tags.iter())
            .filter_map(|t| t.strip_prefix("INSERT 0 "))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        let row_desc = row_description(&done.replies);
        let mut returned = BytesMut::new();
        for row in returning_in_values_order(&done.replies, row_shards) {
            codec::put_frame(&mut returned, b'D', row);
        }
        let tag = format!("INSERT 0 {rows}");
        self.answer(request, None, row_desc.as_deref(), &returned, &tag);
        Ok(())
    }

    /// A write of a reference table, applied to every shard's copy, all committed or none.
    pub(super) async fn reference_write(&mut self, request: &Request) -> Result<(), ClientError> {
        let statement = Session::same_frames(request, &request.sql);
        let parts = (0..self.shard_count())
            .map(|shard| Part {
                shard,
                statement: statement.clone(),
            })
            .collect();
        let Some(done) = self.write_atomically(request, parts, "write").await? else {
            return Ok(());
        };
        // The copies are the same, so every shard answers the same: the first one speaks.
        let tags: Vec<&str> = done
            .replies
            .iter()
            .map(|r| r.tags.get(1).map_or("", String::as_str))
            .collect();
        if tags.iter().any(|t| *t != tags[0]) {
            tracing::warn!(
                ?tags,
                "reference table copies answered differently: they have diverged"
            );
        }
        let first = done.replies.first();
        let row_desc = row_description(&done.replies);
        let mut rows = BytesMut::new();
        for row in first.map(|r| r.rows.as_slice()).unwrap_or_default() {
            codec::put_frame(&mut rows, b'D', row);
        }
        let tag = tags.first().copied().unwrap_or_default().to_string();
        let param_desc = first.and_then(|r| r.param_desc.clone());
        self.answer(request, param_desc, row_desc.as_deref(), &rows, &tag);
        Ok(())
    }

    /// Runs each part in a prepared transaction on its shard's primary, then commits all or rolls
    /// back all. `None` when the client was already answered with the error.
    async fn write_atomically(
        &mut self,
        request: &Request,
        parts: Vec<Part>,
        what: &str,
    ) -> Result<Option<Committed>, ClientError> {
        let gid = format!("pgscale_{:016x}", rand::random::<u64>());
        let mut calls = Vec::with_capacity(parts.len());
        let mut pools: Vec<Arc<Pool>> = Vec::with_capacity(parts.len());
        for part in &parts {
            let mut frames = BytesMut::new();
            codec::query(&mut frames, "BEGIN");
            frames.extend_from_slice(&part.statement);
            codec::query(&mut frames, &format!("PREPARE TRANSACTION '{gid}'"));
            let pool = self.primary_pool_of(part.shard);
            pools.push(pool.clone());
            calls.push(ShardCall {
                shard: part.shard,
                pool,
                frames: frames.freeze(),
                probe_collation: false,
                readies: 3,
            });
        }
        let results = fanout::run_all(calls, &self.params).await;
        let mut participants = Vec::with_capacity(results.len());
        let mut replies = Vec::new();
        let mut problem: Option<(String, String)> = None;
        for ((result, pool), part) in results.into_iter().zip(pools).zip(&parts) {
            let shard = part.shard;
            match result {
                Ok((conn, reply)) => {
                    let prepared = reply.tags.iter().any(|t| t == "PREPARE TRANSACTION");
                    if let (None, Some((code, message))) = (&problem, reply.error_fields()) {
                        problem =
                            Some((code, format!("shard {shard}: {message}{}", hint(&message))));
                    }
                    participants.push(two_phase::Participant {
                        shard,
                        pool,
                        conn: Some(conn),
                        prepared,
                        clean: true,
                    });
                    replies.push(reply);
                }
                Err(failure) => {
                    problem.get_or_insert(("08006".to_string(), failure.to_string()));
                    participants.push(two_phase::Participant {
                        shard,
                        pool,
                        conn: None,
                        prepared: false,
                        clean: false,
                    });
                }
            }
        }
        let commit = problem.is_none();
        let finished = two_phase::finish(&mut participants, &gid, commit).await;
        two_phase::release(participants);
        let written: Vec<usize> = parts.iter().map(|p| p.shard).collect();
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.note_writes(&written);
        }
        let unresolved = finished.describe(&gid, commit);
        if let Some((code, message)) = problem {
            let text = match unresolved {
                None => format!("the {what} was rolled back on every shard: {message}"),
                Some(unresolved) => format!(
                    "the {what} failed ({message}) and could not be rolled back everywhere: \
                     {unresolved}"
                ),
            };
            let mut out = BytesMut::new();
            codec::error_fields(&mut out, b'E', "ERROR", &code, &text, None);
            self.answer_error(&out, request);
            return Ok(None);
        }
        if let Some(unresolved) = unresolved {
            return Err(ClientError::ShardUnavailable(format!(
                "the {what} committed on the other shards, but {unresolved}"
            )));
        }
        Ok(Some(Committed { replies }))
    }
}

/// What to do when a shard has two-phase commit turned off.
fn hint(message: &str) -> &'static str {
    if message.contains("prepared transactions are disabled") {
        ": writes over several shards commit with two-phase commit, which needs \
         max_prepared_transactions > 0 on every shard"
    } else {
        ""
    }
}

/// The first `RowDescription` of the replies (RETURNING), as a frame.
fn row_description(replies: &[ShardReply]) -> Option<BytesMut> {
    replies.iter().find_map(|r| r.row_desc.clone()).map(|d| {
        let mut frame = BytesMut::new();
        codec::put_frame(&mut frame, b'T', &d);
        frame
    })
}

/// RETURNING rows of a split INSERT in the order of its VALUES rows, as one server returns them
/// (ORMs match returned ids to rows by position). When a shard returned fewer rows than it was
/// given (`ON CONFLICT DO NOTHING`), that order is unknown: shard by shard.
fn returning_in_values_order<'a>(
    replies: &'a [ShardReply],
    row_shards: &[usize],
) -> Vec<&'a Bytes> {
    let per_shard = |shard: usize| {
        replies
            .iter()
            .find(|r| r.shard == shard)
            .map_or(0, |r| r.rows.len())
    };
    let complete = replies
        .iter()
        .all(|r| r.rows.len() == row_shards.iter().filter(|&&s| s == r.shard).count())
        && row_shards.iter().all(|&s| per_shard(s) > 0);
    if !complete {
        return replies.iter().flat_map(|r| r.rows.iter()).collect();
    }
    let mut next = vec![0usize; replies.len()];
    let mut out = Vec::with_capacity(row_shards.len());
    for &shard in row_shards {
        if let Some(i) = replies.iter().position(|r| r.shard == shard) {
            if let Some(row) = replies[i].rows.get(next[i]) {
                out.push(row);
                next[i] += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returning_rows_come_back_in_values_order() {
        let reply = |shard: usize, rows: &[&'static str]| ShardReply {
            shard,
            rows: rows
                .iter()
                .map(|r| Bytes::from_static(r.as_bytes()))
                .collect(),
            ..ShardReply::default()
        };
        let replies = [reply(0, &["a", "c"]), reply(2, &["b", "d"])];
        let order: Vec<&[u8]> = returning_in_values_order(&replies, &[0, 2, 0, 2])
            .into_iter()
            .map(|b| &b[..])
            .collect();
        assert_eq!(order, [&b"a"[..], b"b", b"c", b"d"]);
        // A shard skipped a row (ON CONFLICT DO NOTHING): shard by shard.
        let replies = [reply(0, &["a"]), reply(2, &["b", "d"])];
        let order: Vec<&[u8]> = returning_in_values_order(&replies, &[0, 2, 0, 2])
            .into_iter()
            .map(|b| &b[..])
            .collect();
        assert_eq!(order, [&b"a"[..], b"b", b"d"]);
    }
}
