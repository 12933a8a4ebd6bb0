//! Driving the catch-up ([`crate::sharding::catchup`]) for a run: its slots on every source, and
//! rounds until the lag is small. `copy`, `catchup`, `verify` and `cutover` share this.

use std::io::Write;
use std::time::Duration;

use crate::sharding::catchup::{self, CatchupTable, Round};

use super::tables::{configured_tables, TableInfo};
use super::{catchup_on, on_shard, Reshard, ReshardError, Shards};

/// Where a catch-up stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// The largest lag left on a source.
    pub lag_bytes: u64,
    /// Every source's last round applied nothing: what lag is left holds no change to apply yet.
    pub idle: bool,
}

/// The sharded tables of each source (old index), as the catch-up sees them.
#[derive(Debug, Clone)]
pub struct Sources {
    pub tables: Vec<(usize, Vec<CatchupTable>)>,
}

impl Sources {
    /// Reads the sharded tables' definitions on every source (checking primary keys).
    pub async fn load(reshard: &Reshard, shards: &Shards) -> Result<Sources, ReshardError> {
        let mut tables = Vec::new();
        for source in reshard.sources() {
            let name = &reshard.old_names()[source];
            let client = shards.source(source)?;
            let mut list = Vec::new();
            for (table, key) in configured_tables(&reshard.old) {
                if key.is_some() {
                    let info =
                        TableInfo::load(client, name, &reshard.login.database, &table, key).await?;
                    list.extend(info.catchup_table());
                }
            }
            tables.push((source, list));
        }
        Ok(Sources { tables })
    }

    /// Creates each source's publication and slot if missing (before any row is read).
    pub async fn prepare(&self, reshard: &Reshard, shards: &Shards) -> Result<(), ReshardError> {
        for (source, tables) in &self.tables {
            let name = &reshard.old_names()[*source];
            let client = shards.source(*source)?;
            catchup::prepare(client, &reshard.run_id, *source, tables)
                .await
                .map_err(catchup_on(name))?;
        }
        Ok(())
    }

    /// One catch-up round on old shard `source`, up to `upto_lsn` if given.
    pub async fn round(
        &self,
        reshard: &Reshard,
        shards: &Shards,
        source: usize,
        upto_lsn: Option<&str>,
    ) -> Result<Round, ReshardError> {
        let name = &reshard.old_names()[source];
        let tables = self
            .tables
            .iter()
            .find(|(s, _)| *s == source)
            .map_or(&[][..], |(_, t)| t.as_slice());
        let client = shards.source(source)?;
        let route = reshard.route(source);
        catchup::apply_round(
            client,
            &shards.targets(),
            &reshard.run_id,
            source,
            tables,
            &route,
            upto_lsn,
        )
        .await
        .map_err(catchup_on(name))
    }

    /// Rounds on every source until its slot has passed every change written before the call
    /// (also ones still in WAL buffers: with `synchronous_commit = off` a commit returns before
    /// its WAL is flushed, and only flushed WAL can be decoded) and then the lag is at most
    /// `until_lag_bytes` or a round applied nothing; at most `max_rounds` rounds per source.
    /// Prints each round's lag. The lag here is from the WAL insert position, so it counts
    /// commits not flushed yet.
    pub async fn catch_up(
        &self,
        reshard: &Reshard,
        shards: &Shards,
        until_lag_bytes: u64,
        max_rounds: usize,
        out: &mut dyn Write,
    ) -> Result<CaughtUp, ReshardError> {
        let mut worst = 0;
        let mut idle = true;
        for (source, _) in &self.tables {
            let name = &reshard.old_names()[*source];
            let client = shards.source(*source)?;
            let goal: String = client
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(on_shard(name, "reading the WAL position"))?
                .get(0);
            for round_no in 1..=max_rounds.max(1) {
                let round = self.round(reshard, shards, *source, None).await?;
                let (passed, lag) = slot_position(reshard, client, *source, &goal).await?;
                writeln!(
                    out,
                    "catch-up {name}: round {round_no}: {} change(s) applied, lag {lag} byte(s)",
                    round.changes_applied
                )?;
                let settled = passed && (lag <= until_lag_bytes || round.changes_applied == 0);
                if settled || round_no == max_rounds {
                    worst = worst.max(lag);
                    idle &= round.changes_applied == 0;
                    break;
                }
                if round.changes_applied == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(CaughtUp {
            lag_bytes: worst,
            idle,
        })
    }

    /// Applies, on every source, every change written before this call (the WAL insert position
    /// now, e.g. right after the proxies froze writes to moving keys), waiting at most `timeout`
    /// in all. For `cutover`: when it returns Ok the targets hold every acknowledged write.
    pub async fn drain(
        &self,
        reshard: &Reshard,
        shards: &Shards,
        timeout: Duration,
    ) -> Result<(), ReshardError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut goals = Vec::new();
        for (source, _) in &self.tables {
            let name = &reshard.old_names()[*source];
            let client = shards.source(*source)?;
            let goal: String = client
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(on_shard(name, "reading the WAL position"))?
                .get(0);
            goals.push((*source, goal));
        }
        for (source, goal) in &goals {
            let name = &reshard.old_names()[*source];
            let client = shards.source(*source)?;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let round = self.round(reshard, shards, *source, Some(goal));
                match tokio::time::timeout(left, round).await {
                    Ok(result) => drop(result?),
                    Err(_) => {
                        return Err(ReshardError::Catchup {
                            shard: name.clone(),
                            message: format!(
                                "did not apply the changes up to {goal} within {} ms",
                                timeout.as_millis()
                            ),
                        })
                    }
                }
                if slot_position(reshard, client, *source, goal).await?.0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ReshardError::Catchup {
                        shard: name.clone(),
                        message: format!(
                            "did not apply the changes up to {goal} within {} ms",
                            timeout.as_millis()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Drops every source's slot (after cutover) and, with `publications`, its publication.
    pub async fn drop_all(
        reshard: &Reshard,
        shards: &Shards,
        publications: bool,
    ) -> Result<(), ReshardError> {
        for source in reshard.sources() {
            let name = &reshard.old_names()[source];
            let client = shards.source(source)?;
            catchup::drop_slot(client, &reshard.run_id, source)
                .await
                .map_err(catchup_on(name))?;
            if publications {
                catchup::drop_publication(client, &reshard.run_id)
                    .await
                    .map_err(catchup_on(name))?;
            }
        }
        Ok(())
    }
}

/// Whether `source`'s slot has confirmed everything up to `goal`, and its lag behind the WAL
/// insert position in bytes.
pub async fn slot_position(
    reshard: &Reshard,
    client: &tokio_postgres::Client,
    source: usize,
    goal: &str,
) -> Result<(bool, u64), ReshardError> {
    let name = &reshard.old_names()[source];
    let slot = catchup::slot_name(&reshard.run_id, source);
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn >= $2::text::pg_lsn, \
             greatest(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &goal],
        )
        .await
        .map_err(on_shard(name, "reading the replication slot"))?
        .ok_or_else(|| ReshardError::Catchup {
            shard: name.clone(),
            message: format!("the replication slot {slot} is missing (was `reshard copy` run?)"),
        })?;
    let passed: Option<bool> = row.get(0);
    let lag: Option<i64> = row.get(1);
    Ok((
        passed.unwrap_or(false),
        lag.map_or(0, |l| u64::try_from(l).unwrap_or(0)),
    ))
}
