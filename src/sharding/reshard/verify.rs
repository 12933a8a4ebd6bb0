//! `pgscale reshard verify`: for each (table, source -> target), the moving rows on the source
//! against the target's, row by row by primary key (an xxh3 of each row's `to_jsonb` text), after a
//! catch-up. Rows that differ are compared again after further catch-up rounds, so writes that
//! were still on their way do not raise false alarms.

use std::collections::HashMap;
use std::io::Write;

use tokio_postgres::Client;
use xxhash_rust::xxh3::xxh3_64;

use super::copy::{CopyJob, CopyPlan};
use super::state::{Phase, Run};
use super::sync::Sources;
use super::{Reshard, ReshardError, Shards};

/// Re-comparisons of the rows that differed (each after a catch-up) before a difference is
/// reported.
const RECHECK_ROUNDS: usize = 10;

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyLine {
    pub table: String,
    /// Source shard (`-` for rows on a target that the new ring does not give it).
    pub from: String,
    pub to: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub differing: u64,
}

impl VerifyLine {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.differing == 0
    }
}

/// Every comparison made.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub lines: Vec<VerifyLine>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.lines.iter().all(VerifyLine::ok)
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<24} {:<12} {:<12} {:>12} {:>12} {:>8} {:>8} {:>9}  status",
            "table", "from", "to", "source rows", "target rows", "missing", "extra", "differing"
        )?;
        for l in &self.lines {
            writeln!(
                f,
                "{:<24} {:<12} {:<12} {:>12} {:>12} {:>8} {:>8} {:>9}  {}",
                l.table,
                l.from,
                l.to,
                l.source_rows,
                l.target_rows,
                l.missing,
                l.extra,
                l.differing,
                if l.ok() { "OK" } else { "DIFFERENT" }
            )?;
        }
        Ok(())
    }
}

/// Runs the verification, printing the catch-up and the report to `out`.
pub async fn verify(reshard: &Reshard, out: &mut dyn Write) -> Result<VerifyReport, ReshardError> {
    let state = reshard.connect_state().await?;
    let run = Run::require(reshard, &state).await?;
    if run.phase.is_switched() {
        return Err(ReshardError::WrongPhase {
            run_id: run.run_id,
            phase: run.phase,
            why: "after cutover, writes to moved keys go to the new shards only, so the sources \
                  no longer match: verify is meant before cutover"
                .into(),
        });
    }
    run.expect_phase(
        &[Phase::Copied, Phase::Aborted],
        "the copy has not finished: run `pgscale reshard copy` first",
    )?;
    let shards = Shards::connect(reshard).await?;
    let plan = CopyPlan::load(reshard, &shards).await?;
    let sources = Sources::load(reshard, &shards).await?;
    sources.catch_up(reshard, &shards, 0, 10, out).await?;

    let mut lines = Vec::new();
    let mut stray_checked: Vec<(String, usize)> = Vec::new();
    // (line index, job index, primary keys that did not match)
    let mut problems: Vec<(usize, usize, Vec<Vec<String>>)> = Vec::new();
    for (j, job) in plan.jobs.iter().enumerate() {
        let (line, differing) = compare(reshard, &shards, job).await?;
        if !differing.is_empty() {
            problems.push((lines.len(), j, differing));
        }
        lines.push(line);
        let key = (job.info.config_name.clone(), job.target);
        if !job.whole && !stray_checked.contains(&key) {
            stray_checked.push(key);
            if let Some(stray) = strays(reshard, &shards, job).await? {
                lines.push(stray);
            }
        }
    }
    recheck(reshard, &shards, &plan, &sources, &mut lines, problems, out).await?;
    let report = VerifyReport { lines };
    write!(out, "{report}")?;
    writeln!(
        out,
        "{}",
        if report.ok() {
            "verify: every moving row is on its new shard, identical"
        } else {
            "verify: DIFFERENCES found (see above)"
        }
    )?;
    Ok(report)
}

/// Primary key text values -> row checksum.
type Rows = HashMap<Vec<String>, u64>;

/// Reads a table in batches, keeping the rows `keep` accepts (given the row's key hash).
async fn collect(
    job: &CopyJob,
    client: &Client,
    shard: &str,
    mut keep: impl FnMut(u64) -> bool,
) -> Result<Rows, ReshardError> {
    let mut rows = Rows::new();
    let mut after: Option<Vec<String>> = None;
    loop {
        let batch = job
            .info
            .scan_batch(client, shard, after.as_deref(), 5000)
            .await?;
        for row in &batch {
            if job.whole || keep(job.info.key_hash(shard, row)?) {
                rows.insert(row.pk.clone(), xxh3_64(row.json.as_bytes()));
            }
        }
        match batch.last() {
            Some(last) if batch.len() == 5000 => after = Some(last.pk.clone()),
            _ => return Ok(rows),
        }
    }
}

