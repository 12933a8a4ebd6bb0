//! A key-less read fanned out to several shards, streamed: each shard's rows are read only when
//! the merge needs them and the merged rows go to the client in batches, so the proxy holds a
//! batch, a read buffer per shard and what the merge keeps (ORDER BY heads, groups), never whole
//! results. All of that counts against the proxy-wide fan-out budget; a read that would pass it
//! fails with SQLSTATE 54000. Shard connections that ended their answer go back to the pool; any
//! other (a read stopped early, a failure) is closed.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::select_all;
use tokio::io::AsyncReadExt;

use super::fanout::{self, ShardCall, ShardFailure};
use super::scatter::{shard_result_formats, Request};
use super::{EndReason, Flow, Session};
use crate::error::ClientError;
use crate::pool::server::ServerError;
use crate::pool::PooledConn;
use crate::protocol::codec;
use crate::sharding::budget::{MemoryBudget, OverBudget, Reservation};
use crate::sharding::merge::{self, MergeError, MergeSettings, Step, StreamMerge, TextOrder, Want};

/// Bytes read from a shard at a time.
const READ_CHUNK: usize = 16 << 10;
/// Merged rows are written to the client once this many bytes are batched.
const OUT_BATCH: usize = 64 << 10;
/// After a merge that held this much, freed memory is handed back to the OS.
const TRIM_AFTER: usize = 16 << 20;
/// The largest frame a shard may send (one row).
const MAX_FRAME: usize = fanout::MAX_SHARD_RESULT_BYTES;

/// Why a fan-out read stopped.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    Budget(OverBudget),
    #[error(transparent)]
    Shard(Box<ShardFailure>),
    #[error("{0}")]
    Merge(MergeError),
    /// A shard answered with an error (its whole ErrorResponse frame).
    #[error("a shard returned an error")]
    ShardError(BytesMut),
    #[error("the client went away")]
    ClientGone,
}

/// One shard's connection while its answer streams in.
struct ShardStream {
    shard: usize,
    conn: PooledConn,
    buf: BytesMut,
    /// The buffer's share of the budget.
    reservation: Reservation,
    row_desc: Option<Bytes>,
    param_desc: Option<Bytes>,
    /// The shard's first ErrorResponse, whole.
    error: Option<BytesMut>,
    /// Transaction status of the final ReadyForQuery, once read.
    status: Option<u8>,
}

/// What a shard sent next, past its header.
enum Event {
    Row(Bytes),
    /// ReadyForQuery: the shard's answer is over (its `error` says whether it failed).
    End,
}

impl ShardStream {
    /// A whole frame if one is buffered; reserves room (within the budget) for one that is not.
    fn buffered(&mut self) -> Result<Option<(u8, BytesMut)>, Stop> {
        match codec::peek_header(&self.buf, MAX_FRAME) {
            Ok(Some((tag, total))) if self.buf.len() >= total => {
                let mut frame = self.buf.split_to(total);
                frame.advance(codec::HEADER_LEN);
                Ok(Some((tag, frame)))
            }
            Ok(Some((_, total))) => {
                if self.buf.capacity() < total {
                    self.reservation
                        .set(total + READ_CHUNK)
                        .map_err(Stop::Budget)?;
                    self.buf.reserve(total - self.buf.len());
                }
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.failed(ServerError::Protocol {
                addr: self.conn.pool().key.addr.to_string(),
                what: e.to_string(),
            })),
        }
    }

