//! What a statement means for sharding, as far as its text says regardless of its literal values:
//! cached with the router's plan (by fingerprint), so key *values* are referred to by position
//! ([`KeyRef`]) and read from each execution's text or Bind parameters.

use super::key::KeyType;

/// Where a shard key value sits in one execution of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// The n-th literal (0-based) of the statement text, counting literals in lexical order as the
    /// fingerprint's lexer finds them (numbers, quoted strings in any form, dollar quotes).
    Literal(u32),
    /// Bind parameter `$n` (1-based, as written).
    Param(u16),
}

/// Which key values a keyed statement touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// `key = v`, a one-row INSERT, a join of sharded tables on their keys.
    One(KeyRef),
    /// `key IN (v1, v2, …)`: the rows have one of these keys.
    AnyOf(Box<[KeyRef]>),
    /// `key = ANY($n)`: an array parameter whose elements are keys.
    ArrayParam(u16),
}

/// How a statement is routed across shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardPlan {
    /// Touches no sharded table and writes no reference table: the default shard.
    Unsharded,
    /// Only reads reference tables (present on every shard): any shard will do.
    ReferenceRead,
    /// Touches only rows whose shard key is among `keys`.
    Keyed { key_type: KeyType, keys: Keys },
    /// A multi-row `INSERT … VALUES` into a sharded table: `rows[i]` is row i's key.
    InsertRows {
        key_type: KeyType,
        rows: Box<[KeyRef]>,
    },
    /// A read of sharded tables with no usable key: every shard, results merged.
    ScatterRead,
    /// A write of sharded tables with no usable key: refused unless broadcast writes are allowed.
    ScatterWrite,
    /// Schema changes (`CREATE/ALTER/DROP TABLE`, `CREATE INDEX`, …): applied to every shard.
    Ddl,
    /// Cannot be routed correctly; the text says why and what to do instead.
    Refused(Box<str>),
}
