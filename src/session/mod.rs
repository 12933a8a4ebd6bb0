//! One client connection from startup to goodbye: authentication, the run loop that moves frames
//! between the client and whichever server connection it holds, and clean-up.
//!
//! Split by concern: `startup` (login and the first `ReadyForQuery`), `client_side` (frames from the
//! client), `server_side` (frames from the server), `routing` (read/write splitting of each unit),
//! `lifecycle` (checkout, release, goodbye), `functions` (which functions write, per database).

mod atomic_writes;
mod client_side;
mod copy_split;
mod cutover;
mod fanout;
mod fanout_read;
pub mod functions;
mod lifecycle;
mod meter;
pub mod params;
pub mod pending;
pub mod prepared;
mod routing;
mod scatter;
mod server_side;
mod sharded;
mod startup;
mod state;
mod targets;
mod two_phase;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::cancel::{CancelRegistry, CancelSlot};
use crate::config::{Config, PoolMode};
use crate::pause::Gates;
use crate::pool::topology::Topology;
use crate::pool::{Pool, PooledConn, Pools};
use crate::prometheus::Metrics;
use crate::protocol::client_auth;
use crate::protocol::scram::ScramSecret;
use crate::router::cache::PlanCache;
use crate::router::session_ops::SessionOp;
use crate::sharding::scatter_cache::ScatterPlans;
use crate::sharding::Sharding;
use crate::stats::Stats;
use crate::tls::ClientStream;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use functions::Catalogs;
use params::ClientParams;
use pending::Pending;
use prepared::{ClientStatements, StatementRegistry};
use routing::Routing;
pub(crate) use startup::connect_spec;

/// The parts of the config a reload replaces together.
pub struct Live {
    pub config: Arc<Config>,
    /// Client users' SCRAM verifiers, derived once per config.
    pub scram_secrets: HashMap<String, ScramSecret>,
    /// Every backend server, with its health and circuit breaker.
    pub topology: Arc<Topology>,
}

/// What every session shares.
pub struct Shared {
    /// Config, secrets and topology; swapped whole by a reload (`crate::reload`).
    live: ArcSwap<Live>,
    /// Bumped by each reload: sessions pick up new pools at their next transaction.
    pub generation: AtomicU64,
    /// The file the config came from (what `RELOAD` and SIGHUP re-read).
    pub config_path: Option<PathBuf>,
    /// The config file `RESHARD SWITCH` adopted (re-read by later reloads instead).
    pub(crate) adopted_config_path: Mutex<Option<PathBuf>>,
    /// The config a `RESHARD FREEZE` loaded, installed by `RESHARD SWITCH`.
    pub(crate) reshard_pending: Mutex<Option<crate::admin::reshard::PendingSwitch>>,
    pub pools: Arc<Pools>,
    /// Counters and client registry behind `SHOW` and the metrics.
    pub stats: Stats,
    /// `PAUSE`/`RESUME`.
    pub gates: Arc<Gates>,
    pub metrics: Metrics,
    /// The running health pollers, restarted by a reload that changes the topology.
    pub(crate) health: Mutex<Option<crate::pool::health::Pollers>>,
    /// Serializes reloads (SIGHUP and `RELOAD` may race).
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Routing decisions by statement shape.
    pub plans: PlanCache,
    /// Which functions write, per database.
    pub catalogs: Arc<Catalogs>,
    /// Sharded routing (None: every statement goes to the first shard).
    pub sharding: Option<Arc<Sharding>>,
    /// Fan-out plans by statement text.
    pub scatter_plans: ScatterPlans,
    /// Per database: whether its collation orders text bytewise (`C`/`POSIX`), learnt at its first
    /// fan-out read; merging text sort keys needs it.
    pub bytewise_text: DashMap<String, bool>,
    /// Reads sent again to another server after theirs failed before answering.
    pub reads_retried: AtomicU64,
    pub statements: StatementRegistry,
    pub cancels: CancelRegistry,
    /// Fires when the proxy starts shutting down: idle clients are told and disconnected.
    pub shutdown: CancellationToken,
    /// Fires when the shutdown timeout has passed: every session ends now.
    pub hard_stop: CancellationToken,
    /// Process ids handed to clients in transaction mode (they never match a real server).
    pub next_pid: AtomicI32,
    /// The client-side TLS acceptor (None: `tls_mode = "disable"`); a reload swaps it, so new
    /// connections get re-read certificate files.
    pub tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        config_path: Option<PathBuf>,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> Result<Arc<Shared>, String> {
        Ok(Arc::new(Shared {
            live: ArcSwap::from_pointee(Live {
                scram_secrets: client_auth::scram_secrets(&config.users),
                topology: Arc::new(Topology::from_config(&config)?),
                config: config.clone(),
            }),
            generation: AtomicU64::new(0),
            config_path,
            adopted_config_path: Mutex::new(None),
            reshard_pending: Mutex::new(None),
            stats: Stats::new(),
            gates: Arc::new(Gates::default()),
            metrics: Metrics::new(),
            health: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            plans: PlanCache::with_rules(
                config.routing.plan_cache_size,
                Arc::new(config.sharding_rules()),
            ),
            catalogs: Arc::new(Catalogs::new(&config.routing)),
            sharding: sharding_of(&config)?,
            scatter_plans: ScatterPlans::new(config.routing.plan_cache_size),
            bytewise_text: DashMap::new(),
            reads_retried: AtomicU64::new(0),
            pools: Arc::new(Pools::default()),
            statements: StatementRegistry::default(),
            cancels: CancelRegistry::default(),
            shutdown,
            hard_stop,
            next_pid: AtomicI32::new(1_000_000),
            tls: arc_swap::ArcSwapOption::empty(),
        }))
    }
}

