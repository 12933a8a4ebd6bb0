//! The background health poller: one task per backend keeps a dedicated connection, polls every
//! `health.interval` under a `health.timeout` deadline, and feeds the backend's breaker and health
//! (round trip, WAL positions, replica lag).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, PollSample, Role};
use super::breaker::{BreakerState, FailureKind};
use super::lsn::{format_lsn, parse_lsn, WalLayout};
use super::query::{query_rows, Row};
use super::server::{ConnectSpec, ServerConn, ServerError};
use super::topology::{ShardBackends, Topology};
use crate::config::Config;

/// The primary's WAL insert position: with `synchronous_commit = off` a commit record may be inserted
/// but not yet written, so the write position could promise too little.
const PRIMARY_POLL: &str = "select pg_current_wal_insert_lsn()";
/// Where the primary's page headers sit (see [`WalLayout`]), asked once per connection.
const LAYOUT_POLL: &str =
    "select current_setting('wal_block_size'), pg_size_bytes(current_setting('wal_segment_size'))";
/// The receive LSN is what the replica measures its lag against while the primary is down.
const REPLICA_POLL: &str = "select pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
     extract(epoch from now() - pg_last_xact_replay_timestamp()), pg_last_wal_receive_lsn()";

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot connect: {0}")]
    Connect(#[source] ServerError),
    #[error("poll query failed: {0}")]
    Query(#[source] ServerError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer: {0}")]
    Answer(&'static str),
}

impl PollError {
    /// What the failure says about the backend. None: the server answered, but refused our login for
    /// reasons of configuration or load (bad password, unknown database, too many connections); it is
    /// up, so its breaker is left alone, but it counts as not fresh.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            PollError::Connect(ServerError::Refused { code, .. }) => {
                // Class 57, operator intervention: starting up, shutting down, crash recovery.
                code.starts_with("57").then_some(FailureKind::HealthCheck)
            }
            PollError::Connect(e) => FailureKind::of_connect_error(e),
            PollError::Query(_) | PollError::Timeout(_) | PollError::Answer(_) => {
                Some(FailureKind::HealthCheck)
            }
        }
    }
}

/// The running pollers of one topology; a reload stops them and starts the new topology's.
pub struct Pollers {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Pollers {
    /// Starts polling every backend of `topology` until `parent` fires or [`Pollers::stop`].
    pub fn start(
        topology: Arc<Topology>,
        config: Arc<Config>,
        parent: &CancellationToken,
    ) -> Pollers {
        let stop = parent.child_token();
        let task = spawn(topology, config, stop.clone());
        Pollers { stop, task }
    }

