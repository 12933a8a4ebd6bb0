//! The admin console's resharding cutover: `RESHARD FREEZE '<path>' [TIMEOUT <ms>]`,
//! `RESHARD SWITCH`, `RESHARD ABORT` and `SHOW RESHARD` (the state machine and the sessions' side
//! are in `sharding::freeze` and `session::cutover`).
//!
//! `SWITCH` is the one way to change the shard list of a running proxy: the new config may only
//! add shards after the existing ones (which keep their names, positions and primaries); anything
//! else that differs is refused at `FREEZE`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::table::{Kind, Table};
use super::Refusal;
use crate::config::{BackendAddr, Config, PoolMode};
use crate::protocol::client_auth;
use crate::protocol::scram::ScramSecret;
use crate::reload::toml_of;
use crate::session::Shared;
use crate::sharding::freeze::{Freeze, Phase};
use crate::sharding::Sharding;

/// `TIMEOUT` when not given: for draining at `FREEZE`, and for the freeze itself afterwards.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The config a `FREEZE` loaded, waiting for `SWITCH`.
pub(crate) struct PendingSwitch {
    freeze: Arc<Freeze>,
    config: Config,
    scram_secrets: HashMap<String, ScramSecret>,
    path: PathBuf,
}

const FREEZE_COLUMNS: &[(&str, Kind)] = &[
    ("state", Kind::Text),
    ("moving_ranges", Kind::Int),
    ("drain_ms", Kind::Int),
];
const SWITCH_COLUMNS: &[(&str, Kind)] = &[
    ("state", Kind::Text),
    ("pause_ms", Kind::Int),
    ("shards", Kind::Int),
];
const ABORT_COLUMNS: &[(&str, Kind)] = &[("state", Kind::Text), ("pause_ms", Kind::Int)];
const SHOW_COLUMNS: &[(&str, Kind)] = &[
    ("state", Kind::Text),
    ("moving_ranges", Kind::Int),
    ("waiting", Kind::Int),
    ("frozen_ms", Kind::Int),
    ("last_pause_ms", Kind::Int),
];

/// The columns each command answers with (for `Describe`).
pub(super) fn columns(command: &super::Command) -> Option<Table> {
    use super::Command;
    let columns = match command {
        Command::ReshardFreeze { .. } => FREEZE_COLUMNS,
        Command::ReshardSwitch => SWITCH_COLUMNS,
        Command::ReshardAbort => ABORT_COLUMNS,
        _ => return None,
    };
    Some(Table::new(columns))
}

/// `SHOW RESHARD`.
pub(super) fn show(shared: &Shared) -> Table {
    let mut table = Table::new(SHOW_COLUMNS);
    let (status, phase) = match &shared.sharding {
        Some(sharding) => {
            let status = sharding.cutover.status();
            let phase = status.phase;
            (Some(status), phase)
        }
        None => (None, Phase::Idle),
    };
    let number = |n: u64| Some(n.to_string());
    table.push(vec![
        Some(phase.name().to_string()),
        number(status.as_ref().map_or(0, |s| s.moving_ranges as u64)),
        number(status.as_ref().map_or(0, |s| s.waiting as u64)),
        number(status.as_ref().map_or(0, |s| s.frozen_ms)),
        status
            .and_then(|s| s.last_pause_ms)
            .map(|ms| ms.to_string()),
    ]);
    table
}

fn sharding_of(shared: &Shared) -> Result<Arc<Sharding>, Refusal> {
    let sharding = shared.sharding.clone().ok_or_else(|| {
        Refusal::new(
            "55000",
            "pgscale is not sharding (no sharded tables and one shard): there is nothing to reshard",
        )
    })?;
    if shared.config().pool.mode != PoolMode::Transaction {
        return Err(Refusal::new(
            "55000",
            "resharding needs pool.mode = \"transaction\" (sharding routes per transaction)",
        ));
    }
    Ok(sharding)
}

/// What differs between the running config and a new one beyond added shards (empty: fine).
pub fn cutover_problems(old: &Config, new: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let (old_names, new_names) = (old.shard_names(), new.shard_names());
    if new_names.len() < old_names.len() {
        problems.push(format!(
            "shards: the new config has {} shards, the running one {}: shards can only be added",
            new_names.len(),
            old_names.len()
        ));
    }
    for (i, (old_shard, name)) in old.shards.iter().zip(&old_names).enumerate() {
        let Some(new_shard) = new.shards.get(i) else {
            break;
        };
        if new_names.get(i) != Some(name) {
            problems.push(format!(
                "shards[{i}]: is {:?} in the new config, {name:?} in the running one (existing shards keep their names and positions; add new shards after them)",
                new_names.get(i).map_or("", String::as_str)
            ));
        } else if !same_server(&old_shard.primary, &new_shard.primary) {
            problems.push(format!(
                "shards[{i}] ({name}): primary {} differs from the running {}",
                new_shard.primary, old_shard.primary
            ));
        }
    }
    let without_shards = |c: &Config| Config {
        shards: Vec::new(),
        ..c.clone()
    };
    let (a, b) = (without_shards(old), without_shards(new));
    let sections: [(&str, String, String); 9] = [
        ("listen", toml_of(&a.listen), toml_of(&b.listen)),
        ("pool", toml_of(&a.pool), toml_of(&b.pool)),
        ("routing", toml_of(&a.routing), toml_of(&b.routing)),
        ("health", toml_of(&a.health), toml_of(&b.health)),
        ("sharding", toml_of(&a.sharding), toml_of(&b.sharding)),
        ("admin", toml_of(&a.admin), toml_of(&b.admin)),
        ("metrics", toml_of(&a.metrics), toml_of(&b.metrics)),
        ("log", toml_of(&a.log), toml_of(&b.log)),
        ("users", toml_of(&a.users), toml_of(&b.users)),
    ];
    for (name, before, after) in sections {
        if before != after {
            problems.push(format!(
                "[{name}] differs from the running config (only [[shards]] may change)"
            ));
        }
    }
    problems
}

