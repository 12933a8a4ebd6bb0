//! Why a query cannot be fanned out ([`Unmergeable`], found when planning) or why shards' rows
//! could not be merged ([`MergeError`], found when merging). Every message is for the client: it
//! says why and what to do instead, and carries no server internals.

use thiserror::Error;

/// The usual way out, appended to most refusals.
const ONE_SHARD: &str =
    "add the shard key to WHERE (key = value) so that the query runs on one shard";

/// A query shape whose per-shard results pgscale cannot merge into the one right answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unmergeable {
    #[error(
        "pgscale cannot parse this query to run it on every shard; {}",
        ONE_SHARD
    )]
    Unparsable,
    #[error(
        "pgscale can merge only a single SELECT across shards; send one statement per query; {}",
        ONE_SHARD
    )]
    NotOneSelect,
    #[error("a SELECT without FROM reads no sharded table, so pgscale has nothing to fan out")]
    NoFrom,
    #[error(
        "pgscale cannot merge UNION, INTERSECT or EXCEPT across shards: each shard would combine \
         only its own rows; run each SELECT on its own; {}",
        ONE_SHARD
    )]
    SetOperation,
    #[error(
        "pgscale cannot merge WITH queries across shards: each shard would evaluate them over its \
         own rows only; write the query without WITH; {}",
        ONE_SHARD
    )]
    With,
    #[error(
        "pgscale cannot merge subqueries across shards: a subquery would see only the rows of the \
         shard it runs on; {}",
        ONE_SHARD
    )]
    Subquery,
    #[error("pgscale cannot merge DISTINCT across shards: it would return duplicates that live on \
         different shards; write GROUP BY over the selected columns instead, which pgscale can merge; {}", ONE_SHARD)]
    Distinct,
    #[error(
        "pgscale cannot merge DISTINCT ON across shards: each shard would keep its own first row \
         of every group; {}",
        ONE_SHARD
    )]
    DistinctOn,
    #[error(
        "pgscale cannot merge an aggregate over DISTINCT values across shards: a value found on \
         several shards would be counted once per shard; {}",
        ONE_SHARD
    )]
    DistinctAggregate,
    #[error(
        "pgscale cannot merge HAVING across shards: each shard would filter its partial groups, \
         not the whole groups; filter the groups in the client; {}",
        ONE_SHARD
    )]
    Having,
    #[error(
        "pgscale cannot merge window functions across shards: each shard would see only its own \
         rows; {}",
        ONE_SHARD
    )]
    Window,
    #[error(
        "pgscale cannot merge an expression over an aggregate (such as count(*) + 1) across \
         shards: select the bare aggregate and compute the expression in the client; {}",
        ONE_SHARD
    )]
    ExpressionOverAggregate,
    #[error(
        "pgscale cannot merge aggregates with FILTER, ORDER BY or WITHIN GROUP across shards; {}",
        ONE_SHARD
    )]
    AggregateClause,
    #[error(
        "pgscale can merge only count, sum, min, max and avg across shards, not {0}; add the \
         shard key to WHERE (key = value) so that the query runs on one shard"
    )]
    UnsupportedAggregate(&'static str),
    #[error("pgscale cannot merge GROUPING SETS, ROLLUP or CUBE across shards; group by plain columns; {}", ONE_SHARD)]
    GroupingSets,
    #[error("pgscale cannot merge SELECT * with GROUP BY or aggregates across shards; name the columns; {}", ONE_SHARD)]
    WildcardWithAggregates,
    #[error(
        "pgscale cannot merge FETCH FIRST across shards; write LIMIT n instead; {}",
        ONE_SHARD
    )]
    Fetch,
    #[error(
        "pgscale does not lock rows on every shard (FOR UPDATE/SHARE); {}",
        ONE_SHARD
    )]
    Locking,
    #[error("SELECT INTO creates a table; pgscale does not fan it out across shards")]
    Into,
    #[error(
        "pgscale can split LIMIT and OFFSET across shards only when they are integer literals \
         (not parameters or expressions); {}",
        ONE_SHARD
    )]
    NonLiteralLimit,
    #[error(
        "pgscale cannot merge ORDER BY … USING across shards; write ASC or DESC; {}",
        ONE_SHARD
    )]
    OrderByUsing,
    #[error(
        "pgscale cannot rewrite a number written against a name (such as 0x1F, 0b101 or 12abc): \
         Postgres versions read it differently; put a space between them or write the number in \
         decimal"
    )]
    GluedNumber,
    #[error("a non-integer constant in ORDER BY or GROUP BY means nothing; remove it")]
    ConstantKey,
    #[error(
        "pgscale cannot tell what \"{0}\" in ORDER BY or GROUP BY refers to (an output column or \
         a table column); write the expression or its position instead"
    )]
    AmbiguousName(Box<str>),
    #[error("{clause} position {position} is not in select list")]
    Position { clause: &'static str, position: u64 },
    #[error("aggregate functions are not allowed in GROUP BY")]
    AggregateInGroupBy,
    #[error("pgscale cannot merge {0} across shards; {ONE_SHARD}", ONE_SHARD = ONE_SHARD)]
    UnsupportedClause(&'static str),
}

impl Unmergeable {
    /// The SQLSTATE a client sees: `feature_not_supported`.
    pub fn sqlstate(&self) -> &'static str {
        "0A000"
    }
}