    /// Stops every poller and waits for them to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts one poller per backend of `topology`; the returned task ends once they all stopped, after
/// `stop` is cancelled. With no user to log in as, nothing is polled (replicas then take no reads).
pub fn spawn(
    topology: Arc<Topology>,
    config: Arc<Config>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(user) = config.health_user() else {
            tracing::error!("no [[users]] entry to run health checks as: replicas take no reads");
            return;
        };
        let mut tasks = JoinSet::new();
        for shard in &topology.shards {
            for backend in std::iter::once(&shard.primary).chain(&shard.replicas) {
                let spec = ConnectSpec {
                    addr: backend.addr.clone(),
                    user: user.server_user().to_string(),
                    password: user.server_password().map(str::to_string),
                    database: config.health.database.clone(),
                    timeout: config.health.timeout(),
                    application_name: Some("pgscale health"),
                };
                let poller = Poller::new(&topology, shard.index, backend, spec, &config);
                tasks.spawn(poller.run(stop.clone()));
            }
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// One backend's poller.
struct Poller {
    topology: Arc<Topology>,
    shard: usize,
    backend: Arc<Backend>,
    spec: ConnectSpec,
    interval: Duration,
    timeout: Duration,
    /// The dedicated connection; dropped after any failure.
    conn: Option<ServerConn>,
    /// Primaries: the WAL layout, learnt on each new connection.
    layout: Option<WalLayout>,
    /// The last failure logged, so a persistent one is logged once, not every interval.
    last_problem: Option<String>,
    /// Replicas: whether the last poll found it in recovery (to log a promotion once).
    last_in_recovery: Option<bool>,
}

impl Poller {
    fn new(
        topology: &Arc<Topology>,
        shard: usize,
        backend: &Arc<Backend>,
        spec: ConnectSpec,
        config: &Config,
    ) -> Poller {
        Poller {
            topology: topology.clone(),
            shard,
            backend: backend.clone(),
            spec,
            interval: config.health.interval(),
            timeout: config.health.timeout(),
            conn: None,
            layout: None,
            last_problem: None,
            last_in_recovery: None,
        }
    }

    fn shard(&self) -> Option<&ShardBackends> {
        self.topology.shards.get(self.shard)
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.may_poll() {
                continue;
            }
            let outcome = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                outcome = self.poll() => outcome,
            };
            self.record(outcome);
        }
    }

    /// Closed (or half-open, with our probe out): poll. Open: wait for [`Backend::try_probe`], and
    /// start the probe on a new connection (the old one may be as dead as the server was).
    fn may_poll(&mut self) -> bool {
        match self.backend.breaker.state() {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => {
                self.conn = None;
                self.backend.try_probe()
            }
        }
    }

    fn record(&mut self, outcome: Result<(), PollError>) {
        let backend = &self.backend;
        match outcome {
            Ok(()) => {
                if self.last_problem.take().is_some() {
                    let role = backend.role.as_str();
                    tracing::info!(backend = %backend.addr, role, "health poll succeeded again");
                }
                backend.record_success();
            }
            Err(error) => {
                self.conn = None;
                self.layout = None;
                backend.health.record_failed_poll();
                let kind = error.failure_kind();
                let text = error.to_string();
                if self.last_problem.as_deref() != Some(text.as_str()) {
                    let (addr, role) = (&backend.addr, backend.role.as_str());
                    match kind {
                        Some(kind) => tracing::warn!(
                            backend = %addr, role, kind = kind.as_str(), error = %text,
                            "health poll failed"
                        ),
                        // Up but refusing us: bad [health] user or database, or too many connections.
                        None => tracing::error!(
                            backend = %addr, role, error = %text,
                            "health check login refused; the backend counts as not fresh, its breaker is left alone"
                        ),
                    }
                    self.last_problem = Some(text);
                }
                if let Some(kind) = kind {
                    backend.record_failure(kind);
                }
            }
        }
    }

    /// One poll: connect if needed, then the role's query, recorded into health (and, for a primary,
    /// into the shard's [`PrimaryLsn`](super::topology::PrimaryLsn)).
    async fn poll(&mut self) -> Result<(), PollError> {
        if self.conn.is_none() {
            let conn = ServerConn::connect(&self.spec)
                .await
                .map_err(PollError::Connect)?;
            self.conn = Some(conn);
        }
        match self.backend.role {
            Role::Primary => self.poll_primary().await,
            Role::Replica => self.poll_replica().await,
        }
    }

    /// Runs `sql` under the poll deadline; returns its rows and how long it took.
    async fn query(&mut self, sql: &str) -> Result<(Vec<Row>, Duration), PollError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or(PollError::Answer("no connection"))?;
        let started = Instant::now();
        let rows = tokio::time::timeout(self.timeout, query_rows(conn, sql))
            .await
            .map_err(|_| PollError::Timeout(self.timeout))?
            .map_err(PollError::Query)?;
        Ok((rows, started.elapsed()))
    }

    async fn poll_primary(&mut self) -> Result<(), PollError> {
        let layout = match self.layout {
            Some(layout) => layout,
            None => {
                let (rows, _) = self.query(LAYOUT_POLL).await?;
                let layout = parse_layout(&rows).unwrap_or_else(|| {
                    tracing::warn!(backend = %self.backend.addr, "cannot read the WAL layout; assuming 8 kB pages, 16 MB segments");
                    WalLayout::DEFAULT
                });
                self.layout = Some(layout);
                layout
            }
        };
        let started = Instant::now();
        let (rows, rtt) = self.query(PRIMARY_POLL).await?;
        let insert = single_value(&rows)
            .and_then(parse_lsn)
            .ok_or(PollError::Answer(
                "pg_current_wal_insert_lsn() is not an LSN",
            ))?;
        let end = layout.insert_to_end(insert);
        if let Some(shard) = self.shard() {
            shard.primary_lsn.record(end, started);
        }
        let sample = PollSample {
            rtt,
            in_recovery: Some(false),
            ..PollSample::default()
        };
        self.backend.health.record_poll(&sample, Instant::now());
        Ok(())
    }

