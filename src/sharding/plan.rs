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
    /// The n-th literal, negated: `-5` lexes as `-` and the literal `5` (the fingerprint keeps the
    /// sign as an operator), so the sign lives in the plan. Only a number resolves.
    NegLiteral(u32),
    /// Bind parameter `$n` (1-based, as written).
    Param(u16),
}

impl KeyRef {
    /// The same reference in a text where `by` literals come first (a statement parsed on its own
    /// out of a longer query string).
    pub fn shifted(self, by: u32) -> KeyRef {
        match self {
            KeyRef::Literal(n) => KeyRef::Literal(n.saturating_add(by)),
            KeyRef::NegLiteral(n) => KeyRef::NegLiteral(n.saturating_add(by)),
            KeyRef::Param(n) => KeyRef::Param(n),
        }
    }
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
    /// A write of sharded tables with no usable key: refused unless broadcast writes are allowed,
    /// with `refusal` (which names the written table's shard key) as the reason.
    ScatterWrite { refusal: Box<str> },
    /// `COPY sharded (…) FROM STDIN`: each data row goes to the shard of its key, which is field
    /// `column_index` of the `columns` fields the column list names. The data's format (text, csv,
    /// binary, delimiter…) is read from each execution's text (`resolve::copy_format`): its
    /// option values are literals, which the plan cache does not tell apart.
    CopyIn {
        key_type: KeyType,
        column_index: usize,
        columns: usize,
    },
    /// INSERT/UPDATE/DELETE of a reference table (reading nothing but reference tables): applied
    /// to every shard's copy, all committed or none (two-phase commit).
    ReferenceWrite,
    /// Schema changes (`CREATE/ALTER/DROP TABLE`, `CREATE INDEX`, …): applied to every shard.
    Ddl,
    /// Cannot be routed correctly; the text says why and what to do instead.
    Refused(Box<str>),
}

impl ShardPlan {
    /// The same plan for a statement parsed on its own after `by` literals of its query string.
    pub fn shift_literals(self, by: u32) -> ShardPlan {
        if by == 0 {
            return self;
        }
        match self {
            ShardPlan::Keyed { key_type, keys } => ShardPlan::Keyed {
                key_type,
                keys: match keys {
                    Keys::One(r) => Keys::One(r.shifted(by)),
                    Keys::AnyOf(refs) => Keys::AnyOf(refs.iter().map(|r| r.shifted(by)).collect()),
                    Keys::ArrayParam(n) => Keys::ArrayParam(n),
                },
            },
            ShardPlan::InsertRows { key_type, rows } => ShardPlan::InsertRows {
                key_type,
                rows: rows.iter().map(|r| r.shifted(by)).collect(),
            },
            other => other,
        }
    }
}
