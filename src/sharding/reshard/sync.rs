//! Driving the catch-up ([`crate::sharding::catchup`]) for a run: its slots on every source, and
//! rounds until the lag is small. `copy`, `catchup`, `verify` and `cutover` share this.

use std::io::Write;
use std::time::Duration;

use crate::sharding::catchup::{self, CatchupTable, Round};

use super::tables::{configured_tables, TableInfo};
use super::{catchup_on, Reshard, ReshardError, Shards};

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
            let client = shards.old.get(source).ok_or(ReshardError::NothingMoves)?;
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
            let client = shards.old.get(*source).ok_or(ReshardError::NothingMoves)?;
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
        let client = shards.old.get(source).ok_or(ReshardError::NothingMoves)?;
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

    /// Rounds on every source until each one's lag is at most `until_lag_bytes`, or a round applied
    /// nothing and the lag stopped shrinking (the rest is WAL of other tables or still-open
    /// transactions), or `max_rounds` passed. Prints each round's lag.
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
            let mut previous_lag = u64::MAX;
            for round_no in 1..=max_rounds.max(1) {
                let round = self.round(reshard, shards, *source, None).await?;
                writeln!(
                    out,
                    "catch-up {name}: round {round_no}: {} change(s) applied, lag {} byte(s)",
                    round.changes_applied, round.lag_bytes
                )?;
                let stalled = round.changes_applied == 0 && round.lag_bytes >= previous_lag;
                previous_lag = round.lag_bytes;
                if round.lag_bytes <= until_lag_bytes || stalled || round_no == max_rounds {
                    worst = worst.max(round.lag_bytes);
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

    /// Drops every source's slot (after cutover) and, with `publications`, its publication.
    pub async fn drop_all(
        reshard: &Reshard,
        shards: &Shards,
        publications: bool,
    ) -> Result<(), ReshardError> {
        for source in reshard.sources() {
            let name = &reshard.old_names()[source];
            let client = shards.old.get(source).ok_or(ReshardError::NothingMoves)?;
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