impl Shared {
    /// The config in force (a reload may replace it; hold the `Arc` for a consistent view).
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// The config file reloads read: the one `RESHARD SWITCH` adopted, else the one started from.
    pub fn current_config_path(&self) -> Option<PathBuf> {
        let adopted = self.adopted_config_path.lock().ok().and_then(|p| p.clone());
        adopted.or_else(|| self.config_path.clone())
    }

    /// Every backend server as of the last reload.
    pub fn topology(&self) -> Arc<Topology> {
        self.live.load().topology.clone()
    }

    /// Config, secrets and topology together.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Installs a reloaded config; sessions move to it at their next transaction.
    pub(crate) fn install(&self, live: Live) {
        self.live.store(Arc::new(live));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sharded routing when the config shards tables or has several shards.
fn sharding_of(config: &Config) -> Result<Option<Arc<Sharding>>, String> {
    if config.sharding.tables.is_empty() && config.shards.len() < 2 {
        return Ok(None);
    }
    let ring = config.ring().map_err(|e| format!("sharding: {e}"))?;
    Ok(Some(Arc::new(
        Sharding::new(
            ring,
            Arc::new(config.sharding_rules()),
            config.default_shard_index(),
            config.sharding.allow_broadcast_writes,
        )
        .with_fanout_budget(config.sharding.fanout_memory_budget_bytes),
    )))
}

/// How a session ended (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    ClientTerminated,
    ClientGone,
    ServerLost,
    ProtocolError,
    Shutdown,
    StartupFailed,
    Cancel,
}

/// Whether the run loop goes on.
pub(crate) enum Flow {
    Continue,
    End(EndReason),
}

/// A logged-in client.
pub(crate) struct Session {
    client: ClientStream,
    shared: Arc<Shared>,
    /// This client's pool on the primary.
    pool: Arc<Pool>,
    /// Read/write splitting (transaction mode with replicas); boxed: most of it is rarely touched.
    routing: Option<Box<Routing>>,
    /// A `COPY … FROM STDIN` being split across shards.
    copy_split: Option<Box<copy_split::CopySplit>>,
    mode: PoolMode,
    /// Rewrite statement names (transaction mode): clients share server connections.
    rename_statements: bool,
    max_message: usize,
    server: Option<PooledConn>,
    params: ClientParams,
    statements: ClientStatements,
    pending: Pending,
    /// Bytes read from the client, not yet a whole frame.
    client_buf: BytesMut,
    /// Bytes read from the server, not yet handled.
    server_buf: BytesMut,
    to_server: BytesMut,
    to_client: BytesMut,
    /// Bytes of the server frame being streamed through that are still to come.
    server_skip: usize,
    /// Transaction status from the server's last `ReadyForQuery`.
    status: u8,
    /// The server is in COPY FROM STDIN: it ignores Sync and Flush until CopyDone or CopyFail.
    copy_in: bool,
    /// After an error the proxy raised itself, client frames are dropped until `Sync`.
    ignore_till_sync: bool,
    /// Extended-protocol messages went to the server since its last `ReadyForQuery` with nothing
    /// owed: it may hold an implicit transaction or skip everything until `Sync`.
    unsynced: bool,
    /// Session changes sent but not yet committed.
    inflight_ops: Vec<SessionOp>,
    /// An error reached the client since the in-flight changes were sent.
    saw_error: bool,
    /// Session changes of the last unnamed statement and of the unnamed portal.
    unnamed_ops: Vec<SessionOp>,
    portal_ops: Vec<SessionOp>,
    /// The server's prepared statements are no longer known (`DEALLOCATE ALL`): close it on release.
    server_prepared_unknown: bool,
    /// The client made state only its server connection has (LISTEN, temp table, …): it keeps that
    /// connection for the rest of its session (transaction mode), and it is reset when it leaves.
    pinned: bool,
    /// The server connection holds state of this client that cannot be tracked: closed on release.
    server_dirty: bool,
    cancel_slot: Arc<CancelSlot>,
    pid: i32,
    secret: i32,
    shutting_down: bool,
    /// Counts, client listing and `PAUSE` pass.
    meter: meter::Meter,
    /// The reload generation of this session's pools.
    generation: u64,
    /// The client's login name (its pools are looked up again after a reload).
    user_name: String,
}

/// Serves one client connection until it ends. Never panics on client or server input.
/// `admin_only`: the connection holds a slot reserved for `[admin] users` (past `max_client_conn`).
pub async fn run(stream: TcpStream, shared: Arc<Shared>, admin_only: bool) {
    let peer = stream.peer_addr().ok();
    let started = std::time::Instant::now();
    let _ = stream.set_nodelay(true);
    // Boxed: login's large state is freed once it is done, so an idle client costs little memory.
    let mut session = match Box::pin(startup::login(stream, &shared, admin_only)).await {
        Ok(Some(session)) => session,
        Ok(None) => return,
        Err(reason) => {
            tracing::debug!(?peer, ?reason, "client startup ended");
            return;
        }
    };
    tracing::info!(
        client = session.meter.client_id(),
        ?peer,
        user = %session.user_name,
        database = %session.pool.key.database,
        "client connected"
    );
    let reason = session.run_loop().await;
    Box::pin(session.goodbye(reason)).await;
    session.meter.flush_bytes();
    tracing::info!(
        client = session.meter.client_id(),
        ?peer,
        user = %session.user_name,
        database = %session.pool.key.database,
        ?reason,
        duration_ms = started.elapsed().as_millis() as u64,
        queries = session.meter.queries,
        transactions = session.meter.transactions,
        bytes_in = session.meter.bytes_in,
        bytes_out = session.meter.bytes_out,
        "client disconnected"
    );
}

impl Session {
    async fn run_loop(&mut self) -> EndReason {
        let shutdown = self.shared.shutdown.clone();
        let hard_stop = self.shared.hard_stop.clone();
        loop {
            if self.shutting_down && self.is_idle() {
                return EndReason::Shutdown;
            }
            // Also right after login, whose first server connection took a pass.
            self.leave_gate_if_idle();
            let flow = tokio::select! {
                _ = hard_stop.cancelled() => Flow::End(EndReason::Shutdown),
                _ = shutdown.cancelled(), if !self.shutting_down => {
                    self.shutting_down = true;
                    Flow::Continue
                }
                ready = self.client.readable(), if !self.routing.as_ref().is_some_and(|r| r.is_full()) => match ready {
                    Ok(()) => self.on_client_readable().await,
                    Err(_) => Flow::End(EndReason::ClientGone),
                },
                ready = server_readable(&self.server) => match ready {
                    Ok(()) => self.on_server_readable().await,
                    Err(_) => self.server_lost("connection error").await,
                },
            };
            if let Flow::End(reason) = flow {
                return reason;
            }
        }
    }

    /// No transaction open and nothing owed to the client: a safe moment to stop.
    fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.status == b'I'
            && self.client_buf.is_empty()
            && self.copy_split.is_none()
            && !self
                .routing
                .as_ref()
                .is_some_and(|r| r.is_holding() || r.in_deferred_transaction())
    }
}

async fn server_readable(server: &Option<PooledConn>) -> std::io::Result<()> {
    match server {
        Some(conn) => conn.stream.readable().await,
        None => std::future::pending().await,
    }
}
