//! The `pgscale reshard` subcommands: their arguments and dispatch (`main.rs` only forwards).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::copy::{copy, CopyOptions};
use super::state::{Phase, Run};
use super::sync::Sources;
use super::{Reshard, ReshardError, Shards};

/// Arguments every reshard command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ReshardArgs {
    /// The config the proxies run now (OLD).
    #[arg(long)]
    pub config: PathBuf,
    /// The config with the added shard(s) (NEW); only `[[shards]]` may differ.
    #[arg(long)]
    pub to: PathBuf,
    /// The database holding the sharded tables (and the run's state, on OLD's first shard).
    #[arg(long, default_value = "postgres")]
    pub database: String,
    /// Role on the shards (needs REPLICATION or superuser); default: OLD's first [[users]] entry.
    #[arg(long)]
    pub user: Option<String>,
    /// Its password; default: that entry's server password.
    #[arg(long)]
    pub password: Option<String>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ReshardCommand {
    /// What moves between OLD and NEW, with estimated rows; refuses configs that cannot work.
    Plan {
        #[command(flatten)]
        args: ReshardArgs,
    },
    /// Copies the moving rows to the new shards (resumable), then catches up with later writes.
    Copy {
        #[command(flatten)]
        args: ReshardArgs,
        /// The final catch-up stops once every source's lag is at most this many bytes.
        #[arg(long, default_value_t = 65536)]
        until_lag_bytes: u64,
    },
    /// Applies the writes made on the sources to moving keys, showing the lag, until Ctrl-C or
    /// `--until-lag-bytes`.
    Catchup {
        #[command(flatten)]
        args: ReshardArgs,
        #[arg(long)]
        until_lag_bytes: Option<u64>,
    },
    /// Compares the moving rows on the sources with the new shards (exit 3 on any difference).
    Verify {
        #[command(flatten)]
        args: ReshardArgs,
    },
    /// Switches the running proxies to NEW: writes to moving keys pause (bounded by
    /// `--timeout-ms`) while the last changes are applied; any failure aborts to the old ring.
    Cutover {
        #[command(flatten)]
        args: ReshardArgs,
        /// Admin console URL of a proxy (`postgres://admin:pw@host:6432/pgscale`); give every
        /// proxy that routes to these shards.
        #[arg(long = "proxy", required = true)]
        proxies: Vec<String>,
        /// The longest the writes to moving keys may pause; past it the cutover aborts.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Catch up until every source's lag is at most this before freezing.
        #[arg(long, default_value_t = 65536)]
        lag_before_freeze: u64,
    },
    /// After cutover: deletes the moved rows from the sources and drops the replication slots.
    Cleanup {
        #[command(flatten)]
        args: ReshardArgs,
    },
    /// Prints the run's phase and copy progress.
    Status {
        #[command(flatten)]
        args: ReshardArgs,
    },
}

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `verify` found differences (the CLI exits 3).
    Differences,
}

/// Runs one reshard command, writing what it reports to `out`.
pub async fn run(command: &ReshardCommand, out: &mut dyn Write) -> Result<Outcome, ReshardError> {
    match command {
        ReshardCommand::Plan { args } => {
            let reshard = Reshard::load(args)?;
            for line in super::plan::plan(&reshard).await? {
                writeln!(out, "{line}")?;
            }
        }
        ReshardCommand::Copy {
            args,
            until_lag_bytes,
        } => {
            let reshard = Reshard::load(args)?;
            copy(&reshard, &CopyOptions::from_env(*until_lag_bytes), out).await?;
        }
        ReshardCommand::Catchup {
            args,
            until_lag_bytes,
        } => {
            let reshard = Reshard::load(args)?;
            catchup(&reshard, *until_lag_bytes, out).await?;
        }
        ReshardCommand::Verify { args } => {
            let reshard = Reshard::load(args)?;
            if !super::verify::verify(&reshard, out).await?.ok() {
                return Ok(Outcome::Differences);
            }
        }
        ReshardCommand::Cutover {
            args,
            proxies,
            timeout_ms,
            lag_before_freeze,
        } => {
            let reshard = Reshard::load(args)?;
            let options = super::cutover::CutoverOptions {
                proxies: proxies.clone(),
                timeout: Duration::from_millis(*timeout_ms),
                lag_before_freeze: *lag_before_freeze,
            };
            super::cutover::cutover(&reshard, &options, out).await?;
        }
        ReshardCommand::Cleanup { args } => {
            let reshard = Reshard::load(args)?;
            super::cleanup::cleanup(&reshard, out).await?;
        }
        ReshardCommand::Status { args } => {
            let reshard = Reshard::load(args)?;
            for line in super::state::status(&reshard).await? {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// `reshard catchup`: rounds until the lag is at most `until` (or forever without it, until
/// Ctrl-C). Only after the copy: changes are applied on top of copied rows.
async fn catchup(
    reshard: &Reshard,
    until: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), ReshardError> {
    let state = reshard.connect_state().await?;
    let run = Run::require(reshard, &state).await?;
    run.expect_phase(
        &[Phase::Copied, Phase::Aborted],
        "the catch-up applies changes on top of copied rows: finish `pgscale reshard copy` first \
         (after cutover there is nothing to catch up)",
    )?;
    let shards = Shards::connect(reshard).await?;
    let sources = Sources::load(reshard, &shards).await?;
    let forever = async {
        loop {
            let caught = sources
                .catch_up(reshard, &shards, until.unwrap_or(0), 20, out)
                .await?;
            // Idle: every committed change is applied; the lag left is WAL without any.
            if until.is_some_and(|n| caught.lag_bytes <= n || caught.idle) {
                writeln!(out, "caught up: lag {} byte(s)", caught.lag_bytes)?;
                return Ok::<(), ReshardError>(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        done = forever => done,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
