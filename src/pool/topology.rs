//! The backend servers of every shard (a primary and its replicas), built from the config, and the
//! primary's WAL position that read-your-writes compares replicas against.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::backend::{Backend, Role};
use crate::config::Config;

/// Every shard's backends.
#[derive(Debug)]
pub struct Topology {
    pub shards: Vec<ShardBackends>,
}

/// One shard: its primary, its replicas (indexes are the balancer's replica indexes) and the
/// primary's WAL position as last polled.
#[derive(Debug)]
pub struct ShardBackends {
    pub index: usize,
    pub primary: Arc<Backend>,
    pub replicas: Vec<Arc<Backend>>,
    /// Shared with the same shard of the topology before a reload (when its primary stays), so a
    /// position polled by either is seen by sessions on both.
    pub primary_lsn: Arc<PrimaryLsn>,
}

impl Topology {
    /// One [`Backend`] per shard primary and replica. The error names the config field.
    pub fn from_config(config: &Config) -> Result<Topology, String> {
        let mut shards = Vec::with_capacity(config.shards.len());
        for (index, shard) in config.shards.iter().enumerate() {
            let addr = shard.primary_addr(index).map_err(|p| p.to_string())?;
            let primary = Backend::new(Arc::new(addr), Role::Primary, index, None, &config.health);
            let mut replicas = Vec::with_capacity(shard.replicas.len());
            for (r, replica) in shard.replicas.iter().enumerate() {
                let addr = shard.replica_addr(index, r).map_err(|p| p.to_string())?;
                replicas.push(Backend::new(
                    Arc::new(addr),
                    Role::Replica,
                    index,
                    replica.zone().map(str::to_string),
                    &config.health,
                ));
            }
            shards.push(ShardBackends {
                index,
                primary,
                replicas,
                primary_lsn: Arc::default(),
            });
        }
        Ok(Topology { shards })
    }

    /// The topology of a reloaded config, keeping the [`Backend`] (breaker, health, registered
    /// sockets) of every server that is still there in the same shard, role and zone.
    pub fn reusing(config: &Config, old: &Topology) -> Result<Topology, String> {
        let mut new = Topology::from_config(config)?;
        for shard in &mut new.shards {
            let keep = |b: &Arc<Backend>| {
                old.backends()
                    .find(|o| {
                        o.shard == b.shard
                            && o.role == b.role
                            && o.addr == b.addr
                            && o.zone == b.zone
                    })
                    .cloned()
                    .unwrap_or_else(|| b.clone())
            };
            shard.primary = keep(&shard.primary);
            if let Some(before) = old
                .shards
                .get(shard.index)
                .filter(|o| Arc::ptr_eq(&o.primary, &shard.primary))
            {
                shard.primary_lsn = before.primary_lsn.clone();
            }
            for replica in &mut shard.replicas {
                *replica = keep(replica);
            }
        }
        Ok(new)
    }

    /// Whether `backend` (this very object) is one of this topology's.
    pub fn contains(&self, backend: &Arc<Backend>) -> bool {
        self.backends().any(|b| Arc::ptr_eq(b, backend))
    }

    /// Every backend, primaries and replicas.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
    }
}

/// The primary's WAL insert position as last polled, with when that poll started.
///
/// Both halves live under one small mutex: read as two atomics, a reader could pair a new start time
/// with an old LSN and promise a replica caught up with a write it has not replayed.
#[derive(Debug, Default)]
pub struct PrimaryLsn {
    last: Mutex<Option<Polled>>,
}

#[derive(Debug, Clone, Copy)]
struct Polled {
    lsn: u64,
    started: Instant,
}

impl PrimaryLsn {
    /// Only plain values inside: a panic elsewhere cannot leave them half-written.
    fn lock(&self) -> MutexGuard<'_, Option<Polled>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a poll's result. A result from a poll that started before the recorded one is ignored.
    pub fn record(&self, lsn: u64, poll_started: Instant) {
        let mut last = self.lock();
        if last.is_some_and(|p| p.started > poll_started) {
            return;
        }
        *last = Some(Polled {
            lsn,
            started: poll_started,
        });
    }

    /// An LSN from a poll that started after `t`, so at or past anything committed before `t`; None if
    /// no such poll has finished yet.
    pub fn after(&self, t: Instant) -> Option<u64> {
        self.lock().filter(|p| p.started > t).map(|p| p.lsn)
    }

    /// The last polled LSN, however old (it is kept while the primary is unreachable).
    pub fn latest(&self) -> Option<u64> {
        self.lock().map(|p| p.lsn)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ReplicaConfig;

    #[test]
    fn after_needs_a_poll_that_started_later() {
        let lsn = PrimaryLsn::default();
        let t = Instant::now();
        assert_eq!(lsn.after(t), None);
        assert_eq!(lsn.latest(), None);
        lsn.record(100, t);
        assert_eq!(
            lsn.after(t),
            None,
            "a poll started at t may predate the commit"
        );
        assert_eq!(lsn.latest(), Some(100));
        lsn.record(200, t + Duration::from_millis(1));
        assert_eq!(lsn.after(t), Some(200));
        assert_eq!(lsn.after(t + Duration::from_millis(1)), None);
    }

    #[test]
    fn an_older_poll_does_not_overwrite_a_newer_one() {
        let lsn = PrimaryLsn::default();
        let t = Instant::now();
        lsn.record(200, t + Duration::from_millis(10));
        lsn.record(100, t + Duration::from_millis(5));
        assert_eq!(lsn.latest(), Some(200));
        assert_eq!(lsn.after(t), Some(200));
    }

    #[test]
    fn builds_backends_from_the_config() {
        let mut config = Config::from_toml(
            r#"
            [[shards]]
            primary = "postgres://p0:5432"
            replicas = ["postgres://r0:5433", { url = "postgres://r1", zone = "b" }]
            [[shards]]
            primary = "postgres://p1:6000/db"
            "#,
        )
        .expect("config parses");
        let topology = Topology::from_config(&config).expect("topology");
        assert_eq!(topology.shards.len(), 2);
        let s0 = &topology.shards[0];
        assert_eq!(s0.primary.addr.to_string(), "p0:5432");
        assert_eq!(s0.primary.role, Role::Primary);
        assert_eq!(s0.replicas.len(), 2);
        assert_eq!(s0.replicas[0].addr.to_string(), "r0:5433");
        assert_eq!(s0.replicas[0].zone, None);
        assert_eq!(s0.replicas[1].addr.to_string(), "r1:5432");
        assert_eq!(s0.replicas[1].zone.as_deref(), Some("b"));
        assert!(s0.replicas.iter().all(|r| r.role == Role::Replica));
        let s1 = &topology.shards[1];
        assert_eq!((s1.index, s1.primary.shard), (1, 1));
        assert!(s1.replicas.is_empty());
        assert_eq!(topology.backends().count(), 4);

        config.shards[1]
            .replicas
            .push(ReplicaConfig::from("mysql://x".to_string()));
        let error = Topology::from_config(&config).expect_err("bad replica URL");
        assert!(error.starts_with("shards[1].replicas[0]"), "{error}");
    }
}
