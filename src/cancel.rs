//! Cancel requests: each client gets its own key, and a cancel goes to the server running that client's
//! query at that moment, and to no other.
//!
//! A cancel is forwarded only while the client has a query in flight on the server it holds, and
//! that server is not given to another client before every cancel forwarded to it is done (the
//! server has signalled its backend and closed the cancel connection): otherwise a late cancel
//! could stop the next client's query.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::pool::server::{send_cancel, CancelKey};

/// A forwarded cancel that takes longer than this is given up on (its server is then closed
/// rather than handed on, see [`CancelsInFlight::wait`]).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// The server a client holds, and the cancels forwarded to it.
struct Attached {
    key: CancelKey,
    /// Each forwarded cancel holds a read lock until done; giving the server back takes the write
    /// lock.
    cancels: Arc<RwLock<()>>,
}

/// Where one client's queries run right now.
#[derive(Default)]
pub struct CancelSlot {
    current: Mutex<Option<Attached>>,
    /// A query of the client is running on the attached server (sent, not fully answered).
    busy: AtomicBool,
    /// The client waits in the proxy (a resharding freeze): a cancel ends that wait.
    waiting: AtomicBool,
    interrupt: tokio::sync::Notify,
}

impl CancelSlot {
    /// The client got a server (`Some`) or lost or closed it (`None`).
    pub fn set(&self, key: Option<CancelKey>) {
        self.busy.store(false, Ordering::SeqCst);
        if let Ok(mut current) = self.current.lock() {
            *current = key.map(|key| Attached {
                key,
                cancels: Arc::new(RwLock::new(())),
            });
        }
    }

    /// A query was sent (`true`) or everything sent was answered (`false`; set before the client
    /// sees the answer, so a cancel it sends afterwards is not forwarded).
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// Waits until a cancel request for this client arrives (a wait inside the proxy that the
    /// client may cancel, as it would cancel a query). Only one such wait at a time.
    pub async fn cancelled(&self) {
        let notified = self.interrupt.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.waiting.store(true, Ordering::SeqCst);
        let _clear = ClearOnDrop(&self.waiting);
        notified.await;
    }

    /// The client gives its server back: no further cancel is forwarded to it; the result tells
    /// when the ones already forwarded are done.
    pub fn detach(&self) -> CancelsInFlight {
        self.busy.store(false, Ordering::SeqCst);
        let attached = self.current.lock().ok().and_then(|mut c| c.take());
        CancelsInFlight {
            cancels: attached.map(|a| a.cancels),
        }
    }

    /// The key to cancel with, and a guard held until the cancel is done; `None` when no query
    /// of this client is running.
    fn target(&self) -> Option<(CancelKey, OwnedRwLockReadGuard<()>)> {
        let current = self.current.lock().ok()?;
        let attached = current.as_ref()?;
        if !self.busy.load(Ordering::SeqCst) {
            return None;
        }
        let guard = attached.cancels.clone().try_read_owned().ok()?;
        Some((attached.key.clone(), guard))
    }
}

struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Cancels forwarded to a server that is being given back.
pub struct CancelsInFlight {
    cancels: Option<Arc<RwLock<()>>>,
}

impl CancelsInFlight {
    /// No cancel is being forwarded: the server can go back at once.
    pub fn none(&self) -> bool {
        self.cancels
            .as_ref()
            .is_none_or(|lock| lock.try_write().is_ok())
    }

    /// Waits until every forwarded cancel is done; false if that took too long (the server's
    /// state is then unknown: close it).
    pub async fn wait(self) -> bool {
        match self.cancels {
            Some(lock) => tokio::time::timeout(2 * CANCEL_TIMEOUT, lock.write_owned())
                .await
                .is_ok(),
            None => true,
        }
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

    /// Forwards a client's cancel request; unknown keys and idle clients are ignored, as Postgres
    /// does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let slot = self.clients.get(&(pid, secret)).map(|slot| slot.clone());
        if let Some(slot) = slot.as_deref().filter(|s| s.waiting.load(Ordering::SeqCst)) {
            tracing::debug!(pid, "cancel request ends a wait in the proxy");
            slot.interrupt.notify_waiters();
            return;
        }
        match slot.as_deref().and_then(CancelSlot::target) {
            Some((key, done)) => {
                tracing::debug!(pid, server = %key.addr, server_pid = key.pid, "forwarding cancel request");
                match tokio::time::timeout(CANCEL_TIMEOUT, send_cancel(&key)).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => tracing::warn!(error = %e, "cancel request to server failed"),
                    Err(_) => {
                        tracing::warn!(server = %key.addr, "cancel request to server timed out")
                    }
                }
                // Not known to have landed: it may still hit whatever the server runs next. Holding
                // the guard past `CancelsInFlight::wait`'s limit gets the server closed, not handed on.
                tokio::time::sleep(2 * CANCEL_TIMEOUT + Duration::from_secs(1)).await;
                drop(done);
            }
            None => tracing::debug!(pid, "cancel request for an unknown or idle client"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendAddr;

    fn key() -> CancelKey {
        CancelKey {
            addr: Arc::new(BackendAddr {
                host: "127.0.0.1".into(),
                port: 1,
                tls: Default::default(),
            }),
            pid: 7,
            secret: 9,
            tls: false,
        }
    }

    #[test]
    fn only_a_running_query_can_be_cancelled() {
        let slot = CancelSlot::default();
        assert!(slot.target().is_none(), "no server");
        slot.set(Some(key()));
        assert!(slot.target().is_none(), "server held, no query");
        slot.set_busy(true);
        assert!(slot.target().is_some(), "query running");
        slot.set_busy(false);
        assert!(slot.target().is_none(), "query answered");
    }

    #[tokio::test]
    async fn giving_back_waits_for_forwarded_cancels() {
        let slot = CancelSlot::default();
        slot.set(Some(key()));
        slot.set_busy(true);
        let (_, in_flight) = slot.target().expect("target");
        let cancels = slot.detach();
        assert!(slot.target().is_none(), "nothing forwarded once given back");
        assert!(!cancels.none());
        drop(in_flight);
        assert!(cancels.none());
        assert!(cancels.wait().await);
        assert!(slot.detach().none(), "nothing attached");
    }
}