fn same_server(a: &str, b: &str) -> bool {
    match (BackendAddr::parse(a), BackendAddr::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `RESHARD FREEZE`: loads and checks the new config, installs the freeze, and waits until the
/// transactions open at freeze time have ended (or aborts the freeze after `timeout_ms`).
pub(super) async fn freeze(
    shared: &Arc<Shared>,
    user: &str,
    path: &str,
    timeout_ms: Option<u64>,
) -> Result<Table, Refusal> {
    let sharding = sharding_of(shared)?;
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let path = PathBuf::from(path);
    let loaded = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let secrets = client_auth::scram_secrets(&config.users);
            Ok::<_, String>((config, secrets))
        })
        .await
        .map_err(|e| Refusal::new("XX000", format!("reading the config failed: {e}")))?
    };
    let invalid = |message: String| {
        Refusal::new(
            "22023",
            format!("RESHARD FREEZE refused, nothing is frozen: {message}"),
        )
    };
    let (config, scram_secrets) = loaded.map_err(invalid)?;
    let running = shared.config();
    let problems = cutover_problems(&running, &config);
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }
    let new_ring = config
        .ring()
        .map_err(|e| invalid(format!("the new config's ring: {e}")))?;
    let freeze = sharding
        .cutover
        .begin(sharding.ring(), Arc::new(new_ring))
        .map_err(|e| Refusal::new("55000", e.to_string()))?;
    set_pending(
        shared,
        Some(PendingSwitch {
            freeze: freeze.clone(),
            config,
            scram_secrets,
            path: path.clone(),
        }),
    );
    tracing::info!(%user, path = %path.display(), moving_ranges = freeze.moving_ranges, "RESHARD FREEZE: writes to moving keys are held; waiting for open transactions");
    // Dropped before the end (the console went away): the freeze must not outlive its command.
    let mut guard = AbortOnDrop {
        shared: shared.clone(),
        freeze: Some(freeze.clone()),
    };
    let started = Instant::now();
    let stop = shared.hard_stop.clone();
    tokio::select! {
        _ = sharding.cutover.drain(&freeze) => {}
        _ = tokio::time::sleep(timeout) => {
            drop(guard);
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "RESHARD FREEZE: open transactions did not end in time; freeze aborted");
            return Err(Refusal::new(
                "57014",
                format!(
                    "RESHARD FREEZE timed out after {} ms waiting for transactions open at freeze time to end; the freeze was aborted",
                    timeout.as_millis()
                ),
            ));
        }
        _ = stop.cancelled() => return Err(Refusal::new("57P01", "pgscale is shutting down")),
    }
    if !sharding.cutover.frozen(&freeze) {
        guard.freeze = None;
        return Err(Refusal::new(
            "55000",
            "the freeze was aborted (RESHARD ABORT) while RESHARD FREEZE waited",
        ));
    }
    guard.freeze = None;
    let drain_ms = started.elapsed().as_millis() as u64;
    tracing::info!(%user, drain_ms, "RESHARD FREEZE: frozen");
    spawn_auto_abort(shared.clone(), freeze.clone(), timeout);
    let mut table = Table::new(FREEZE_COLUMNS);
    table.push(vec![
        Some(Phase::Frozen.name().to_string()),
        Some(freeze.moving_ranges.to_string()),
        Some(drain_ms.to_string()),
    ]);
    Ok(table)
}

/// Aborts the freeze unless disarmed (`freeze` taken).
struct AbortOnDrop {
    shared: Arc<Shared>,
    freeze: Option<Arc<Freeze>>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let (Some(freeze), Some(sharding)) = (self.freeze.take(), &self.shared.sharding) {
            if sharding.cutover.release(&freeze, false).is_some() {
                set_pending(&self.shared, None);
            }
        }
    }
}

fn set_pending(shared: &Shared, pending: Option<PendingSwitch>) {
    if let Ok(mut slot) = shared.reshard_pending.lock() {
        *slot = pending;
    }
}

