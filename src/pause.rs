//! `PAUSE` / `RESUME`: a gate per database that sessions pass before they take a server connection
//! for a new transaction. `PAUSE` closes the gate and waits until every session that had passed it
//! has given its connections back; sessions arriving meanwhile wait at the gate (they are not
//! refused) until `RESUME` opens it. This is the building block for switchovers and for the
//! resharding cutover.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

/// One database's gate.
#[derive(Default)]
struct Gate {
    paused: AtomicBool,
    /// Sessions past the gate that have not given their connections back.
    inflight: AtomicUsize,
    /// Woken when `inflight` drops to zero.
    drained: Notify,
}

/// Every database's gate, plus the pause of all databases at once.
#[derive(Default)]
pub struct Gates {
    all_paused: AtomicBool,
    gates: DashMap<String, Arc<Gate>>,
    /// Woken on every `RESUME`.
    resumed: Notify,
}

/// A session's pass through its database's gate: while it lives, `PAUSE` waits for it.
pub struct Pass {
    gate: Arc<Gate>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.gate.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.gate.drained.notify_waiters();
        }
    }
}

/// `RESUME` of something that was not paused.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not paused")]
pub struct NotPaused(String);

impl Gates {
    fn gate(&self, database: &str) -> Arc<Gate> {
        if let Some(gate) = self.gates.get(database) {
            return gate.clone();
        }
        self.gates.entry(database.to_string()).or_default().clone()
    }

    fn is_paused(&self, gate: &Gate) -> bool {
        self.all_paused.load(Ordering::SeqCst) || gate.paused.load(Ordering::SeqCst)
    }

    /// Whether new transactions on `database` would wait now.
    pub fn paused(&self, database: &str) -> bool {
        self.all_paused.load(Ordering::SeqCst)
            || self
                .gates
                .get(database)
                .is_some_and(|g| g.paused.load(Ordering::SeqCst))
    }

    /// Whether every database is paused.
    pub fn all_paused(&self) -> bool {
        self.all_paused.load(Ordering::SeqCst)
    }

    /// Passes the gate of `database` at once if it is open, else waits until it is. The caller
    /// reports itself as waiting meanwhile through `on_wait` (called once, only if it has to wait).
    pub async fn enter(&self, database: &str, mut on_wait: impl FnMut()) -> Pass {
        let gate = self.gate(database);
        let mut told = false;
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the check, so a RESUME between the check and the wait is not missed.
            resumed.as_mut().enable();
            if !self.is_paused(&gate) {
                gate.inflight.fetch_add(1, Ordering::SeqCst);
                // PAUSE sets its flag before it counts: seeing no flag after counting ourselves in
                // means any PAUSE from now on will wait for us.
                if !self.is_paused(&gate) {
                    return Pass { gate };
                }
                drop(Pass { gate: gate.clone() });
            }
            if !told {
                told = true;
                on_wait();
            }
            resumed.await;
        }
    }

    /// Closes the gate of `database` (or of every database) and waits until no session holds a
    /// connection past it. New transactions wait at the gate from the moment this is called.
    pub async fn pause(&self, database: Option<&str>) {
        let gates: Vec<Arc<Gate>> = match database {
            Some(name) => {
                let gate = self.gate(name);
                gate.paused.store(true, Ordering::SeqCst);
                vec![gate]
            }
            None => {
                self.all_paused.store(true, Ordering::SeqCst);
                self.gates.iter().map(|g| g.value().clone()).collect()
            }
        };
        for gate in gates {
            loop {
                let drained = gate.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                // Done once drained, or if a RESUME came meanwhile (nothing to wait for then).
                if gate.inflight.load(Ordering::SeqCst) == 0 || !self.is_paused(&gate) {
                    break;
                }
                drained.await;
            }
        }
    }

    /// Opens the gate of `database` (or every gate) and wakes the sessions waiting at it.
    pub fn resume(&self, database: Option<&str>) -> Result<(), NotPaused> {
        match database {
            Some(name) => {
                let was = self
                    .gates
                    .get(name)
                    .is_some_and(|g| g.paused.swap(false, Ordering::SeqCst));
                if !was {
                    return Err(NotPaused(format!("database {name}")));
                }
            }
            None => {
                let was_all = self.all_paused.swap(false, Ordering::SeqCst);
                let mut was_any = false;
                for gate in self.gates.iter() {
                    was_any |= gate.paused.swap(false, Ordering::SeqCst);
                }
                if !was_all && !was_any {
                    return Err(NotPaused("pgscale".to_string()));
                }
            }
        }
        self.resumed.notify_waiters();
        // A PAUSE still waiting for its database to drain stops waiting.
        for gate in self.gates.iter() {
            gate.drained.notify_waiters();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn pause_waits_for_passes_and_holds_new_entries_until_resume() {
        let gates = Arc::new(Gates::default());
        let held = gates.enter("app", || {}).await;
        let pausing = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.pause(Some("app")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pausing.is_finished(), "PAUSE must wait for the open pass");
        assert!(gates.paused("app"));
        let waited = Arc::new(AtomicBool::new(false));
        let entering = {
            let gates = gates.clone();
            let waited = waited.clone();
            tokio::spawn(async move {
                let _pass = gates
                    .enter("app", || waited.store(true, Ordering::SeqCst))
                    .await;
            })
        };
        // Another database is not held.
        drop(gates.enter("other", || panic!("other is not paused")).await);
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), pausing)
            .await
            .expect("PAUSE returns once the pass is dropped")
            .expect("task");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waited.load(Ordering::SeqCst), "the new entry waits");
        assert!(!entering.is_finished());
        gates.resume(Some("app")).expect("was paused");
        tokio::time::timeout(Duration::from_secs(1), entering)
            .await
            .expect("RESUME lets it in")
            .expect("task");
        assert!(gates.resume(Some("app")).is_err(), "not paused any more");
    }

    #[tokio::test]
    async fn pause_of_everything_holds_every_database() {
        let gates = Arc::new(Gates::default());
        gates.pause(None).await;
        let entering = {
            let gates = gates.clone();
            tokio::spawn(async move { drop(gates.enter("fresh", || {}).await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!entering.is_finished());
        gates.resume(None).expect("was paused");
        tokio::time::timeout(Duration::from_secs(1), entering)
            .await
            .expect("resumed")
            .expect("task");
        assert!(gates.resume(None).is_err());
    }
}
