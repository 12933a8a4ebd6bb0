//! Which tables are sharded (and by which column), which are reference tables present on every
//! shard, and where unsharded tables live. Built from the `[sharding]` config; read by key
//! extraction and the session's router.

use std::collections::HashMap;

use super::key::KeyType;

/// A sharded table: its rows live on the shard that owns their key column's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedTable {
    /// Lowercase unqualified table name as it is matched in statements.
    pub table: String,
    /// Lowercase column name holding the shard key.
    pub column: String,
    pub key_type: KeyType,
}

/// The sharding rules of one topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    tables: HashMap<String, ShardedTable>,
    reference: Vec<String>,
}

impl Rules {
    /// Rules from sharded tables and reference table names (names are lowercased; a schema prefix
    /// such as `public.` is dropped: tables are matched by their unqualified name).
    pub fn new(
        tables: impl IntoIterator<Item = ShardedTable>,
        reference: impl IntoIterator<Item = String>,
    ) -> Rules {
        let tables = tables
            .into_iter()
            .map(|mut t| {
                t.table = unqualified(&t.table);
                t.column = t.column.to_lowercase();
                (t.table.clone(), t)
            })
            .collect();
        let reference = reference.into_iter().map(|r| unqualified(&r)).collect();
        Rules { tables, reference }
    }

    /// No table is sharded: every statement goes to the default shard.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The rule for `table` (an unqualified name, already case-folded as Postgres would).
    pub fn sharded(&self, table: &str) -> Option<&ShardedTable> {
        self.tables.get(table)
    }

    /// Whether `table` is a reference table (a copy on every shard).
    pub fn is_reference(&self, table: &str) -> bool {
        self.reference.iter().any(|r| r == table)
    }

    /// The reference table's name as the rules hold it, if `table` is one.
    pub fn reference_name(&self, table: &str) -> Option<&str> {
        self.reference
            .iter()
            .find(|r| *r == table)
            .map(String::as_str)
    }

    /// Every table name the rules list, sharded or reference.
    pub fn listed_names(&self) -> impl Iterator<Item = &str> {
        self.tables
            .keys()
            .map(String::as_str)
            .chain(self.reference.iter().map(String::as_str))
    }

    /// Whether `text` mentions a listed table as a whole word anywhere (also in strings and
    /// comments, case-insensitively): for text that could not be parsed, a mention is the only
    /// sign it may touch sharded rows, so any mention counts.
    pub fn mentioned_in(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        let bytes = lower.as_bytes();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        self.listed_names().any(|name| {
            lower.match_indices(name).any(|(at, _)| {
                let before = at.checked_sub(1).map(|i| bytes[i]);
                let after = bytes.get(at + name.len()).copied();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            })
        })
    }

    pub fn tables(&self) -> impl Iterator<Item = &ShardedTable> {
        self.tables.values()
    }
}

/// `Public.Users` → `users`.
fn unqualified(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_lowercase()
}
