//! Config of sharding (`[sharding]`): which tables are sharded by which column, which are reference
//! tables, where unsharded tables live, and the ring's shape; plus the shards' names, which decide
//! which keys each shard owns.
//!
//! The config is turned into the sharding module's own values here ([`Config::ring`],
//! [`Config::sharding_rules`]), so nothing past this file reads `[sharding]` fields directly.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Config, PoolMode};
use crate::sharding::{KeyType, Ring, RingError, Rules, ShardedTable, DEFAULT_VNODES_PER_SHARD};

/// `[sharding]`: what is sharded and how. With no `tables`, every statement goes to the default
/// shard, as without the section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingConfig {
    /// Ring points per shard. Changing it moves keys between shards, like renaming a shard.
    pub vnodes_per_shard: u32,
    /// The shard (by name) holding unsharded tables; default: the first shard.
    pub default_shard: Option<String>,
    /// Key type of tables that do not name their own.
    pub key_type: KeyTypeName,
    /// Key-less `UPDATE`/`DELETE` of a sharded table go to every shard (else they are refused, since
    /// a write that silently touches every shard is usually a mistake).
    pub allow_broadcast_writes: bool,
    /// Tables with a full copy on every shard: reads go to any one shard.
    pub reference_tables: Vec<String>,
    pub tables: Vec<ShardedTableConfig>,
    /// Bytes that all fan-out reads together may hold in the proxy (merges, shard buffers); a read
    /// that needs more is refused with SQLSTATE 54000. Rows stream, so this bounds mostly
    /// aggregations with many groups and very wide rows.
    pub fanout_memory_budget_bytes: usize,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        ShardingConfig {
            vnodes_per_shard: DEFAULT_VNODES_PER_SHARD,
            default_shard: None,
            key_type: KeyTypeName::Bigint,
            allow_broadcast_writes: false,
            reference_tables: Vec::new(),
            tables: Vec::new(),
            fanout_memory_budget_bytes: crate::sharding::budget::DEFAULT_BYTES,
        }
    }
}

/// The least fan-out budget: a few shards' read buffers and a batch of rows to the client.
const MIN_FANOUT_BUDGET: usize = 64 << 10;

/// `[[sharding.tables]]`: a table whose rows live on the shard owning their `column` value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedTableConfig {
    /// `table` or `schema.table`; matched by the unqualified name, case-insensitively.
    pub name: String,
    /// The shard key column.
    pub column: String,
    /// Default: `sharding.key_type`.
    pub key_type: Option<KeyTypeName>,
}

/// A key type as written in the config. Kept apart from [`KeyType`] so the sharding module does not
/// depend on serde or on how the config spells things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTypeName {
    Bigint,
    Integer,
    Text,
    Uuid,
}

impl From<KeyTypeName> for KeyType {
    fn from(name: KeyTypeName) -> KeyType {
        match name {
            KeyTypeName::Bigint => KeyType::BigInt,
            KeyTypeName::Integer => KeyType::Integer,
            KeyTypeName::Text => KeyType::Text,
            KeyTypeName::Uuid => KeyType::Uuid,
        }
    }
}

impl std::fmt::Display for KeyTypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyTypeName::Bigint => "bigint",
            KeyTypeName::Integer => "integer",
            KeyTypeName::Text => "text",
            KeyTypeName::Uuid => "uuid",
        })
    }
}

/// How a table name is matched (as [`Rules`] does): unqualified and lowercased, so `Public.Users`
/// and `users` are the same table.
pub(crate) fn table_match_name(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_lowercase()
}

impl ShardedTableConfig {
    /// The key type, falling back to the section's default.
    pub fn key_type(&self, sharding: &ShardingConfig) -> KeyTypeName {
        self.key_type.unwrap_or(sharding.key_type)
    }
}

