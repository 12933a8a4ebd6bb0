//! Several local shards at once, each a primary and its streaming replicas, for the sharded demo and
//! tests: started in parallel (each server mostly waits on `pg_ctl`), all stopped if any fails.

use super::{ClusterError, ClusterOptions, LocalPostgres};

/// One shard's servers; dropping it stops and deletes them.
#[derive(Debug)]
pub struct LocalShard {
    pub primary: LocalPostgres,
    pub replicas: Vec<LocalPostgres>,
}

impl LocalShard {
    /// Starts a primary, runs `prepare` on it (roles, databases, schema: before the replicas copy
    /// it, so they start with the same), then starts `replicas` streaming replicas of it.
    pub fn start(
        options: &ClusterOptions,
        replicas: usize,
        prepare: impl FnOnce(&LocalPostgres) -> Result<(), ClusterError>,
    ) -> Result<LocalShard, ClusterError> {
        let primary = LocalPostgres::start(options)?;
        prepare(&primary)?;
        let replicas = (0..replicas)
            .map(|_| LocalPostgres::start_replica_of(&primary))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LocalShard { primary, replicas })
    }
}

/// Starts `shards` shards in parallel, each with `replicas` replicas; `prepare(index, primary)` as
/// in [`LocalShard::start`]. On any failure every server already started is stopped and the first
/// error (by shard index) returned; a panic in a shard's thread is resumed here.
pub fn start_shards(
    shards: usize,
    replicas: usize,
    options: &ClusterOptions,
    prepare: impl Fn(usize, &LocalPostgres) -> Result<(), ClusterError> + Sync,
) -> Result<Vec<LocalShard>, ClusterError> {
    let prepare = &prepare;
    let results: Vec<Result<LocalShard, ClusterError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shards)
            .map(|index| {
                scope.spawn(move || {
                    LocalShard::start(options, replicas, |primary| prepare(index, primary))
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic (e.g. a test's `expect` in `prepare`) is passed on with its own message.
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    });
    // Collecting stops at the first error; the shards already started are dropped, so stopped.
    results.into_iter().collect()
}
