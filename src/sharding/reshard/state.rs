//! A run's state, kept in the database (schema `pgscale_reshard` on the OLD config's first shard):
//! a crashed `copy` resumes from its last batch, and `cutover` (which may run elsewhere) finds the
//! run and records its phase and pause.

use tokio_postgres::Client;

use super::{on_shard, Reshard, ReshardError};

/// Where a run is. Stored as text; see [`Phase::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copying,
    Copied,
    Cutover,
    Switched,
    Aborted,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Copied => "copied",
            Phase::Cutover => "cutover",
            Phase::Switched => "switched",
            Phase::Aborted => "aborted",
            Phase::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        [
            Phase::Copying,
            Phase::Copied,
            Phase::Cutover,
            Phase::Switched,
            Phase::Aborted,
            Phase::Done,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    /// After the switch the targets own the moved keys: copying or comparing again would be wrong.
    pub fn is_switched(self) -> bool {
        matches!(self, Phase::Switched | Phase::Done)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS pgscale_reshard;
CREATE TABLE IF NOT EXISTS pgscale_reshard.runs (
    run_id text PRIMARY KEY,
    old_shards text[] NOT NULL,
    new_shards text[] NOT NULL,
    phase text NOT NULL CHECK (phase IN ('copying','copied','cutover','switched','aborted','done')),
    cutover_pause_ms bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgscale_reshard.copy_progress (
    run_id text NOT NULL REFERENCES pgscale_reshard.runs ON DELETE CASCADE,
    table_name text NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    last_pk text[],
    rows_copied bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name, source, target)
);";

/// One run, as stored. Methods write through to the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    pub old_shards: Vec<String>,
    pub new_shards: Vec<String>,
    pub phase: Phase,
    pub cutover_pause_ms: Option<i64>,
}

/// Copy progress of one (table, source, target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub table: String,
    pub source: String,
    pub target: String,
    /// Text values of the last primary key copied (None: nothing yet).
    pub last_pk: Option<Vec<String>>,
    pub rows_copied: i64,
    pub done: bool,
}

/// The state lives on OLD shard 0; errors name it.
fn state_shard(reshard: &Reshard) -> &str {
    reshard.old_names().first().map_or("", String::as_str)
}

impl Run {
    /// Creates the state schema if needed and the run if it does not exist (phase `copying`).
    pub async fn create_or_load(reshard: &Reshard, client: &Client) -> Result<Run, ReshardError> {
        let shard = state_shard(reshard);
        client
            .batch_execute(SCHEMA_SQL)
            .await
            .map_err(on_shard(shard, "creating the schema pgscale_reshard"))?;
        client
            .execute(
                "INSERT INTO pgscale_reshard.runs (run_id, old_shards, new_shards, phase) \
                 VALUES ($1, $2, $3, 'copying') ON CONFLICT (run_id) DO NOTHING",
                &[
                    &reshard.run_id,
                    &reshard.old_names().to_vec(),
                    &reshard.new_names().to_vec(),
                ],
            )
            .await
            .map_err(on_shard(shard, "creating the run"))?;
        Run::load(reshard, client)
            .await?
            .ok_or_else(|| ReshardError::NoRun(reshard.run_id.clone()))
    }

