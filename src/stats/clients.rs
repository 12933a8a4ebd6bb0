//! Every logged-in client, for `SHOW CLIENTS`, `SHOW POOLS` and the client gauges.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

/// What a client is doing, as PgBouncer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logged in, holding no server connection.
    Idle = 0,
    /// Holding a server connection (in a transaction or a request).
    Active = 1,
    /// Waiting for a server connection, or held by `PAUSE`.
    Waiting = 2,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// One client: fixed facts from its login, and atomics its session updates.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub application_name: String,
    pub connect_time: SystemTime,
    /// Whether this is an admin-console client.
    pub admin: bool,
    state: AtomicU8,
    /// Start of the client's last request, in microseconds since the epoch.
    request_time_us: AtomicU64,
    /// When it started waiting (0: not waiting), microseconds since the epoch.
    wait_since_us: AtomicU64,
    /// The id (`SHOW SERVERS.ptr`) of the server connection it holds (0: none).
    pub server_id: AtomicU64,
}

impl ClientEntry {
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ClientState) {
        let before = self.state.swap(state as u8, Ordering::Relaxed);
        if state == ClientState::Waiting && before != ClientState::Waiting as u8 {
            self.wait_since_us
                .store(super::unix_micros(SystemTime::now()), Ordering::Relaxed);
        } else if state != ClientState::Waiting {
            self.wait_since_us.store(0, Ordering::Relaxed);
        }
    }

    pub fn set_request_time(&self, at: SystemTime) {
        self.request_time_us
            .store(super::unix_micros(at), Ordering::Relaxed);
    }

    pub fn request_time_us(&self) -> u64 {
        self.request_time_us.load(Ordering::Relaxed)
    }

    /// Microseconds since the epoch at which it began waiting, if it is waiting.
    pub fn waiting_since_us(&self) -> Option<u64> {
        match self.wait_since_us.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// Keeps a client listed; dropping it (when the session ends) removes the entry.
pub struct ClientListing {
    registry: Arc<DashMap<u64, Arc<ClientEntry>>>,
    pub entry: Arc<ClientEntry>,
}

impl Drop for ClientListing {
    fn drop(&mut self) {
        self.registry.remove(&self.entry.id);
    }
}

/// The connected clients.
#[derive(Default)]
pub struct ClientRegistry {
    clients: Arc<DashMap<u64, Arc<ClientEntry>>>,
    next_id: AtomicU64,
}

/// What a client said at login.
pub struct NewClient<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub application_name: &'a str,
    pub admin: bool,
}

impl ClientRegistry {
    /// Lists a client that has logged in.
    pub fn add(&self, new: NewClient<'_>) -> ClientListing {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now();
        let entry = Arc::new(ClientEntry {
            id,
            user: new.user.to_string(),
            database: new.database.to_string(),
            peer: new.peer,
            local: new.local,
            application_name: new.application_name.to_string(),
            connect_time: now,
            admin: new.admin,
            state: AtomicU8::new(ClientState::Idle as u8),
            request_time_us: AtomicU64::new(super::unix_micros(now)),
            wait_since_us: AtomicU64::new(0),
            server_id: AtomicU64::new(0),
        });
        self.clients.insert(id, entry.clone());
        ClientListing {
            registry: self.clients.clone(),
            entry,
        }
    }

    /// Every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }
}
