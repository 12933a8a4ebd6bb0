//! `pgscale reshard cleanup`: after a successful cutover, deletes the moved rows from the sources
//! (in primary-key batches, by the same hash), drops the catch-up's slots and publications, and
//! marks the run done. Rerunnable: each pass deletes what is left.

use std::io::Write;

use super::copy::CopyPlan;
use super::state::{Phase, Run};
use super::sync::Sources;
use super::tables::json_array;
use super::{on_shard, Reshard, ReshardError, Shards};

/// Rows read per delete batch.
const BATCH_ROWS: usize = 5000;

/// Runs the cleanup; prints rows deleted per table.
pub async fn cleanup(reshard: &Reshard, out: &mut dyn Write) -> Result<(), ReshardError> {
    let state = reshard.connect_state().await?;
    let mut run = Run::require(reshard, &state).await?;
    run.expect_phase(
        &[Phase::Switched, Phase::Done],
        "cleanup deletes the moved rows from the sources, which is only safe after a successful \
         `pgscale reshard cutover` (the proxies still read them from there before)",
    )?;
    let shards = Shards::connect(reshard).await?;
    let plan = CopyPlan::load(reshard, &shards).await?;
    let mut totals: Vec<(String, u64)> = Vec::new();
    let mut done_pairs: Vec<(String, usize)> = Vec::new();
    for job in plan.jobs.iter().filter(|j| !j.whole) {
        // One pass per (table, source) deletes rows going to every target.
        let key = (job.info.config_name.clone(), job.source);
        if done_pairs.contains(&key) {
            continue;
        }
        done_pairs.push(key);
        let name = &reshard.old_names()[job.source];
        let client = &shards.old[job.source];
        let delete = job.info.delete_sql();
        let mut after: Option<Vec<String>> = None;
        let mut deleted = 0u64;
        loop {
            let batch = job
                .info
                .scan_batch(client, name, after.as_deref(), BATCH_ROWS)
                .await?;
            let mut moved = Vec::new();
            for row in &batch {
                if reshard
                    .moving_target(job.source, job.info.key_hash(name, row)?)
                    .is_some()
                {
                    moved.push(row);
                }
            }
            if !moved.is_empty() {
                deleted += client
                    .execute(&delete, &[&json_array(moved.iter().copied())])
                    .await
                    .map_err(on_shard(
                        name,
                        &format!("deleting moved rows of {}", job.info.config_name),
                    ))?;
            }
            match batch.last() {
                Some(last) if batch.len() == BATCH_ROWS => after = Some(last.pk.clone()),
                _ => break,
            }
        }
        writeln!(
            out,
            "cleanup {} on {name}: {deleted} moved row(s) deleted",
            job.info.config_name
        )?;
        match totals.iter_mut().find(|(t, _)| *t == job.info.config_name) {
            Some((_, n)) => *n += deleted,
            None => totals.push((job.info.config_name.clone(), deleted)),
        }
    }
    Sources::drop_all(reshard, &shards, true).await?;
    run.set_phase(reshard, &state, Phase::Done).await?;
    for (table, n) in &totals {
        writeln!(out, "deleted {table}: {n} row(s)")?;
    }
    writeln!(
        out,
        "cleanup done: replication slots and publications dropped; run {} is done",
        run.run_id
    )?;
    Ok(())
}
