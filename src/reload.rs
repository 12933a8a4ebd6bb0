//! Hot reload (SIGHUP or the admin console's `RELOAD`): the config file is read and validated again;
//! a valid config is swapped in whole (`arc-swap`) while clients stay connected. Sessions move to the
//! new pools between transactions, so no open transaction is disturbed. Pool sizes, timeouts, users
//! and passwords, replicas and health settings apply; what cannot change in a running proxy (the
//! listen address, pooling mode, shards and sharding rules) is refused with the reason, and the old
//! config keeps running.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::Config;
use crate::pool::health::Pollers;
use crate::pool::topology::Topology;
use crate::pool::PoolSettings;
use crate::protocol::client_auth;
use crate::session::{Live, Shared};

/// Why a reload did not happen (the running config is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("pgscale was started without a config file: there is nothing to re-read")]
    NoConfigFile,
    #[error("{0}")]
    Load(String),
    #[error("these settings cannot change while pgscale runs (restart it to change them): {}", .0.join("; "))]
    NeedsRestart(Vec<String>),
    #[error("{0}")]
    Topology(String),
}

/// What a successful reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub changes: Vec<String>,
}

/// Re-reads the config file and applies it, or leaves everything as it was and says why.
pub async fn reload(shared: &Arc<Shared>) -> Result<Reloaded, ReloadError> {
    let _one_at_a_time = shared.reloading.lock().await;
    let result = apply(shared).await;
    match &result {
        Ok(reloaded) => {
            shared.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(changes = ?reloaded.changes, "config reloaded");
        }
        Err(error) => {
            shared.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "config reload rejected; the running config is unchanged");
        }
    }
    result
}

async fn apply(shared: &Arc<Shared>) -> Result<Reloaded, ReloadError> {
    let path = shared
        .current_config_path()
        .ok_or(ReloadError::NoConfigFile)?;
    let loaded = tokio::task::spawn_blocking(move || {
        let config = Config::load(&path).map_err(|e| ReloadError::Load(e.to_string()))?;
        // SCRAM verifiers of plain passwords cost thousands of hash rounds each: off the runtime.
        let secrets = client_auth::scram_secrets(&config.users);
        // Certificate files are re-read too: new connections get the new certificate.
        let tls = crate::tls::acceptor_for(&config.listen)
            .map_err(|e| ReloadError::Load(e.to_string()))?;
        Ok::<_, ReloadError>((config, secrets, tls))
    })
    .await
    .map_err(|e| ReloadError::Load(format!("reading the config failed: {e}")))?;
    let (config, scram_secrets, tls) = loaded?;
    let old = shared.live();
    let problems = restart_only_changes(&old.config, &config);
    if !problems.is_empty() {
        return Err(ReloadError::NeedsRestart(problems));
    }
    let changes = install_config(shared, config, scram_secrets).await?;
    shared.tls.store(tls);
    Ok(Reloaded { changes })
}

/// Installs a validated config: sessions move to its pools at their next transaction, pools of
/// servers that left close, health pollers restart if the servers changed. Returns what changed.
/// Callers hold `shared.reloading`. Also resharding's `RESHARD SWITCH`, whose config may add shards.
pub(crate) async fn install_config(
    shared: &Arc<Shared>,
    config: Config,
    scram_secrets: std::collections::HashMap<String, crate::protocol::scram::ScramSecret>,
) -> Result<Vec<String>, ReloadError> {
    let old = shared.live();
    let topology =
        Arc::new(Topology::reusing(&config, &old.topology).map_err(ReloadError::Topology)?);
    let changes = describe_changes(&old.config, &config);
    let topology_changed = backends_differ(&old.topology, &topology);
    let health_changed = toml_of(&old.config.health) != toml_of(&config.health)
        || old.config.health_user().map(|u| {
            (
                u.server_user().to_string(),
                u.server_password().map(str::to_string),
            )
        }) != config.health_user().map(|u| {
            (
                u.server_user().to_string(),
                u.server_password().map(str::to_string),
            )
        });
    let config = Arc::new(config);

    // Sessions move to the new pools at their next transaction; pools of servers that left the
    // topology close after the switch (busy connections when given back). The others take the new
    // sizes, timeouts and credentials.
    shared.install(Live {
        config: config.clone(),
        scram_secrets,
        topology: topology.clone(),
    });
    for backend in topology.backends() {
        backend.health.retime(&config.health);
    }
    for pool in shared.pools.all() {
        if !topology.contains(pool.backend()) {
            shared.pools.remove(&pool.key);
            pool.close();
            continue;
        }
        let Some(user) = config
            .users
            .iter()
            .find(|u| u.server_user() == pool.key.user)
        else {
            continue;
        };
        let spec = crate::session::connect_spec(&config, pool.backend(), &pool.key, user);
        pool.reconfigure(
            PoolSettings::from_config(&config.pool, user.pool_size),
            spec,
        );
    }

    if topology_changed || health_changed {
        let old_pollers = shared.health.lock().ok().and_then(|mut h| h.take());
        if let Some(pollers) = old_pollers {
            pollers.stop().await;
        }
        let pollers = Pollers::start(topology, config, &shared.hard_stop);
        if let Ok(mut health) = shared.health.lock() {
            *health = Some(pollers);
        }
    }
    Ok(changes)
}

