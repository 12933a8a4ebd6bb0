//! `pgscale reshard copy`: the moving rows of every sharded table, source to target, in
//! primary-key batches (filtered by the ring hash in Rust, upserted on the target), and reference
//! tables whole to the new shards; then the catch-up with the writes made meanwhile.
//!
//! Resumable: each batch's last primary key is recorded after the target committed it, so a rerun
//! continues from there (at worst re-upserting one batch, which changes nothing).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_postgres::Client;

use super::state::{Phase, Progress, Run};
use super::sync::Sources;
use super::tables::{json_array, load_all, TableInfo};
use super::{on_shard, Reshard, ReshardError, Shards};

/// Rows read per batch unless `PGSCALE_RESHARD_BATCH_ROWS` says otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 1000;

/// Knobs of a copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Rows read from a source per batch (and per progress record).
    pub batch_rows: usize,
    /// Test knob: fail after this many batches, as a crash would leave it.
    pub stop_after_batches: Option<u64>,
    /// The final catch-up stops once every source's lag is at most this.
    pub until_lag_bytes: u64,
}

impl CopyOptions {
    /// Defaults, with `PGSCALE_RESHARD_BATCH_ROWS` and `PGSCALE_RESHARD_STOP_AFTER_BATCHES` read
    /// from the environment (tests use them to interrupt a copy at a known point).
    pub fn from_env(until_lag_bytes: u64) -> CopyOptions {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        CopyOptions {
            batch_rows: var("PGSCALE_RESHARD_BATCH_ROWS")
                .filter(|&n| n > 0)
                .map_or(DEFAULT_BATCH_ROWS, |n| n as usize),
            stop_after_batches: var("PGSCALE_RESHARD_STOP_AFTER_BATCHES").filter(|&n| n > 0),
            until_lag_bytes,
        }
    }
}

/// Runs the copy, printing progress and a summary to `out`.
pub async fn copy(
    reshard: &Reshard,
    options: &CopyOptions,
    out: &mut dyn Write,
) -> Result<(), ReshardError> {
    let state = reshard.connect_state().await?;
    let mut run = Run::create_or_load(reshard, &state).await?;
    run.expect_phase(
        &[Phase::Copying, Phase::Copied, Phase::Aborted],
        "copying again is only possible before cutover",
    )?;
    let shards = Shards::connect(reshard).await?;
    let plan = CopyPlan::load(reshard, &shards).await?;
    // The slots first: every change after this point is replayed, so nothing falls between the
    // copy's reads and the catch-up.
    let sources = Sources::load(reshard, &shards).await?;
    sources.prepare(reshard, &shards).await?;
    writeln!(
        out,
        "run {}: publication and replication slot ready on {}",
        run.run_id,
        sources
            .tables
            .iter()
            .map(|(s, _)| reshard.old_names()[*s].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;

    let mut copier = Copier {
        reshard,
        run: &run,
        state: &state,
        options,
        batches: 0,
    };
    let mut totals: Vec<(String, i64)> = Vec::new();
    for job in &plan.jobs {
        let source = &shards.old[job.source];
        let target = &shards.new[job.target];
        let rows = copier.copy_job(job, source, target).await?;
        match totals.iter_mut().find(|(t, _)| *t == job.info.config_name) {
            Some((_, n)) => *n += rows,
            None => totals.push((job.info.config_name.clone(), rows)),
        }
    }
    if run.phase == Phase::Copying {
        run.set_phase(reshard, &state, Phase::Copied).await?;
    }
    for (table, rows) in &totals {
        writeln!(out, "copied {table}: {rows} row(s)")?;
    }
    let lag = sources
        .catch_up(reshard, &shards, options.until_lag_bytes, 50, out)
        .await?
        .lag_bytes;
    writeln!(
        out,
        "copy done (run {}, phase {}); catch-up lag {lag} byte(s); next: reshard verify",
        run.run_id, run.phase
    )?;
    Ok(())
}

/// One (table, source -> target) to copy.
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub info: TableInfo,
    /// OLD index.
    pub source: usize,
    /// NEW index.
    pub target: usize,
    /// Reference tables are copied whole.
    pub whole: bool,
}

/// What a copy does, checked against the servers before anything is written.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub jobs: Vec<CopyJob>,
}