/// The moving rows of one job on its source against the target's rows that came from there, and
/// the primary keys of the rows that did not match.
async fn compare(
    reshard: &Reshard,
    shards: &Shards,
    job: &CopyJob,
) -> Result<(VerifyLine, Vec<Vec<String>>), ReshardError> {
    let from = &reshard.old_names()[job.source];
    let to = &reshard.new_names()[job.target];
    let source = collect(job, &shards.old[job.source], from, |hash| {
        reshard.moving_target(job.source, hash) == Some(job.target)
    })
    .await?;
    let target = collect(job, &shards.new[job.target], to, |hash| {
        reshard.old_ring.owner_name(hash) == from && reshard.new_ring.owner(hash) == job.target
    })
    .await?;
    let mut line = VerifyLine {
        table: job.info.config_name.clone(),
        from: from.clone(),
        to: to.clone(),
        source_rows: source.len() as u64,
        target_rows: target.len() as u64,
        missing: 0,
        extra: 0,
        differing: 0,
    };
    let mut differing = Vec::new();
    for (pk, sum) in &source {
        match target.get(pk) {
            None => line.missing += 1,
            Some(theirs) if theirs != sum => line.differing += 1,
            Some(_) => continue,
        }
        differing.push(pk.clone());
    }
    for pk in target.keys().filter(|pk| !source.contains_key(*pk)) {
        line.extra += 1;
        differing.push(pk.clone());
    }
    Ok((line, differing))
}

/// Compares the rows that differed again until they match or `RECHECK_ROUNDS` passed. Each round
/// applies the changes written so far, then reads only those rows on the target and the source: a
/// row written meanwhile matches in a later round, a real difference stays. So writes that go on
/// during the verification do not raise false alarms, and each round costs only the differing rows.
async fn recheck(
    reshard: &Reshard,
    shards: &Shards,
    plan: &CopyPlan,
    sources: &Sources,
    lines: &mut [VerifyLine],
    mut problems: Vec<(usize, usize, Vec<Vec<String>>)>,
    out: &mut dyn Write,
) -> Result<(), ReshardError> {
    for _ in 0..RECHECK_ROUNDS {
        problems.retain(|(_, _, pks)| !pks.is_empty());
        if problems.is_empty() {
            break;
        }
        let rows: usize = problems.iter().map(|(_, _, pks)| pks.len()).sum();
        writeln!(
            out,
            "{rows} row(s) differ: catching up and comparing them again"
        )?;
        sources
            .drain(reshard, shards, std::time::Duration::from_secs(60))
            .await?;
        for (l, j, pks) in problems.iter_mut() {
            let job = &plan.jobs[*j];
            let target = by_pk(
                job,
                &shards.new[job.target],
                reshard.new_names(),
                job.target,
                pks,
            )
            .await?;
            let after = by_pk(
                job,
                &shards.old[job.source],
                reshard.old_names(),
                job.source,
                pks,
            )
            .await?;
            let line = &mut lines[*l];
            (line.missing, line.extra, line.differing) = (0, 0, 0);
            pks.retain(|pk| match (after.get(pk), target.get(pk)) {
                (Some(_), None) => {
                    line.missing += 1;
                    true
                }
                (None, Some(_)) => {
                    line.extra += 1;
                    true
                }
                (Some(a), Some(b)) if a != b => {
                    line.differing += 1;
                    true
                }
                _ => false,
            });
        }
    }
    Ok(())
}

/// Checksums of the rows with primary keys `pks` on one shard.
async fn by_pk(
    job: &CopyJob,
    client: &Client,
    names: &[String],
    shard: usize,
    pks: &[Vec<String>],
) -> Result<Rows, ReshardError> {
    let name = names.get(shard).map_or("?", String::as_str);
    Ok(job
        .info
        .rows_by_pk(client, name, pks)
        .await?
        .into_iter()
        .map(|row| (row.pk, xxh3_64(row.json.as_bytes())))
        .collect())
}

/// Rows on a new target that the new ring does not give it but that came from no source it
/// keeps (neither moved there nor its own before): reported as extra from `-`.
async fn strays(
    reshard: &Reshard,
    shards: &Shards,
    job: &CopyJob,
) -> Result<Option<VerifyLine>, ReshardError> {
    let to = &reshard.new_names()[job.target];
    let was_existing = reshard.old_index(to).is_some();
    let found = collect(job, &shards.new[job.target], to, |hash| {
        reshard.new_ring.owner(hash) != job.target
            && !(was_existing && reshard.old_ring.owner_name(hash) == to)
    })
    .await?;
    Ok((!found.is_empty()).then(|| VerifyLine {
        table: job.info.config_name.clone(),
        from: "-".into(),
        to: to.clone(),
        source_rows: 0,
        target_rows: found.len() as u64,
        missing: 0,
        extra: found.len() as u64,
        differing: 0,
    }))
}
