//! The shard query: the client's SELECT with hidden columns appended (sort keys it did not select,
//! GROUP BY keys, `avg`'s counts), `avg(x)` turned into `sum(x)` under the same name, ORDER BY by
//! position or hidden alias (so that shards sort by exactly the values the merge compares), and
//! `LIMIT n + m` without OFFSET.

use sqlparser::ast::{
    Expr, Ident, LimitClause, OrderBy, OrderByExpr, OrderByKind, OrderByOptions, Query, SelectItem,
    SetExpr, Value,
};

/// What to change in the client's query; built by `analyze`.
#[derive(Debug, Default)]
pub(super) struct Rewrite {
    /// Select-list items replaced: index, new expression (`sum(x)` for `avg(x)`), output name.
    pub replaced: Vec<(usize, Expr, Ident)>,
    /// Appended to the select list as `expr AS __pgscale_k`.
    pub hidden: Vec<Expr>,
    /// The shard's ORDER BY; empty for none.
    pub order_by: Vec<ShardSort>,
    /// The shard's LIMIT; never an OFFSET.
    pub limit: Option<u64>,
}

/// One shard ORDER BY key.
#[derive(Debug)]
pub(super) struct ShardSort {
    pub target: SortTarget,
    pub options: OrderByOptions,
}

/// What a shard ORDER BY key names.
#[derive(Debug, Clone, Copy)]
pub(super) enum SortTarget {
    /// A select-list position, 0-based.
    Position(usize),
    /// The k-th hidden column, by its alias.
    Hidden(usize),
}

/// Hidden columns' alias: the merge finds them by position, the shard's ORDER BY by this name.
fn hidden_alias(k: usize) -> Ident {
    Ident::new(format!("__pgscale_{k}"))
}

/// Applies `rewrite` to `query` (whose body is a SELECT).
pub(super) fn apply(query: &mut Query, rewrite: Rewrite) {
    if let SetExpr::Select(select) = query.body.as_mut() {
        for (index, expr, alias) in rewrite.replaced {
            if let Some(item) = select.projection.get_mut(index) {
                *item = SelectItem::ExprWithAlias { expr, alias };
            }
        }
        for (k, expr) in rewrite.hidden.into_iter().enumerate() {
            select.projection.push(SelectItem::ExprWithAlias {
                expr,
                alias: hidden_alias(k),
            });
        }
    }
    query.order_by = match rewrite.order_by.is_empty() {
        true => None,
        false => Some(OrderBy {
            kind: OrderByKind::Expressions(
                rewrite.order_by.into_iter().map(order_by_expr).collect(),
            ),
            interpolate: None,
        }),
    };
    query.limit_clause = rewrite.limit.map(|n| LimitClause::LimitOffset {
        limit: Some(number(n)),
        offset: None,
        limit_by: Vec::new(),
    });
}

fn order_by_expr(key: ShardSort) -> OrderByExpr {
    let expr = match key.target {
        SortTarget::Position(p) => number(p as u64 + 1),
        SortTarget::Hidden(k) => Expr::Identifier(hidden_alias(k)),
    };
    OrderByExpr {
        expr,
        options: key.options,
        with_fill: None,
    }
}

fn number(n: u64) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}