impl CopyPlan {
    /// Reads every table's definition on the sources and targets; refuses a missing table, a table
    /// without a primary key (or one without the shard key) and primary keys that differ.
    pub async fn load(reshard: &Reshard, shards: &Shards) -> Result<CopyPlan, ReshardError> {
        let database = &reshard.login.database;
        let mut jobs = Vec::new();
        let added = reshard.added_shards();
        let mut targets: Vec<usize> = reshard.pairs().iter().map(|&(_, t)| t).collect();
        targets.extend(&added);
        targets.sort_unstable();
        targets.dedup();
        let mut target_tables = Vec::new();
        for &t in &targets {
            let name = &reshard.new_names()[t];
            target_tables.push((
                t,
                load_all(&shards.new[t], name, database, &reshard.new).await?,
            ));
        }
        let target_info = |t: usize, table: &str| {
            target_tables
                .iter()
                .find(|(i, _)| *i == t)
                .and_then(|(_, list)| list.iter().find(|info| info.config_name == table))
        };
        let mut sources: Vec<usize> = reshard.sources();
        if !added.is_empty() && !sources.contains(&0) {
            sources.push(0);
        }
        for source in sources {
            let name = &reshard.old_names()[source];
            for info in load_all(&shards.old[source], name, database, &reshard.old).await? {
                let whole = info.key.is_none();
                let pair_targets: Vec<usize> = if whole {
                    if source == 0 {
                        added.clone()
                    } else {
                        Vec::new()
                    }
                } else {
                    reshard
                        .pairs()
                        .iter()
                        .filter(|(s, _)| *s == source)
                        .map(|&(_, t)| t)
                        .collect()
                };
                for target in pair_targets {
                    if let Some(theirs) = target_info(target, &info.config_name) {
                        if theirs.pk_names() != info.pk_names() {
                            return Err(ReshardError::PrimaryKeyDiffers {
                                table: info.config_name.clone(),
                                source_shard: name.clone(),
                                source_pk: info.pk_names(),
                                target_shard: reshard.new_names()[target].clone(),
                                target_pk: theirs.pk_names(),
                            });
                        }
                    }
                    jobs.push(CopyJob {
                        info: info.clone(),
                        source,
                        target,
                        whole,
                    });
                }
            }
        }
        Ok(CopyPlan { jobs })
    }
}

/// Copies jobs batch by batch, recording progress.
struct Copier<'a> {
    reshard: &'a Reshard,
    run: &'a Run,
    state: &'a Client,
    options: &'a CopyOptions,
    /// Batches written by this process (for the test knob).
    batches: u64,
}

impl Copier<'_> {
    /// Copies one job from where its progress left off; returns its rows copied in all runs.
    async fn copy_job(
        &mut self,
        job: &CopyJob,
        source: &Client,
        target: &Client,
    ) -> Result<i64, ReshardError> {
        let reshard = self.reshard;
        let source_name = &reshard.old_names()[job.source];
        let target_name = &reshard.new_names()[job.target];
        let table = &job.info.config_name;
        let mut progress = self
            .run
            .progress_of(reshard, self.state, table, source_name, target_name)
            .await?
            .unwrap_or_else(|| Progress {
                table: table.clone(),
                source: source_name.clone(),
                target: target_name.clone(),
                last_pk: None,
                rows_copied: 0,
                done: false,
            });
        if progress.done {
            return Ok(progress.rows_copied);
        }
        let bar = progress_bar(source, &job.info, source_name).await;
        bar.set_message(format!("{table} {source_name} -> {target_name}"));
        let upsert = job.info.upsert_sql();
        let limit = self.options.batch_rows;
        loop {
            let batch = job
                .info
                .scan_batch(source, source_name, progress.last_pk.as_deref(), limit)
                .await?;
            let mut moving = Vec::new();
            for row in &batch {
                let goes_here = job.whole
                    || reshard.moving_target(job.source, job.info.key_hash(source_name, row)?)
                        == Some(job.target);
                if goes_here {
                    moving.push(row);
                }
            }
            if !moving.is_empty() {
                let rows = json_array(moving.iter().copied());
                target
                    .execute(&upsert, &[&rows])
                    .await
                    .map_err(on_shard(target_name, &format!("writing {table}")))?;
            }
            bar.inc(batch.len() as u64);
            progress.rows_copied += moving.len() as i64;
            progress.done = batch.len() < limit;
            if let Some(last) = batch.last() {
                progress.last_pk = Some(last.pk.clone());
            }
            self.run
                .save_progress(reshard, self.state, &progress)
                .await?;
            self.batches += 1;
            if progress.done {
                break;
            }
            if self.options.stop_after_batches == Some(self.batches) {
                bar.abandon();
                return Err(ReshardError::StoppedForTest(self.batches));
            }
        }
        bar.finish_with_message(format!(
            "{table} {source_name} -> {target_name}: {} row(s)",
            progress.rows_copied
        ));
        Ok(progress.rows_copied)
    }
}

/// A bar over the source table's estimated rows, drawn only on a terminal.
async fn progress_bar(source: &Client, info: &TableInfo, shard: &str) -> ProgressBar {
    let estimate: f32 = source
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass",
            &[&info.qualified()],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1.0);
    let bar = ProgressBar::with_draw_target(
        Some(estimate.max(0.0) as u64),
        if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/~{len} rows scanned ({elapsed})")
    {
        bar.set_style(style);
    }
    tracing::debug!(table = %info.config_name, shard, estimate, "copy starts");
    bar
}
