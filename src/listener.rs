//! The listening socket: accepts clients (up to `max_client_conn`), runs a session task per client,
//! and shuts down in order: stop accepting, let open transactions finish, then close the rest.

use std::net::SocketAddr;
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running proxy; [`RunningProxy::shutdown`] stops it gracefully.
pub struct RunningProxy {
    pub local_addr: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    accept: JoinHandle<()>,
    janitor: JoinHandle<()>,
    health: JoinHandle<()>,
    hard_stop: CancellationToken,
    shutdown_timeout: Duration,
}

/// Binds the listener and starts serving.
pub async fn start(config: Config) -> Result<RunningProxy, ListenError> {
    let addr = config.listen_addr().map_err(ListenError::Address)?;
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
    let shutdown_timeout = Duration::from_millis(config.listen.shutdown_timeout_ms);
    let shutdown = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let shared = Shared::new(Arc::new(config), shutdown.clone(), hard_stop.clone())
        .map_err(ListenError::Topology)?;
    let health = crate::pool::health::spawn(
        shared.topology.clone(),
        shared.config.clone(),
        hard_stop.clone(),
    );
    let tracker = TaskTracker::new();
    let janitor = tokio::spawn(
        shared
            .pools
            .clone()
            .run_janitor(JANITOR_PERIOD, hard_stop.clone()),
    );
    let accept = tokio::spawn(accept_loop(listener, shared.clone(), tracker.clone()));
    tracing::info!(%local_addr, mode = ?shared.config.pool.mode, "pgscale listening");
    Ok(RunningProxy {
        local_addr,
        shared,
        tracker,
        accept,
        janitor,
        health,
        hard_stop,
        shutdown_timeout,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    let clients = Arc::new(AtomicUsize::new(0));
    let max = shared.config.listen.max_client_conn;
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
        if clients.fetch_add(1, Ordering::Relaxed) >= max {
            clients.fetch_sub(1, Ordering::Relaxed);
            tracker.spawn(refuse(stream, ClientError::TooManyClients { max }));
            continue;
        }
        let shared = shared.clone();
        let clients = clients.clone();
        tracker.spawn(async move {
            session::run(stream, shared).await;
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
        let _ = self.health.await;
        self.shared.pools.close_all();
        tracing::info!("shutdown complete");
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
