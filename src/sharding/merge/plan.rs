//! [`ScatterPlan`]: the query every shard runs and what the merge does with their rows. Built once
//! per statement text by `analyze`; plain data, cheap to cache and share.

/// How a fanned-out `SELECT` runs: the shard query, and how its rows become the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScatterPlan {
    pub(super) shard_sql: String,
    pub(super) body: Body,
    /// Applied to the merged rows (after aggregation, when there is one).
    pub(super) order: Vec<SortKey>,
    pub(super) offset: u64,
    pub(super) limit: Option<u64>,
}

/// What the merge does between reading rows and ordering them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Body {
    /// Rows pass through; the last `hidden` columns (sort keys the client did not select) are cut.
    Rows { hidden: usize },
    /// Rows are partial aggregates, combined per group.
    Aggregate(AggPlan),
}

/// One ORDER BY key, Postgres' defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SortKey {
    pub column: ColumnRef,
    pub descending: bool,
    pub nulls_first: bool,
    /// Text compares byte by byte whatever the database collation (`COLLATE "C"` on the key).
    pub bytewise: bool,
}

/// A column of the merged rows: one the client sees, or a hidden one after them. With `SELECT *`
/// the number of visible columns is known only from the rows, hence two kinds of index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnRef {
    Visible(usize),
    Hidden(usize),
}

/// How partial aggregates combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AggPlan {
    /// With GROUP BY no input means no rows; without, one row however little input.
    pub grouped: bool,
    /// What each shard column holds, in shard column order.
    pub roles: Vec<Role>,
    /// The merged columns: the `visible` ones the client sees, then hidden sort keys.
    pub finals: Vec<Final>,
    pub visible: usize,
}

/// What a shard column of an aggregate query holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Part of the GROUP BY key.
    Key,
    /// Determined by the group (a constant, a function of the key): any shard's value will do.
    Carried,
    Count,
    Sum,
    Min {
        bytewise: bool,
    },
    Max {
        bytewise: bool,
    },
}

/// How a merged column comes from the combined shard columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Final {
    Column(usize),
    /// `avg`, from the shards' `sum` and `count` of the same argument.
    Avg {
        sum: usize,
        count: usize,
    },
}

impl ScatterPlan {
    /// The SQL every shard runs.
    pub fn shard_sql(&self) -> &str {
        &self.shard_sql
    }

    /// Whether the shards' rows are the answer as they come, in any order: the caller may stream
    /// every shard's DataRows straight to the client and skip [`merge`](super::merge).
    pub fn is_concat(&self) -> bool {
        self.body == Body::Rows { hidden: 0 }
            && self.order.is_empty()
            && self.offset == 0
            && self.limit.is_none()
    }

    /// The result format codes to bind on the shard query, given the client's (Bind's list: none,
    /// one for all columns, or one per column). Shard-only columns are asked for in binary, which
    /// decodes without depending on DateStyle and such.
    pub fn shard_result_formats(&self, client: &[i16]) -> Vec<i16> {
        if client.len() <= 1 {
            return client.to_vec();
        }
        let extra = match &self.body {
            Body::Rows { hidden } => *hidden,
            Body::Aggregate(agg) => agg.roles.len().saturating_sub(agg.visible),
        };
        let mut formats = client.to_vec();
        formats.extend(std::iter::repeat_n(1, extra));
        formats
    }
}