/// The settings a running proxy cannot take on, each with why.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |field: &str, changed: bool, why: &str| {
        if changed {
            problems.push(format!("{field} ({why})"));
        }
    };
    check(
        "listen.address",
        old.listen.address != new.listen.address,
        "the socket is bound at start",
    );
    check(
        "listen.workers",
        old.listen.workers != new.listen.workers,
        "threads are started at start",
    );
    check(
        "listen.tls_mode",
        old.listen.tls_mode != new.listen.tls_mode,
        "clients were told at login whether TLS is offered",
    );
    check(
        "pool.mode",
        old.pool.mode != new.pool.mode,
        "connected clients were set up for the old mode",
    );
    check(
        "metrics",
        old.metrics != new.metrics,
        "the endpoint is bound at start",
    );
    check(
        "shards",
        old.shard_names() != new.shard_names(),
        "the shard list decides which keys each shard owns; use `pgscale reshard`",
    );
    let rules = |s: &crate::config::ShardingConfig| {
        toml_of(&crate::config::ShardingConfig {
            fanout_memory_budget_bytes: 0,
            ..s.clone()
        })
    };
    check(
        "sharding",
        rules(&old.sharding) != rules(&new.sharding),
        "sharding rules decide where rows live; use `pgscale reshard`",
    );
    check(
        "sharding.fanout_memory_budget_bytes",
        old.sharding.fanout_memory_budget_bytes != new.sharding.fanout_memory_budget_bytes,
        "the budget is set at start",
    );
    check(
        "routing.plan_cache_size / write_functions / volatile_functions_are_writes",
        old.routing.plan_cache_size != new.routing.plan_cache_size
            || old.routing.write_functions != new.routing.write_functions
            || old.routing.volatile_functions_are_writes
                != new.routing.volatile_functions_are_writes,
        "cached routing decisions were made with them",
    );
    check(
        "listen.shutdown_timeout_ms / routing.catalog_refresh_ms",
        old.listen.shutdown_timeout_ms != new.listen.shutdown_timeout_ms
            || old.routing.catalog_refresh_ms != new.routing.catalog_refresh_ms,
        "read once at start",
    );
    check(
        "health.failure_threshold / cooldown_ms",
        old.health.failure_threshold != new.health.failure_threshold
            || old.health.cooldown_ms != new.health.cooldown_ms,
        "circuit breakers keep their state across reloads",
    );
    problems
}

/// Top-level sections (and users, by name) that differ, for the log and `RELOAD`'s notice. Users are
/// named, never their secrets.
fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    let sections: [(&str, String, String); 7] = [
        ("listen", toml_of(&old.listen), toml_of(&new.listen)),
        ("pool", toml_of(&old.pool), toml_of(&new.pool)),
        ("routing", toml_of(&old.routing), toml_of(&new.routing)),
        ("health", toml_of(&old.health), toml_of(&new.health)),
        ("admin", toml_of(&old.admin), toml_of(&new.admin)),
        ("log", toml_of(&old.log), toml_of(&new.log)),
        ("shards", toml_of(&old.shards), toml_of(&new.shards)),
    ];
    for (name, before, after) in sections {
        if before != after {
            changes.push(name.to_string());
        }
    }
    for user in &new.users {
        match old.user(&user.name) {
            None => changes.push(format!("user {} added", user.name)),
            Some(before) if toml_of(before) != toml_of(user) => {
                changes.push(format!("user {} changed", user.name))
            }
            Some(_) => {}
        }
    }
    for user in &old.users {
        if new.user(&user.name).is_none() {
            changes.push(format!("user {} removed", user.name));
        }
    }
    changes
}

fn backends_differ(old: &Topology, new: &Topology) -> bool {
    old.backends().count() != new.backends().count() || new.backends().any(|b| !old.contains(b))
}

/// A section as TOML text, to compare two configs field by field without listing every field.
pub(crate) fn toml_of<T: serde::Serialize>(value: &T) -> String {
    #[derive(serde::Serialize)]
    struct Wrap<'a, T> {
        v: &'a T,
    }
    toml::to_string(&Wrap { v: value }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            "[[users]]\nname = \"app\"\npassword = \"app\"\n[[shards]]\nname = \"shard0\"\nprimary = \"postgres://127.0.0.1:5432\"\n{extra}"
        ))
        .expect("parses")
    }

    #[test]
    fn pool_sizes_users_and_replicas_may_change() {
        let old = config("[pool]\npool_size = 5\n");
        let mut new = config(
            "[pool]\npool_size = 9\ncheckout_timeout_ms = 100\n[[users]]\nname = \"extra\"\npassword = \"pw-7f3a\"\n",
        );
        new.shards[0]
            .replicas
            .push("postgres://127.0.0.1:5433".to_string().into());
        assert!(restart_only_changes(&old, &new).is_empty());
        let changes = describe_changes(&old, &new);
        assert!(changes.contains(&"pool".to_string()), "{changes:?}");
        assert!(changes.contains(&"shards".to_string()), "{changes:?}");
        assert!(
            changes.contains(&"user extra added".to_string()),
            "{changes:?}"
        );
        assert!(changes
            .iter()
            .all(|c| !c.contains('x') || c.contains("extra")));
    }

    #[test]
    fn listen_address_mode_and_sharding_need_a_restart() {
        let old = config("");
        let new = config(
            "[listen]\naddress = \"127.0.0.1:7000\"\n[pool]\nmode = \"session\"\n[sharding]\nvnodes_per_shard = 16\n",
        );
        let problems = restart_only_changes(&old, &new);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("listen.address"), "{problems:?}");
        assert!(problems[1].starts_with("pool.mode"), "{problems:?}");
        assert!(problems[2].starts_with("sharding"), "{problems:?}");
    }

    #[test]
    fn the_fanout_budget_is_set_at_start_and_is_no_sharding_rule() {
        let old = config("");
        let new = config("[sharding]\nfanout_memory_budget_bytes = 1048576\n");
        let problems = restart_only_changes(&old, &new);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("sharding.fanout_memory_budget_bytes")
                && !problems[0].contains("reshard"),
            "{problems:?}"
        );
    }
}
