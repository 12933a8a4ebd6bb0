//! `pgscale reshard cutover`: the running proxies switch to NEW with a short, bounded pause of the
//! writes to moving keys only.
//!
//! 1. Catch up until the lag is small, without pausing anything.
//! 2. `RESHARD FREEZE '<NEW>' TIMEOUT <ms>` on every proxy: new writes to moving keys wait there;
//!    the command returns once the transactions open at that moment have ended, so every write to
//!    a moving key the proxies accepted is committed on its source by then.
//! 3. On each source, `pg_current_wal_lsn()` marks that point; the catch-up applies up to it.
//! 4. `RESHARD SWITCH` on every proxy: the new ring is in force and the waiting writes go on to
//!    their new shards.
//!
//! Any failure, or the pause running past `--timeout-ms`, sends `RESHARD ABORT` to every proxy (the
//! old ring stays, no write was lost: they only waited) and records the run as aborted, so the
//! cutover can simply be run again. The proxies abort by themselves too if this command dies
//! between FREEZE and SWITCH.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::state::{Phase, Run};
use super::sync::Sources;
use super::{pg_message, Reshard, ReshardError, Shards};

/// How a cutover is run.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// Admin console URLs of every proxy that routes to these shards
    /// (`postgres://admin:pw@host:port/pgscale`).
    pub proxies: Vec<String>,
    /// The longest write pause allowed, from the first FREEZE to the last SWITCH.
    pub timeout: Duration,
    /// The catch-up before freezing goes on until every source's lag is at most this.
    pub lag_before_freeze: u64,
}

/// What a successful cutover measured.
#[derive(Debug, Clone, Copy)]
pub struct CutoverReport {
    /// From the first FREEZE sent to the last SWITCH answered.
    pub pause: Duration,
}

/// Runs the cutover; on failure the proxies are back on the old ring and the run is `aborted`.
pub async fn cutover(
    reshard: &Reshard,
    options: &CutoverOptions,
    out: &mut dyn Write,
) -> Result<CutoverReport, ReshardError> {
    if options.proxies.is_empty() {
        return Err(ReshardError::Cutover(
            "name every proxy that routes to these shards with --proxy ADMIN_URL".into(),
        ));
    }
    let state = reshard.connect_state().await?;
    let mut run = Run::require(reshard, &state).await?;
    run.expect_phase(
        &[Phase::Copied, Phase::Aborted, Phase::Cutover],
        "cutover needs a finished `pgscale reshard copy` (and comes before cleanup)",
    )?;
    let shards = Shards::connect(reshard).await?;
    let sources = Sources::load(reshard, &shards).await?;
    writeln!(out, "catching up before the freeze")?;
    sources
        .catch_up(reshard, &shards, options.lag_before_freeze, 50, out)
        .await?;
    let mut proxies = Vec::with_capacity(options.proxies.len());
    for url in &options.proxies {
        proxies.push(Proxy::connect(url).await?);
    }
    run.set_phase(reshard, &state, Phase::Cutover).await?;

    let started = Instant::now();
    let switched = tokio::time::timeout(
        options.timeout,
        freeze_catch_up_switch(reshard, options, &shards, &sources, &proxies, started),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ReshardError::Cutover(format!(
            "the pause reached --timeout-ms ({} ms) before every proxy switched",
            options.timeout.as_millis()
        )))
    });
    match switched {
        Ok(()) => {
            let pause = started.elapsed();
            let pause_ms = i64::try_from(pause.as_millis()).unwrap_or(i64::MAX);
            run.set_cutover_pause_ms(reshard, &state, pause_ms).await?;
            run.set_phase(reshard, &state, Phase::Switched).await?;
            writeln!(
                out,
                "switched {} proxy(ies) to {}: writes to moving keys paused {pause_ms} ms",
                proxies.len(),
                reshard.new_path.display()
            )?;
            // Moved keys are written on their new shards only from now on: the slots would only
            // hold WAL back. The publications go at cleanup.
            Sources::drop_all(reshard, &shards, false).await?;
            writeln!(
                out,
                "next: make {} the config every proxy starts with, then run `pgscale reshard cleanup`",
                reshard.new_path.display()
            )?;
            Ok(CutoverReport { pause })
        }
        Err(error) => {
            let aborted = abort_all(&proxies).await;
            run.set_phase(reshard, &state, Phase::Aborted).await?;
            writeln!(
                out,
                "cutover aborted after {} ms: {error}; {aborted}",
                started.elapsed().as_millis()
            )?;
            Err(error)
        }
    }
}

/// Steps 2-4.
async fn freeze_catch_up_switch(
    reshard: &Reshard,
    options: &CutoverOptions,
    shards: &Shards,
    sources: &Sources,
    proxies: &[Proxy],
    started: Instant,
) -> Result<(), ReshardError> {
    let freeze = format!(
        "RESHARD FREEZE '{}' TIMEOUT {}",
        reshard.new_path.display().to_string().replace('\'', "''"),
        // The proxies' own deadline: a little past ours, so our ABORT normally comes first.
        options.timeout.as_millis() + 1000
    );
    for proxy in proxies {
        proxy.command(&freeze).await?;
    }
    // Every write to a moving key the proxies accepted is committed now: apply up to here.
    let left = options.timeout.saturating_sub(started.elapsed());
    sources.drain(reshard, shards, left).await?;
    tracing::info!(elapsed = ?started.elapsed(), "caught up while frozen");
    for proxy in proxies {
        proxy.command("RESHARD SWITCH").await?;
    }
    Ok(())
}

/// Sends ABORT to every proxy; says which could not be reached (they abort by themselves when
/// their FREEZE timeout passes).
async fn abort_all(proxies: &[Proxy]) -> String {
    let mut failed = Vec::new();
    for proxy in proxies {
        if let Err(e) = proxy.command("RESHARD ABORT").await {
            // Not frozen (the FREEZE never got there, or it timed out already) is fine.
            if !e.to_string().contains("55000") {
                failed.push(format!("{}: {e}", proxy.label));
            }
        }
    }
    if failed.is_empty() {
        "every proxy is back on the old ring".to_string()
    } else {
        format!(
            "ABORT failed on {} (they return to the old ring by themselves when their freeze times out)",
            failed.join("; ")
        )
    }
}

/// A connection to one proxy's admin console.
struct Proxy {
    client: Client,
    /// `host:port`, for messages (never the password).
    label: String,
}

impl Proxy {
    async fn connect(url: &str) -> Result<Proxy, ReshardError> {
        let label = url::Url::parse(url)
            .ok()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or("?"),
                    u.port().unwrap_or(6432)
                )
            })
            .unwrap_or_else(|| "?".into());
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
            ReshardError::Cutover(format!(
                "cannot reach the admin console of proxy {label}: {}",
                pg_message(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin console connection ended");
            }
        });
        Ok(Proxy { client, label })
    }

    async fn command(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, ReshardError> {
        self.client.simple_query(sql).await.map_err(|e| {
            ReshardError::Cutover(format!("proxy {}: {sql}: {}", self.label, pg_message(&e)))
        })
    }
}
