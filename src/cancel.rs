//! Cancel requests: each client gets its own key, and a cancel goes to the server running that client's
//! query at that moment, and to no other.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::pool::server::{send_cancel, CancelKey};

/// Where one client's queries run right now.
#[derive(Default)]
pub struct CancelSlot {
    current: Mutex<Option<CancelKey>>,
}

impl CancelSlot {
    pub fn set(&self, key: Option<CancelKey>) {
        if let Ok(mut current) = self.current.lock() {
            *current = key;
        }
    }

    fn get(&self) -> Option<CancelKey> {
        self.current.lock().ok()?.clone()
    }
}

/// Every connected client's key.
#[derive(Default)]
pub struct CancelRegistry {
    clients: DashMap<(i32, i32), Arc<CancelSlot>>,
}

impl CancelRegistry {
    /// Registers a client under (`pid`, a fresh random secret); returns the secret and the slot.
    pub fn register(&self, pid: i32) -> (i32, Arc<CancelSlot>) {
        loop {
            let secret: i32 = rand::random();
            let slot = Arc::new(CancelSlot::default());
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.clients.entry((pid, secret)) {
                v.insert(slot.clone());
                return (secret, slot);
            }
        }
    }

    pub fn unregister(&self, pid: i32, secret: i32) {
        self.clients.remove(&(pid, secret));
    }

    /// Forwards a client's cancel request; unknown keys are ignored, as Postgres does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self.clients.get(&(pid, secret)).and_then(|slot| slot.get());
        match target {
            Some(key) => {
                tracing::debug!(pid, server = %key.addr, server_pid = key.pid, "forwarding cancel request");
                if let Err(e) = send_cancel(&key).await {
                    tracing::warn!(error = %e, "cancel request to server failed");
                }
            }
            None => tracing::debug!(pid, "cancel request for an unknown or idle client"),
        }
    }
}