    async fn poll_replica(&mut self) -> Result<(), PollError> {
        let (rows, rtt) = self.query(REPLICA_POLL).await?;
        // A dead or hung primary's last position may never reach the replicas (WAL it inserted but
        // never sent): measured against it, every replica would turn stale and reads would fail
        // exactly while the primary is down. Only a live primary's position counts.
        let now = Instant::now();
        let primary = self
            .shard()
            .filter(|s| s.primary.breaker.is_closed() && s.primary.health.fresh(now))
            .and_then(|s| s.primary_lsn.latest());
        let sample = replica_sample(&rows, rtt, primary)?;
        if sample.in_recovery != self.last_in_recovery {
            if sample.in_recovery == Some(false) {
                tracing::warn!(backend = %self.backend.addr, shard = self.shard, "replica is not in recovery (promoted?): it takes no reads");
            }
            self.last_in_recovery = sample.in_recovery;
        }
        tracing::trace!(
            backend = %self.backend.addr,
            replay_lsn = sample.replay_lsn.map(format_lsn),
            lag_bytes = sample.lag_bytes,
            lag_ms = sample.lag.map(|l| l.as_millis() as u64),
            "replica polled"
        );
        self.backend.health.record_poll(&sample, Instant::now());
        Ok(())
    }
}

/// The only value of a one-row, one-column result.
fn single_value(rows: &[Row]) -> Option<&str> {
    match rows {
        [row] => row.first()?.as_deref(),
        _ => None,
    }
}

fn parse_layout(rows: &[Row]) -> Option<WalLayout> {
    let [row] = rows else { return None };
    let number = |i: usize| row.get(i)?.as_deref()?.trim().parse::<u64>().ok();
    WalLayout::new(number(0)?, number(1)?)
}

/// Turns a replica poll's row into a sample. `primary`: the shard primary's latest LSN (already the
/// end of its WAL, see [`WalLayout::insert_to_end`]) while the primary is up, else None.
///
/// Against a live primary: a replica whose replay has reached its position has no lag, whatever the
/// age of its last replayed transaction (an idle primary commits nothing); one behind lags by that
/// age. Without one, the replica is measured against what it received (`pg_last_wal_receive_lsn()`):
/// bytes received but not replayed are its byte lag, and no time lag can be measured (nothing new
/// is being committed), so only a replica stuck behind its own received WAL can exceed a limit.
fn replica_sample(
    rows: &[Row],
    rtt: Duration,
    primary: Option<u64>,
) -> Result<PollSample, PollError> {
    let [row] = rows else {
        return Err(PollError::Answer("replica poll returned no single row"));
    };
    let column = |i: usize| row.get(i).and_then(|v| v.as_deref());
    let in_recovery = match column(0) {
        Some("t") => true,
        Some("f") => false,
        _ => return Err(PollError::Answer("pg_is_in_recovery() is not a boolean")),
    };
    let replay_lsn = match column(1) {
        None => None,
        Some(text) => Some(
            parse_lsn(text).ok_or(PollError::Answer("pg_last_wal_replay_lsn() is not an LSN"))?,
        ),
    };
    let replay_age = match column(2) {
        None => None,
        Some(text) => {
            let secs: f64 = text
                .trim()
                .parse()
                .map_err(|_| PollError::Answer("replay lag is not a number"))?;
            // Clocks of primary and replica may disagree a little: a negative age is none.
            Duration::try_from_secs_f64(secs.max(0.0)).ok()
        }
    };
    let received = match column(3) {
        None => None,
        Some(text) => Some(
            parse_lsn(text).ok_or(PollError::Answer("pg_last_wal_receive_lsn() is not an LSN"))?,
        ),
    };
    let lag_bytes = match (primary.or(received), replay_lsn) {
        (Some(reference), Some(replayed)) => Some(reference.saturating_sub(replayed)),
        _ => None,
    };
    let lag = match lag_bytes {
        Some(0) => Some(Duration::ZERO),
        _ if primary.is_some() => replay_age,
        _ => None,
    };
    Ok(PollSample {
        rtt,
        in_recovery: Some(in_recovery),
        replay_lsn,
        lag_bytes,
        lag,
    })
}

#[cfg(test)]
mod tests;