    /// Reads more from the shard. Cancel-safe: the only await is the read itself.
    async fn fill(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            // A wide row's buffer is not kept for the rest of the answer.
            self.buf = BytesMut::new();
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        self.reservation
            .set(self.buf.capacity())
            .map_err(Stop::Budget)?;
        match self.conn.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(self.failed(ServerError::Closed {
                addr: self.conn.pool().key.addr.to_string(),
            })),
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(self.conn.io_error(e))),
        }
    }

    fn failed(&self, e: ServerError) -> Stop {
        Stop::Shard(Box::new(fanout::server_failure(&self.conn, self.shard, e)))
    }

    /// Reads up to the RowDescription (or to the end, when the shard refused the query).
    async fn read_header(&mut self) -> Result<(), Stop> {
        loop {
            let Some((tag, body)) = self.buffered()? else {
                self.fill().await?;
                continue;
            };
            match tag {
                b'T' => {
                    self.row_desc = Some(body.freeze());
                    return Ok(());
                }
                b't' => self.param_desc = Some(body.freeze()),
                b'n' => return Ok(()),
                _ => {
                    if self.other(tag, body) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Errors, ParameterStatus and ReadyForQuery (true: the answer is over); the rest is ignored.
    fn other(&mut self, tag: u8, body: BytesMut) -> bool {
        match tag {
            b'E' if self.error.is_none() => {
                let mut frame = BytesMut::with_capacity(body.len() + codec::HEADER_LEN);
                codec::put_frame(&mut frame, b'E', &body);
                self.error = Some(frame);
            }
            b'S' => self.conn.note_parameter_status(&body),
            b'Z' => {
                self.status = Some(body.first().copied().unwrap_or(b'E'));
                return true;
            }
            _ => {}
        }
        false
    }

    /// The next row or the end, if buffered. Rows are copied out, so that what the merge keeps
    /// does not pin the read buffer.
    fn buffered_event(&mut self) -> Result<Option<Event>, Stop> {
        while let Some((tag, body)) = self.buffered()? {
            match tag {
                b'D' => return Ok(Some(Event::Row(Bytes::copy_from_slice(&body)))),
                _ => {
                    if self.other(tag, body) {
                        return Ok(Some(Event::End));
                    }
                }
            }
        }
        Ok(None)
    }

    async fn event(&mut self) -> Result<Event, Stop> {
        loop {
            if let Some(event) = self.buffered_event()? {
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// Reads and drops the rest of the answer (rows past a LIMIT).
    async fn drain(&mut self) -> Result<(), Stop> {
        while self.status.is_none() {
            self.event().await?;
        }
        Ok(())
    }

    /// Back to the pool when its answer is over and it is idle; closed otherwise.
    fn finish(self) {
        if self.status == Some(b'I') {
            self.conn.release();
        }
    }
}

/// The next event of the shard `want` names, or of whichever open shard answers first.
async fn next_event(streams: &mut [ShardStream], want: Want) -> Result<(usize, Event), Stop> {
    if let Want::Shard(i) = want {
        let stream = streams
            .get_mut(i)
            .ok_or(Stop::Merge(MergeError::NoShards))?;
        return Ok((i, stream.event().await?));
    }
    loop {
        for (i, stream) in streams.iter_mut().enumerate() {
            if stream.status.is_none() {
                if let Some(event) = stream.buffered_event()? {
                    return Ok((i, event));
                }
            }
        }
        let reads: Vec<_> = (streams.iter_mut())
            .filter(|s| s.status.is_none())
            .map(|s| Box::pin(s.fill()))
            .collect();
        if reads.is_empty() {
            return Err(Stop::Merge(MergeError::NoShards));
        }
        select_all(reads).await.0?;
    }
}

/// Returns the allocator's free memory to the OS: glibc keeps what a big merge freed (hundreds of
/// MB after millions of groups) otherwise.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Session {
    /// A read over several shards, merged as the rows stream in.
    pub(super) async fn scatter_read(
        &mut self,
        request: &Request,
        only: Option<Vec<usize>>,
    ) -> Result<Flow, ClientError> {
        let plan = self
            .shared
            .scatter_plans
            .get(&request.sql)
            .map_err(|e| ClientError::ShardRouting(e.to_string()))?;
        let shards = only.unwrap_or_else(|| (0..self.shard_count()).collect());
        let frames = match &request.extended {
            Some((types, tail)) => {
                let tail = shard_result_formats(tail, |client| plan.shard_result_formats(client))
                    .map_err(ClientError::ShardRouting)?;
                fanout::extended_frames(plan.shard_sql(), types, request.describe_statement, &tail)
            }
            None => fanout::simple_frames(plan.shard_sql()),
        };
        let database = self.pool.key.database.clone();
        let known_bytewise = self.shared.bytewise_text.get(&database).map(|b| *b);
        let mut calls = Vec::with_capacity(shards.len());
        for (i, shard) in shards.into_iter().enumerate() {
            calls.push(ShardCall {
                shard,
                pool: self.read_pool(shard)?,
                frames: frames.clone(),
                probe_collation: i == 0 && known_bytewise.is_none(),
                readies: 1,
            });
        }
        let budget = match &self.shared.sharding {
            Some(sharding) => sharding.fanout_budget.clone(),
            None => MemoryBudget::new(crate::sharding::budget::DEFAULT_BYTES),
        };
        let mut streams = Vec::with_capacity(calls.len());
        let mut failure = None;
        let mut learnt = None;
        for (result, call) in fanout::start_all(&calls, &self.params)
            .await
            .into_iter()
            .zip(&calls)
        {
            match result {
                Ok((conn, bytewise)) => {
                    learnt = learnt.or(bytewise);
                    streams.push(ShardStream {
                        shard: call.shard,
                        conn,
                        buf: BytesMut::new(),
                        reservation: Reservation::new(&budget),
                        row_desc: None,
                        param_desc: None,
                        error: None,
                        status: None,
                    });
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(failure) = failure {
            // The others are mid-answer: closed.
            drop(streams);
            tracing::warn!(%failure, "a shard failed during a multi-shard read");
            return Err(ClientError::ShardUnavailable(failure.to_string()));
        }
        let bytewise = match learnt {
            Some(learnt) => {
                self.shared.bytewise_text.insert(database, learnt);
                learnt
            }
            None => known_bytewise.unwrap_or(false),
        };
        let settings = MergeSettings {
            text_order: if bytewise {
                TextOrder::Bytewise
            } else {
                TextOrder::Collated
            },
            extra_float_digits: self.params.extra_float_digits(),
        };
        let mut merged = Reservation::new(&budget);
        let result = self
            .stream_merged(request, &plan, &settings, &mut streams, &mut merged)
            .await;
        let peak = merged.peak();
        drop(merged);
        if peak >= TRIM_AFTER {
            give_back_freed_memory();
        }
        match result {
            Ok(()) => {
                for stream in streams {
                    stream.finish();
                }
                Ok(Flow::Continue)
            }
            Err(stop) => {
                for stream in streams {
                    stream.finish();
                }
                self.shrink_client_buffer();
                match stop {
                    Stop::ClientGone => Ok(Flow::End(EndReason::ClientGone)),
                    Stop::ShardError(frame) => {
                        self.answer_error(&frame, request);
                        Ok(Flow::Continue)
                    }
                    Stop::Budget(over) => Err(ClientError::FanoutTooLarge(format!(
                        "this read over several shards needs more memory in pgscale than the \
                         fan-out budget has free ({over}; sharding.fanout_memory_budget_bytes is \
                         shared by every client's multi-shard reads); add the shard key to WHERE \
                         so that it runs on one shard, add a LIMIT, or raise \
                         sharding.fanout_memory_budget_bytes"
                    ))),
                    Stop::Shard(failure) => {
                        tracing::warn!(%failure, "a shard failed during a multi-shard read");
                        Err(ClientError::ShardUnavailable(failure.to_string()))
                    }
                    Stop::Merge(e) => Err(ClientError::ShardRouting(e.to_string())),
                }
            }
        }
    }

    /// Reads every shard's header, then streams the merged rows and the end of the answer.
    async fn stream_merged(
        &mut self,
        request: &Request,
        plan: &merge::ScatterPlan,
        settings: &MergeSettings,
        streams: &mut [ShardStream],
        merged: &mut Reservation,
    ) -> Result<(), Stop> {
        for stream in streams.iter_mut() {
            stream.read_header().await?;
        }
        if let Some(error) = streams.iter_mut().find_map(|s| s.error.take()) {
            return Err(Stop::ShardError(error));
        }
        let mut columns = Vec::with_capacity(streams.len());
        for stream in streams.iter() {
            let Some(desc) = &stream.row_desc else {
                return Err(Stop::Merge(MergeError::Malformed("RowDescription")));
            };
            columns.push(merge::parse_row_description(desc).map_err(Stop::Merge)?);
        }
        let described: Vec<&[merge::Column]> = columns.iter().map(Vec::as_slice).collect();
        let mut stream = StreamMerge::new(plan, &described, settings).map_err(Stop::Merge)?;
        let row_desc = merge::row_description_frame(stream.columns());
        let param_desc = streams.iter().find_map(|s| s.param_desc.clone());
        let executes = self.answer_head(request, param_desc, Some(&row_desc));
        let mut count: u64 = 0;
        let mut discard = BytesMut::new();
        loop {
            let out = match executes {
                true => &mut self.to_client,
                false => &mut discard,
            };
            let step = stream.next(out).map_err(Stop::Merge)?;
            discard.clear();
            match step {
                Step::Row => {
                    count += 1;
                    if self.to_client.len() >= OUT_BATCH {
                        merged
                            .set(stream.held_bytes() + self.to_client.capacity())
                            .map_err(Stop::Budget)?;
                        self.send_batch().await?;
                    }
                }
                Step::Done => break,
                Step::Need(want) => {
                    let (i, event) = next_event(streams, want).await?;
                    match event {
                        Event::Row(body) => stream.push(i, body).map_err(Stop::Merge)?,
                        Event::End => {
                            if let Some(error) = streams[i].error.take() {
                                return Err(Stop::ShardError(error));
                            }
                            stream.end(i).map_err(Stop::Merge)?;
                        }
                    }
                    merged
                        .set(stream.held_bytes() + self.to_client.capacity())
                        .map_err(Stop::Budget)?;
                }
            }
        }
        drop(stream);
        for shard in streams.iter_mut() {
            // Past a LIMIT the rest is not needed; a shard that cannot be drained is closed.
            if shard.drain().await.is_err() {
                shard.status = None;
            }
        }
        self.answer_tail(request, &merge::command_tag(count));
        Ok(())
    }

    /// Writes the batched rows to the client, waiting while it is slow to take them.
    async fn send_batch(&mut self) -> Result<(), Stop> {
        if let Some(routing) = self.routing.as_deref_mut() {
            routing.on_client_bytes();
        }
        self.meter.sent(self.to_client.len());
        let result = self.client.write_all(&self.to_client).await;
        self.to_client.clear();
        result.map_err(|_| Stop::ClientGone)
    }

    /// Lets go of a large output buffer.
    fn shrink_client_buffer(&mut self) {
        if self.to_client.is_empty() && self.to_client.capacity() > OUT_BATCH {
            self.to_client = BytesMut::new();
        }
    }
}
