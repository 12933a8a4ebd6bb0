//! `SHOW CONFIG`: every setting as a dotted key with its value, its default and whether `RELOAD`
//! can change it. Users are listed by name only: no password or verifier is ever shown.

use super::table::{text, Kind, Table};
use crate::config::Config;

/// Settings a reload refuses to change (see `crate::reload::restart_only_changes`).
const RESTART_ONLY: &[&str] = &[
    "listen.address",
    "listen.workers",
    "listen.shutdown_timeout_ms",
    "routing.catalog_refresh_ms",
    "pool.mode",
    "metrics.address",
    "metrics.max_connections",
    "metrics.header_timeout_ms",
    "metrics.request_timeout_ms",
    "routing.plan_cache_size",
    "routing.write_functions",
    "routing.volatile_functions_are_writes",
    "health.failure_threshold",
    "health.cooldown_ms",
];

pub fn config(config: &Config) -> Table {
    let mut table = Table::new(&[
        ("key", Kind::Text),
        ("value", Kind::Text),
        ("default", Kind::Text),
        ("changeable", Kind::Text),
    ]);
    let defaults = Config::from_toml("")
        .ok()
        .map(|c| flatten(&c))
        .unwrap_or_default();
    for (key, value) in flatten(config) {
        let default = defaults
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let changeable = !(RESTART_ONLY.contains(&key.as_str())
            || key.starts_with("sharding")
            || key == "shards.names");
        table.push(vec![
            text(key),
            text(value),
            text(default),
            text(if changeable { "yes" } else { "no" }),
        ]);
    }
    table
}

/// `section.key = value` for every scalar setting; lists of tables are summarized.
fn flatten(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let sections: Vec<(&str, Option<toml::Value>)> = vec![
        ("listen", toml::Value::try_from(&config.listen).ok()),
        ("pool", toml::Value::try_from(&config.pool).ok()),
        ("routing", toml::Value::try_from(&config.routing).ok()),
        ("health", toml::Value::try_from(&config.health).ok()),
        ("admin", toml::Value::try_from(&config.admin).ok()),
        ("metrics", toml::Value::try_from(&config.metrics).ok()),
        ("log", toml::Value::try_from(&config.log).ok()),
    ];
    for (section, value) in sections {
        let Some(toml::Value::Table(table)) = value else {
            continue;
        };
        for (key, value) in table {
            out.push((format!("{section}.{key}"), render(&value)));
        }
    }
    // Optional settings that are unset do not serialize; show them empty.
    if config.metrics.address.is_none() {
        out.push(("metrics.address".to_string(), String::new()));
    }
    if config.routing.zone.is_none() {
        out.push(("routing.zone".to_string(), String::new()));
    }
    out.push((
        "sharding.tables".to_string(),
        config
            .sharding
            .tables
            .iter()
            .map(|t| format!("{}({})", t.name, t.column))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push((
        "sharding.reference_tables".to_string(),
        config.sharding.reference_tables.join(", "),
    ));
    out.push((
        "sharding.vnodes_per_shard".to_string(),
        config.sharding.vnodes_per_shard.to_string(),
    ));
    out.push(("shards.names".to_string(), config.shard_names().join(", ")));
    out.push((
        "users.names".to_string(),
        config
            .users
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.sort();
    out
}

fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(render).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_settings_with_defaults_and_no_secrets() {
        let config = Config::from_toml(
            "[pool]\npool_size = 7\n[[users]]\nname = \"app\"\npassword = \"s3cret\"\n[[shards]]\nprimary = \"postgres://h:1\"\n",
        )
        .expect("parses");
        let table = super::config(&config);
        let row = |key: &str| {
            table
                .rows
                .iter()
                .find(|r| r[0].as_deref() == Some(key))
                .cloned()
                .unwrap_or_else(|| panic!("no {key}"))
        };
        assert_eq!(row("pool.pool_size")[1].as_deref(), Some("7"));
        assert_eq!(row("pool.pool_size")[2].as_deref(), Some("20"));
        assert_eq!(row("pool.pool_size")[3].as_deref(), Some("yes"));
        assert_eq!(row("listen.address")[3].as_deref(), Some("no"));
        assert_eq!(row("users.names")[1].as_deref(), Some("app"));
        let all = format!("{:?}", table.rows);
        assert!(!all.contains("s3cret"), "{all}");
    }
}