    /// The run of these configs, if any command created it.
    pub async fn load(reshard: &Reshard, client: &Client) -> Result<Option<Run>, ReshardError> {
        let shard = state_shard(reshard);
        let exists: bool = client
            .query_one(
                "SELECT to_regclass('pgscale_reshard.runs') IS NOT NULL",
                &[],
            )
            .await
            .map_err(on_shard(shard, "looking for the run's state"))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT old_shards, new_shards, phase, cutover_pause_ms FROM pgscale_reshard.runs \
                 WHERE run_id = $1",
                &[&reshard.run_id],
            )
            .await
            .map_err(on_shard(shard, "reading the run"))?;
        Ok(row.map(|row| {
            let phase: String = row.get(2);
            Run {
                run_id: reshard.run_id.clone(),
                old_shards: row.get(0),
                new_shards: row.get(1),
                // The CHECK constraint admits only known phases.
                phase: Phase::parse(&phase).unwrap_or(Phase::Aborted),
                cutover_pause_ms: row.get(3),
            }
        }))
    }

    /// The run, or a clear error that `copy` has not created it yet.
    pub async fn require(reshard: &Reshard, client: &Client) -> Result<Run, ReshardError> {
        Run::load(reshard, client)
            .await?
            .ok_or_else(|| ReshardError::NoRun(reshard.run_id.clone()))
    }

    /// Records a new phase.
    pub async fn set_phase(
        &mut self,
        reshard: &Reshard,
        client: &Client,
        phase: Phase,
    ) -> Result<(), ReshardError> {
        client
            .execute(
                "UPDATE pgscale_reshard.runs SET phase = $2, updated_at = now() WHERE run_id = $1",
                &[&self.run_id, &phase.as_str()],
            )
            .await
            .map_err(on_shard(state_shard(reshard), "recording the run's phase"))?;
        self.phase = phase;
        Ok(())
    }

    /// Records the cutover's pause (from the first FREEZE to the last SWITCH).
    pub async fn set_cutover_pause_ms(
        &mut self,
        reshard: &Reshard,
        client: &Client,
        pause_ms: i64,
    ) -> Result<(), ReshardError> {
        client
            .execute(
                "UPDATE pgscale_reshard.runs SET cutover_pause_ms = $2, updated_at = now() \
                 WHERE run_id = $1",
                &[&self.run_id, &pause_ms],
            )
            .await
            .map_err(on_shard(
                state_shard(reshard),
                "recording the cutover pause",
            ))?;
        self.cutover_pause_ms = Some(pause_ms);
        Ok(())
    }

    /// An error unless the run is in one of `allowed`, saying `why`.
    pub fn expect_phase(&self, allowed: &[Phase], why: &str) -> Result<(), ReshardError> {
        if allowed.contains(&self.phase) {
            return Ok(());
        }
        Err(ReshardError::WrongPhase {
            run_id: self.run_id.clone(),
            phase: self.phase,
            why: why.to_string(),
        })
    }

    /// Every progress row of the run.
    pub async fn progress(
        &self,
        reshard: &Reshard,
        client: &Client,
    ) -> Result<Vec<Progress>, ReshardError> {
        let rows = client
            .query(
                "SELECT table_name, source, target, last_pk, rows_copied, done \
                 FROM pgscale_reshard.copy_progress WHERE run_id = $1 \
                 ORDER BY table_name, source, target",
                &[&self.run_id],
            )
            .await
            .map_err(on_shard(state_shard(reshard), "reading copy progress"))?;
        Ok(rows
            .iter()
            .map(|r| Progress {
                table: r.get(0),
                source: r.get(1),
                target: r.get(2),
                last_pk: r.get(3),
                rows_copied: r.get(4),
                done: r.get(5),
            })
            .collect())
    }

    /// The progress of one (table, source, target), if the copy has started it.
    pub async fn progress_of(
        &self,
        reshard: &Reshard,
        client: &Client,
        table: &str,
        source: &str,
        target: &str,
    ) -> Result<Option<Progress>, ReshardError> {
        let row = client
            .query_opt(
                "SELECT last_pk, rows_copied, done FROM pgscale_reshard.copy_progress \
                 WHERE run_id = $1 AND table_name = $2 AND source = $3 AND target = $4",
                &[&self.run_id, &table, &source, &target],
            )
            .await
            .map_err(on_shard(state_shard(reshard), "reading copy progress"))?;
        Ok(row.map(|r| Progress {
            table: table.to_string(),
            source: source.to_string(),
            target: target.to_string(),
            last_pk: r.get(0),
            rows_copied: r.get(1),
            done: r.get(2),
        }))
    }

    /// Records a batch: the last primary key read, rows written so far, and whether it was the last.
    pub async fn save_progress(
        &self,
        reshard: &Reshard,
        client: &Client,
        progress: &Progress,
    ) -> Result<(), ReshardError> {
        client
            .execute(
                "INSERT INTO pgscale_reshard.copy_progress \
                 (run_id, table_name, source, target, last_pk, rows_copied, done) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (run_id, table_name, source, target) DO UPDATE SET \
                 last_pk = EXCLUDED.last_pk, rows_copied = EXCLUDED.rows_copied, \
                 done = EXCLUDED.done, updated_at = now()",
                &[
                    &self.run_id,
                    &progress.table,
                    &progress.source,
                    &progress.target,
                    &progress.last_pk,
                    &progress.rows_copied,
                    &progress.done,
                ],
            )
            .await
            .map_err(on_shard(state_shard(reshard), "recording copy progress"))?;
        Ok(())
    }
}

/// `pgscale reshard status`: the run's phase and its copy progress, as lines.
pub async fn status(reshard: &Reshard) -> Result<Vec<String>, ReshardError> {
    let client = reshard.connect_state().await?;
    let Some(run) = Run::load(reshard, &client).await? else {
        return Ok(vec![format!(
            "run {}: not started (no state on shard `{}`)",
            reshard.run_id,
            state_shard(reshard)
        )]);
    };
    let mut lines = vec![format!(
        "run {}: phase {} ({} -> {}){}",
        run.run_id,
        run.phase,
        run.old_shards.join(","),
        run.new_shards.join(","),
        run.cutover_pause_ms
            .map_or(String::new(), |ms| format!(", cutover pause {ms} ms"))
    )];
    for p in run.progress(reshard, &client).await? {
        lines.push(format!(
            "  {} {} -> {}: {} row(s) copied, {}",
            p.table,
            p.source,
            p.target,
            p.rows_copied,
            if p.done { "done" } else { "in progress" }
        ));
    }
    Ok(lines)
}