/// A dead CLI never leaves writes frozen: neither `SWITCH` nor `ABORT` within `timeout` aborts.
fn spawn_auto_abort(shared: Arc<Shared>, freeze: Arc<Freeze>, timeout: Duration) {
    tokio::spawn(async move {
        let stop = shared.hard_stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = freeze.released() => return,
            _ = stop.cancelled() => return,
        }
        // Not in the middle of a SWITCH.
        let _one_at_a_time = shared.reloading.lock().await;
        let Some(sharding) = &shared.sharding else {
            return;
        };
        if let Some(pause_ms) = sharding.cutover.release(&freeze, false) {
            set_pending(&shared, None);
            tracing::warn!(
                pause_ms,
                timeout_ms = timeout.as_millis() as u64,
                "resharding freeze aborted: neither RESHARD SWITCH nor RESHARD ABORT came in time; the old ring stays"
            );
        }
    });
}

/// `RESHARD SWITCH`: installs the frozen config (pools and health checks of the new shards, the
/// new ring), adopts its file for later reloads, and releases the held writes.
pub(super) async fn switch(shared: &Arc<Shared>, user: &str) -> Result<Table, Refusal> {
    let sharding = sharding_of(shared)?;
    let _one_at_a_time = shared.reloading.lock().await;
    let freeze = sharding
        .cutover
        .frozen_freeze()
        .map_err(|e| Refusal::new("55000", e.to_string()))?;
    let pending = shared
        .reshard_pending
        .lock()
        .ok()
        .and_then(|mut p| p.take())
        .filter(|p| Arc::ptr_eq(&p.freeze, &freeze))
        .ok_or_else(|| {
            Refusal::new(
                "55000",
                "the frozen config is gone; RESHARD ABORT and FREEZE again",
            )
        })?;
    let shards = pending.config.shards.len();
    if let Err(e) =
        crate::reload::install_config(shared, pending.config, pending.scram_secrets).await
    {
        sharding.cutover.release(&freeze, false);
        return Err(Refusal::new(
            "55000",
            format!("RESHARD SWITCH failed, the freeze was aborted on the old ring: {e}"),
        ));
    }
    // The pools of new shards exist before any session can route to them.
    sharding.swap_ring((*freeze.new).clone());
    if let Ok(mut adopted) = shared.adopted_config_path.lock() {
        *adopted = Some(pending.path.clone());
    }
    let pause_ms = sharding.cutover.release(&freeze, true).unwrap_or_default();
    tracing::info!(%user, pause_ms, shards, path = %pending.path.display(), "RESHARD SWITCH: the new ring is in force");
    let mut table = Table::new(SWITCH_COLUMNS);
    table.push(vec![
        Some(Phase::Switched.name().to_string()),
        Some(pause_ms.to_string()),
        Some(shards.to_string()),
    ]);
    Ok(table)
}

/// `RESHARD ABORT`: releases the held writes on the ring in force.
pub(super) async fn abort(shared: &Arc<Shared>, user: &str) -> Result<Table, Refusal> {
    let sharding = sharding_of(shared)?;
    let _one_at_a_time = shared.reloading.lock().await;
    let pause_ms = sharding
        .cutover
        .abort()
        .map_err(|e| Refusal::new("55000", e.to_string()))?;
    set_pending(shared, None);
    tracing::info!(%user, pause_ms, "RESHARD ABORT: the old ring stays");
    let mut table = Table::new(ABORT_COLUMNS);
    table.push(vec![
        Some(Phase::Aborted.name().to_string()),
        Some(pause_ms.to_string()),
    ]);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shards: &[(&str, u16)], extra: &str) -> Config {
        let mut text = String::from("[[users]]\nname = \"app\"\npassword = \"app\"\n");
        for (name, port) in shards {
            text.push_str(&format!(
                "[[shards]]\nname = \"{name}\"\nprimary = \"postgres://127.0.0.1:{port}\"\n"
            ));
        }
        text.push_str(extra);
        Config::from_toml(&text).expect("parses")
    }

    #[test]
    fn only_shards_added_after_the_existing_ones_may_differ() {
        let old = config(&[("a", 1), ("b", 2)], "");
        assert!(cutover_problems(&old, &config(&[("a", 1), ("b", 2), ("c", 3)], "")).is_empty());
        assert!(cutover_problems(&old, &old).is_empty());
        let removed = cutover_problems(&old, &config(&[("a", 1)], ""));
        assert!(removed[0].contains("only be added"), "{removed:?}");
        let moved = cutover_problems(&old, &config(&[("a", 1), ("c", 3), ("b", 2)], ""));
        assert!(moved[0].contains("shards[1]"), "{moved:?}");
        let primary = cutover_problems(&old, &config(&[("a", 1), ("b", 9), ("c", 3)], ""));
        assert!(primary[0].contains("primary"), "{primary:?}");
        let vnodes = cutover_problems(
            &old,
            &config(
                &[("a", 1), ("b", 2), ("c", 3)],
                "[sharding]\nvnodes_per_shard = 16\n",
            ),
        );
        assert_eq!(vnodes.len(), 1, "{vnodes:?}");
        assert!(vnodes[0].contains("[sharding]"), "{vnodes:?}");
        let pool = cutover_problems(&old, &config(&[("a", 1)], "[pool]\npool_size = 3\n"));
        assert_eq!(pool.len(), 2, "{pool:?}");
    }
}
