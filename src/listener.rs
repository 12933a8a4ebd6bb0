//! The listening socket: accepts clients (up to `max_client_conn`, plus `admin_reserved_conn` for
//! admin users), runs a session task per client,
//! and shuts down in order: stop accepting, let open transactions finish, then close the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::ClientError;
use crate::session::{self, Shared};

/// How often idle server connections are checked for age and liveness.
const JANITOR_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid listen address: {0}")]
    Address(String),
    #[error("invalid topology: {0}")]
    Topology(String),
    #[error("invalid metrics address: {0}")]
    MetricsAddress(String),
    #[error("client TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running proxy; [`RunningProxy::shutdown`] stops it gracefully.
pub struct RunningProxy {
    pub local_addr: SocketAddr,
    /// Where `/metrics` is served, if configured.
    pub metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    accept: JoinHandle<()>,
    janitor: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    hard_stop: CancellationToken,
    shutdown_timeout: Duration,
}

/// Binds the listener and starts serving. Without a config file, `RELOAD` and SIGHUP have nothing to
/// re-read (see [`start_from_file`]).
pub async fn start(config: Config) -> Result<RunningProxy, ListenError> {
    start_with_path(config, None).await
}

/// [`start`] with the file `config` was read from, which `RELOAD` and SIGHUP re-read.
pub async fn start_from_file(config: Config, path: PathBuf) -> Result<RunningProxy, ListenError> {
    start_with_path(config, Some(path)).await
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    Ok((listener, local_addr))
}

async fn start_with_path(
    config: Config,
    path: Option<PathBuf>,
) -> Result<RunningProxy, ListenError> {
    let metrics_bind = config.metrics_addr().map_err(ListenError::MetricsAddress)?;
    let addr = config.listen_addr().map_err(ListenError::Address)?;
    let tls = crate::tls::acceptor_for(&config.listen)?;
    let (listener, local_addr) = bind(addr).await?;
    let metrics_listener = match metrics_bind {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let shutdown_timeout = Duration::from_millis(config.listen.shutdown_timeout_ms);
    let shutdown = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let shared = Shared::new(Arc::new(config), path, shutdown.clone(), hard_stop.clone())
        .map_err(ListenError::Topology)?;
    shared.tls.store(tls);
    let pollers =
        crate::pool::health::Pollers::start(shared.topology(), shared.config(), &hard_stop);
    if let Ok(mut health) = shared.health.lock() {
        *health = Some(pollers);
    }
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let metrics = metrics_listener.map(|(listener, _)| {
        tokio::spawn(crate::prometheus::serve(
            listener,
            shared.clone(),
            hard_stop.clone(),
        ))
    });
    let tracker = TaskTracker::new();
    let janitor = tokio::spawn(
        shared
            .pools
            .clone()
            .run_janitor(JANITOR_PERIOD, hard_stop.clone()),
    );
    let accept = tokio::spawn(accept_loop(listener, shared.clone(), tracker.clone()));
    tracing::info!(%local_addr, ?metrics_addr, mode = ?shared.config().pool.mode, tls = shared.config().listen.tls_mode.as_str(), "pgscale listening");
    Ok(RunningProxy {
        local_addr,
        metrics_addr,
        shared,
        tracker,
        accept,
        janitor,
        metrics,
        hard_stop,
        shutdown_timeout,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    let clients = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        let (max, reserved) = {
            let listen = &shared.config().listen;
            (listen.max_client_conn, listen.admin_reserved_conn)
        };
        let held = clients.fetch_add(1, Ordering::Relaxed);
        if held >= max.saturating_add(reserved) {
            clients.fetch_sub(1, Ordering::Relaxed);
            shared
                .stats
                .refused_max_client_conn
                .fetch_add(1, Ordering::Relaxed);
            tracker.spawn(refuse(stream, ClientError::TooManyClients { max }));
            continue;
        }
        // Past max_client_conn: one of the slots kept for admin users.
        let admin_only = held >= max;
        let shared = shared.clone();
        let clients = clients.clone();
        tracker.spawn(async move {
            session::run(stream, shared, admin_only).await;
            clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn refuse(mut stream: TcpStream, error: ClientError) {
    let mut out = BytesMut::new();
    error.write(&mut out);
    let _ = stream.write_all(&out).await;
}

impl RunningProxy {
    /// Stops accepting, lets clients finish their transactions for up to `shutdown_timeout`, then
    /// closes whatever is left and the pools.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new clients, waiting for open transactions");
        self.shared.shutdown.cancel();
        let _ = self.accept.await;
        self.tracker.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: closing remaining client connections");
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
        self.hard_stop.cancel();
        let _ = self.janitor.await;
        let pollers = self.shared.health.lock().ok().and_then(|mut h| h.take());
        if let Some(pollers) = pollers {
            pollers.stop().await;
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
        self.shared.pools.close_all();
        tracing::info!("shutdown complete");
    }

    /// Re-reads the config file (what SIGHUP does).
    pub async fn reload(&self) -> Result<crate::reload::Reloaded, crate::reload::ReloadError> {
        crate::reload::reload(&self.shared).await
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
