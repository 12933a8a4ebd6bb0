//! Every open server connection of a pool, for `SHOW SERVERS` and the server gauges.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

/// Whether a server connection is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Idle = 0,
    Active = 1,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Idle => "idle",
            ServerState::Active => "active",
        }
    }
}

/// One server connection.
#[derive(Debug)]
pub struct ServerEntry {
    pub id: u64,
    pub pid: i32,
    pub local: Option<SocketAddr>,
    pub connect_time: SystemTime,
    state: AtomicU8,
    /// When it was last handed out, microseconds since the epoch.
    request_time_us: AtomicU64,
    /// The client holding it (0: none).
    client_id: AtomicU64,
}

impl ServerEntry {
    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            1 => ServerState::Active,
            _ => ServerState::Idle,
        }
    }

    /// Handed out to a client (`client_id` 0 when the proxy uses it itself).
    pub fn checked_out(&self, client_id: u64) {
        self.state
            .store(ServerState::Active as u8, Ordering::Relaxed);
        self.client_id.store(client_id, Ordering::Relaxed);
        self.request_time_us
            .store(super::unix_micros(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn checked_in(&self) {
        self.state.store(ServerState::Idle as u8, Ordering::Relaxed);
        self.client_id.store(0, Ordering::Relaxed);
    }

    pub fn request_time_us(&self) -> u64 {
        self.request_time_us.load(Ordering::Relaxed)
    }

    pub fn client_id(&self) -> u64 {
        self.client_id.load(Ordering::Relaxed)
    }
}

/// Keeps a server connection listed in its pool; dropping it (with the connection) removes it.
pub struct ServerTracker {
    registry: Arc<DashMap<u64, Arc<ServerEntry>>>,
    pub entry: Arc<ServerEntry>,
}

impl Drop for ServerTracker {
    fn drop(&mut self) {
        self.registry.remove(&self.entry.id);
    }
}

/// One pool's open server connections.
#[derive(Default)]
pub struct ServerRegistry {
    conns: Arc<DashMap<u64, Arc<ServerEntry>>>,
}

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

impl ServerRegistry {
    pub fn add(&self, pid: i32, local: Option<SocketAddr>) -> ServerTracker {
        let id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let entry = Arc::new(ServerEntry {
            id,
            pid,
            local,
            connect_time: now,
            state: AtomicU8::new(ServerState::Idle as u8),
            request_time_us: AtomicU64::new(super::unix_micros(now)),
            client_id: AtomicU64::new(0),
        });
        self.conns.insert(id, entry.clone());
        ServerTracker {
            registry: self.conns.clone(),
            entry,
        }
    }

    pub fn all(&self) -> Vec<Arc<ServerEntry>> {
        let mut all: Vec<_> = self.conns.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|s| s.id);
        all
    }
}
