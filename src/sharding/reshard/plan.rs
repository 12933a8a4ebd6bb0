//! `pgscale reshard plan`: what moves (ring ranges per source and target, with their share of the
//! ring) and roughly how many rows, before anything is written.

use super::tables::{configured_tables, TableInfo};
use super::{on_shard, Reshard, ReshardError};

/// Moves grouped by (from, to).
#[derive(Debug, Clone, PartialEq)]
pub struct MoveGroup {
    pub from: String,
    pub to: String,
    pub ranges: usize,
    /// Share of the whole hash space, in [0, 1].
    pub share: f64,
}

/// Groups the reshard's moves by (from, to), in first-seen order.
pub fn move_groups(reshard: &Reshard) -> Vec<MoveGroup> {
    let mut groups: Vec<MoveGroup> = Vec::new();
    for m in &reshard.moves {
        match groups.iter_mut().find(|g| g.from == m.from && g.to == m.to) {
            Some(g) => {
                g.ranges += 1;
                g.share += m.range.fraction();
            }
            None => groups.push(MoveGroup {
                from: m.from.clone(),
                to: m.to.clone(),
                ranges: 1,
                share: m.range.fraction(),
            }),
        }
    }
    groups
}

/// The share of old shard `source`'s keys that moves away, in [0, 1].
pub fn moving_fraction_of_source(reshard: &Reshard, source: usize) -> f64 {
    let Some(name) = reshard.old_names().get(source) else {
        return 0.0;
    };
    let moving: f64 = move_groups(reshard)
        .iter()
        .filter(|g| &g.from == name)
        .map(|g| g.share)
        .sum();
    let owned = reshard
        .old_ring
        .shares()
        .get(source)
        .copied()
        .unwrap_or(0.0);
    if owned > 0.0 {
        (moving / owned).min(1.0)
    } else {
        0.0
    }
}

/// Runs the plan: checks every source's tables (present, primary key containing the shard key)
/// and returns the lines to print.
pub async fn plan(reshard: &Reshard) -> Result<Vec<String>, ReshardError> {
    let mut lines = vec![format!(
        "reshard {}: {} shard(s) -> {} shard(s) ({} -> {}), run id {}",
        reshard.old_path.display(),
        reshard.old_names().len(),
        reshard.new_names().len(),
        reshard.old_names().join(","),
        reshard.new_names().join(","),
        reshard.run_id
    )];
    let groups = move_groups(reshard);
    let total: f64 = groups.iter().map(|g| g.share).sum();
    lines.push(format!(
        "moving: {:.1}% of the ring in {} range(s)",
        total * 100.0,
        reshard.moves.len()
    ));
    for g in &groups {
        lines.push(format!(
            "  move {} -> {}: {} range(s), {:.1}% of the ring",
            g.from,
            g.to,
            g.ranges,
            g.share * 100.0
        ));
    }
    let database = &reshard.login.database;
    let tables = configured_tables(&reshard.old);
    for source in reshard.sources() {
        let name = &reshard.old_names()[source];
        let client = reshard.connect_old(source).await?;
        let fraction = moving_fraction_of_source(reshard, source);
        for (table, key) in &tables {
            if key.is_none() {
                continue;
            }
            let info = TableInfo::load(&client, name, database, table, key.clone()).await?;
            let reltuples: f32 = client
                .query_one(
                    "SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass",
                    &[&info.qualified()],
                )
                .await
                .map_err(on_shard(name, "reading table statistics"))?
                .get(0);
            let estimate = if reltuples < 0.0 {
                "unknown rows (never analyzed: run ANALYZE for an estimate)".to_string()
            } else {
                format!(
                    "~{} of ~{} row(s) move",
                    (f64::from(reltuples) * fraction).round() as i64,
                    reltuples.round() as i64
                )
            };
            lines.push(format!(
                "  table {table} on {name}: {estimate} ({:.1}% of the shard's keys)",
                fraction * 100.0
            ));
        }
    }
    let added = reshard.added_shards();
    for (table, key) in &tables {
        if key.is_none() {
            for &target in &added {
                lines.push(format!(
                    "  reference table {table}: copied whole from {} to {}",
                    reshard.old_names()[0],
                    reshard.new_names()[target]
                ));
            }
        }
    }
    for &target in &added {
        let name = &reshard.new_names()[target];
        let client = reshard.connect_new(target).await?;
        let mut missing = Vec::new();
        for (table, key) in &tables {
            match TableInfo::load(&client, name, database, table, key.clone()).await {
                Ok(_) => {}
                Err(ReshardError::MissingTable { .. }) => missing.push(table.as_str()),
                Err(e) => return Err(e),
            }
        }
        lines.push(if missing.is_empty() {
            format!("new shard {name}: schema ready")
        } else {
            format!(
                "new shard {name}: missing table(s) {}: create the schema there before `reshard copy`",
                missing.join(", ")
            )
        });
    }
    lines.push(
        "next: reshard copy, reshard verify, reshard cutover --proxy ..., reshard cleanup".into(),
    );
    Ok(lines)
}