/// Shards' rows that could not be merged. Raised per execution, from what the rows' types turned
/// out to be (which planning cannot know) or from malformed messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MergeError {
    #[error("a shard sent a malformed {0}")]
    Malformed(&'static str),
    #[error("a shard sent an unknown format code {0}")]
    UnknownFormat(i16),
    #[error("no shard results to merge")]
    NoShards,
    #[error(
        "shard {shard} returned different columns than shard 0 (count, types or formats); the \
         shards' schemas must match"
    )]
    ColumnsDiffer { shard: usize },
    #[error("the shards returned {got} columns where pgscale's plan expects {expected}")]
    ColumnCount { expected: usize, got: usize },
    #[error(
        "pgscale cannot {what} values of type OID {type_oid} across shards; add the shard key \
         to WHERE (key = value) so that the query runs on one shard"
    )]
    UnsupportedType { what: &'static str, type_oid: u32 },
    #[error(
        "the database sorts text by its collation, which pgscale does not reproduce; write \
         COLLATE \"C\" after the text ORDER BY expression, or add the shard key to WHERE so that \
         the query runs on one shard"
    )]
    CollatedText,
    #[error(
        "pgscale compares date/time text values only in DateStyle ISO; SET DateStyle = ISO, or \
         ask for binary results"
    )]
    DateStyle,
    #[error("pgscale merges bytea text values only in bytea_output = hex; SET bytea_output = hex")]
    ByteaOutput,
    #[error(
        "pgscale prints float sums and averages only with extra_float_digits >= 1 (the default); \
         SET extra_float_digits = 1, or ask for binary results"
    )]
    FloatDigits,
    #[error(
        "pgscale cannot merge avg over real values exactly (shards sum them in real); write \
         avg(x::float8), which Postgres computes the same way"
    )]
    AvgOfReal,
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error(
        "shard {shard} returned rows out of the order pgscale merges them in (a collation or \
         setting differs from what pgscale was told); add the shard key to WHERE so that the \
         query runs on one shard"
    )]
    Unsorted { shard: usize },
    #[error("shard {shard} returned {rows} rows for an aggregate without GROUP BY, not 1")]
    AggregateRows { shard: usize, rows: usize },
    #[error("ORDER BY position {0} is not in the select list")]
    SortPosition(usize),
}

impl MergeError {
    /// The SQLSTATE a client sees.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            MergeError::OutOfRange(_) => "22003",
            MergeError::SortPosition(_) => "42P10",
            MergeError::Malformed(_)
            | MergeError::UnknownFormat(_)
            | MergeError::NoShards
            | MergeError::ColumnsDiffer { .. }
            | MergeError::ColumnCount { .. }
            | MergeError::AggregateRows { .. } => "XX000",
            _ => "0A000",
        }
    }
}