impl Config {
    /// Every shard's name, by index: `shards[i].name`, else `shard{i}`. Names, not positions, decide
    /// which keys a shard owns, so reordering named shards moves no data.
    pub fn shard_names(&self) -> Vec<String> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, shard)| shard.name.clone().unwrap_or_else(|| format!("shard{i}")))
            .collect()
    }

    /// The consistent-hash ring over [`Config::shard_names`]. Fails only on a config that does not
    /// validate.
    pub fn ring(&self) -> Result<Ring, RingError> {
        Ring::new(&self.shard_names(), self.sharding.vnodes_per_shard)
    }

    /// The sharded and reference tables, as the router reads them.
    pub fn sharding_rules(&self) -> Rules {
        let tables = self.sharding.tables.iter().map(|t| ShardedTable {
            table: t.name.clone(),
            column: t.column.clone(),
            key_type: t.key_type(&self.sharding).into(),
        });
        Rules::new(tables, self.sharding.reference_tables.iter().cloned())
    }

    /// The index of the shard holding unsharded tables: `sharding.default_shard`, else 0 (also when
    /// the name is unknown, which validation reports).
    pub fn default_shard_index(&self) -> usize {
        self.sharding
            .default_shard
            .as_ref()
            .and_then(|name| self.shard_names().iter().position(|n| n == name))
            .unwrap_or(0)
    }

    /// Problems of `[sharding]` and of the shards' names.
    pub(super) fn validate_sharding(&self, add: &mut impl FnMut(String, String)) {
        let names = self.shard_names();
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let field = format!("shards[{i}].name");
            if name.is_empty() {
                add(field, "must not be empty".into());
            } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                add(
                    field,
                    format!("`{name}` must not contain spaces or control characters"),
                );
            } else if let Some(&first) = first_index.get(name.as_str()) {
                add(
                    field,
                    format!("`{name}` is also the name of shards[{first}] (unnamed shards are `shard<index>`)"),
                );
            } else {
                first_index.insert(name, i);
            }
        }
        if self.sharding.fanout_memory_budget_bytes < MIN_FANOUT_BUDGET {
            add(
                "sharding.fanout_memory_budget_bytes".into(),
                format!("must be at least {MIN_FANOUT_BUDGET} (a fan-out read's buffers)"),
            );
        }
        // The ring's own checks decide which vnode counts work; name problems are reported above.
        if let Err(e @ (RingError::NoVnodes | RingError::TooManyPoints { .. })) = self.ring() {
            add("sharding.vnodes_per_shard".into(), e.to_string());
        }
        if let Some(name) = &self.sharding.default_shard {
            if !names.contains(name) {
                add(
                    "sharding.default_shard".into(),
                    format!(
                        "`{name}` is not a shard name (shards: {})",
                        names.join(", ")
                    ),
                );
            }
        }

        let mut tables: HashMap<String, String> = HashMap::new();
        for (i, table) in self.sharding.tables.iter().enumerate() {
            let field = |f: &str| format!("sharding.tables[{i}].{f}");
            if let Some(problem) = table_name_problem(&table.name) {
                add(field("name"), problem);
            } else if let Some(first) = tables.get(&table_match_name(&table.name)) {
                add(
                    field("name"),
                    format!("`{}` is already listed as {first}", table.name),
                );
            } else {
                tables.insert(table_match_name(&table.name), field("name"));
            }
            if table.column.trim().is_empty() {
                add(field("column"), "must not be empty".into());
            }
        }
        for (i, name) in self.sharding.reference_tables.iter().enumerate() {
            let field = format!("sharding.reference_tables[{i}]");
            if let Some(problem) = table_name_problem(name) {
                add(field, problem);
            } else if let Some(first) = tables.get(&table_match_name(name)) {
                add(
                    field,
                    format!("`{name}` is already listed as {first}; a table is sharded or a reference table, not both"),
                );
            } else {
                tables.insert(table_match_name(name), field);
            }
        }

        if !self.sharding.tables.is_empty() && self.pool.mode != PoolMode::Transaction {
            add(
                "pool.mode".into(),
                "sharded tables need mode = \"transaction\": sharded statements are routed per transaction".into(),
            );
        }
    }
}

/// Why `name` cannot be a table name, if it cannot.
fn table_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("must not be empty".into())
    } else if name.split('.').count() > 2 || name.split('.').any(|part| part.trim().is_empty()) {
        Some(format!("`{name}` is not `table` or `schema.table`"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
