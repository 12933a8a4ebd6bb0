//! What one session counts: requests and transactions with their durations, bytes each way, and the
//! client's state as `SHOW CLIENTS` shows it. Kept in plain fields and handed to the shared per-database
//! counters at each `ReadyForQuery`, so the data path pays a few additions per request, nothing per row.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::Session;
use crate::pause::Pass;
use crate::stats::{ClientListing, ClientState, DbStats, Route};

/// Per-session counts (the totals also feed the connection's end-of-session log line).
pub(crate) struct Meter {
    pub listing: ClientListing,
    pub db: Arc<DbStats>,
    /// The pass through this database's `PAUSE` gate, held while the session uses servers.
    pub pass: Option<Pass>,
    /// The resharding era the session's current use of servers began in (sharded proxies).
    pub ticket: Option<crate::sharding::freeze::Ticket>,
    /// `[log] statements`: statement texts are logged (debugging only).
    pub log_statements: bool,
    request_started: Option<Instant>,
    xact_started: Option<Instant>,
    pub queries: u64,
    pub transactions: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bytes not yet added to the shared counters.
    unflushed_in: u64,
    unflushed_out: u64,
}

impl Meter {
    pub fn new(listing: ClientListing, db: Arc<DbStats>, log_statements: bool) -> Meter {
        Meter {
            listing,
            db,
            pass: None,
            ticket: None,
            log_statements,
            request_started: None,
            xact_started: None,
            queries: 0,
            transactions: 0,
            bytes_in: 0,
            bytes_out: 0,
            unflushed_in: 0,
            unflushed_out: 0,
        }
    }

    pub fn client_id(&self) -> u64 {
        self.listing.entry.id
    }

    /// A server connection was attached: the request's clock restarts, so query time excludes the
    /// wait for a connection (counted as wait time), as in PgBouncer.
    pub fn attached(&mut self) {
        if self.request_started.is_some() {
            self.request_started = Some(Instant::now());
        }
    }

    /// Bytes arrived from the client: a request starts if none was running.
    pub fn received(&mut self, n: usize) {
        self.bytes_in += n as u64;
        self.unflushed_in += n as u64;
        if self.request_started.is_none() {
            let now = Instant::now();
            self.request_started = Some(now);
            self.xact_started.get_or_insert(now);
            self.listing.entry.set_request_time(SystemTime::now());
        }
    }

    pub fn sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
        self.unflushed_out += n as u64;
    }

    pub fn set_state(&self, state: ClientState) {
        self.listing.entry.set_state(state);
    }

    /// A request ended with `ReadyForQuery` (`status` is its transaction status). Returns the
    /// request's and (if it ended) the transaction's duration in seconds, for the histograms.
    /// `more` says whether further requests of a pipeline are still being answered (their clock
    /// starts now).
    pub fn request_done(
        &mut self,
        route: Route,
        status: u8,
        more: bool,
    ) -> (Option<f64>, Option<f64>) {
        let now = Instant::now();
        let took = self.request_started.take().map(|t| now - t);
        if more {
            self.request_started = Some(now);
        }
        self.queries += 1;
        self.db.add_query(route, took.unwrap_or_default());
        let mut xact = None;
        if status == b'I' {
            if let Some(started) = self.xact_started.take() {
                self.transactions += 1;
                self.db.add_transaction(now - started);
                xact = Some((now - started).as_secs_f64());
            }
        }
        self.flush_bytes();
        (took.map(|t| t.as_secs_f64()), xact)
    }

    /// The proxy answered a request itself (a refusal, a `BEGIN` it defers, a `Sync` with nothing
    /// pending): no query reached a server, so none is counted; the clocks restart.
    pub fn answered_by_proxy(&mut self, status: u8) {
        self.request_started = None;
        if status == b'I' {
            self.xact_started = None;
        }
    }

    pub fn flush_bytes(&mut self) {
        self.db.add_bytes(self.unflushed_in, self.unflushed_out);
        self.unflushed_in = 0;
        self.unflushed_out = 0;
    }
}

impl Session {
    /// Waits at this database's `PAUSE` gate before the session takes server connections for a new
    /// transaction (no-op while it already holds its pass).
    pub(super) async fn enter_gate(&mut self) {
        if self.meter.pass.is_some() {
            return;
        }
        let gates = self.shared.gates.clone();
        let entry = self.meter.listing.entry.clone();
        let pass = gates
            .enter(&self.pool.key.database, || {
                entry.set_state(ClientState::Waiting)
            })
            .await;
        self.meter.pass = Some(pass);
        if let Some(sharding) = &self.shared.sharding {
            self.meter.ticket = Some(sharding.cutover.ticket());
        }
        // After the gate: a switchover (PAUSE, RELOAD with a new primary, RESUME) is picked up by
        // the clients it held.
        if self.server.is_none() {
            self.refresh_pools();
        }
    }

    /// Gives the gate pass back once the session holds nothing and owes nothing.
    pub(super) fn leave_gate_if_idle(&mut self) {
        if self.meter.pass.is_some() && self.server.is_none() && self.is_idle() {
            self.meter.pass = None;
            self.meter.ticket = None;
            self.meter.set_state(ClientState::Idle);
        }
    }

    /// A request ended: counts it under the route of the server that answered (or `route`).
    pub(super) fn request_done(&mut self, route: Option<Route>, status: u8, more: bool) {
        let route = route.unwrap_or_else(|| match &self.server {
            Some(conn) if conn.pool().backend().role == crate::pool::backend::Role::Replica => {
                Route::Replica
            }
            _ => Route::Primary,
        });
        let (query, transaction) = self.meter.request_done(route, status, more);
        if let Some(seconds) = query {
            self.shared.metrics.query_duration(route, seconds);
        }
        if let Some(seconds) = transaction {
            self.shared.metrics.transaction_duration(seconds);
        }
    }

    /// Notes what the proxy itself is about to send the client (in `to_client`): its errors by
    /// SQLSTATE, and whether it ends the request with its own `ReadyForQuery`.
    pub(super) fn note_proxy_replies(&mut self) {
        let out = &self.to_client;
        let mut at = 0;
        let mut last_status = None;
        while let Ok(Some((tag, total))) =
            crate::protocol::codec::peek_header(&out[at..], usize::MAX)
        {
            if at + total > out.len() {
                break;
            }
            let body = &out[at + crate::protocol::codec::HEADER_LEN..at + total];
            match tag {
                b'E' => {
                    let (code, _) = crate::protocol::codec::parse_error_fields(body);
                    self.shared.stats.count_error(code.as_bytes());
                }
                b'Z' => last_status = body.first().copied(),
                _ => {}
            }
            at += total;
        }
        if let Some(status) = last_status {
            self.meter.answered_by_proxy(status);
        }
    }
}
