//! [`plan_scatter`]: is this SELECT's answer a merge of its per-shard answers, and how. One parse;
//! every shape that would need more than concatenating, ordering, limiting or combining
//! count/sum/min/max/avg per group is refused, naming the construct.

mod aggregates;
mod literals;
mod names;
mod shape;

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{
    Expr, GroupByExpr, Ident, LimitClause, OrderByExpr, OrderByKind, OrderBySort, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, Value, Visit, Visitor,
    WildcardAdditionalOptions,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::error::Unmergeable;
use super::plan::ScatterPlan;
use super::rewrite;

/// Plans a key-less SELECT sent to every shard: the shard query and how to merge the results.
///
/// The caller vouches for the FROM clause: evaluated on each shard, it must yield that shard's
/// part of the rows one database would produce (sharded tables joined only on their shard keys,
/// anything else a reference table present on every shard). Everything else is checked here:
/// subqueries, WITH, DISTINCT, HAVING, window functions, set operations and aggregates other than
/// plain count/sum/min/max/avg are refused.
pub fn plan_scatter(sql: &str) -> Result<ScatterPlan, Unmergeable> {
    let mut query = parse(sql)?;
    check_query(&query)?;
    literals::check(sql, &query)?;
    let select = match query.body.as_ref() {
        SetExpr::Select(select) => select.as_ref(),
        SetExpr::SetOperation { .. } => return Err(Unmergeable::SetOperation),
        _ => return Err(Unmergeable::NotOneSelect),
    };
    check_select(select)?;
    let order_by = order_by(&query)?;
    check_nested(select, order_by)?;
    let (offset, limit) = limits(&query)?;
    let items = items(&select.projection)?;
    let group_by = group_by(select)?;
    let query_shape = shape::Query {
        items: &items,
        group_by: &group_by,
        order_by,
        offset,
        limit,
    };
    let (rewrite, body, order) = match query_shape.is_aggregate()? {
        true => query_shape.aggregate()?,
        false => query_shape.rows()?,
    };
    rewrite::apply(&mut query, rewrite);
    Ok(ScatterPlan {
        shard_sql: query.to_string(),
        body,
        order,
        offset,
        limit,
    })
}

/// The one query in `sql`. A panic inside sqlparser counts as a parse failure: a client's text
/// must never take the proxy down.
fn parse(sql: &str) -> Result<Query, Unmergeable> {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
    }));
    let mut statements = match parsed {
        Ok(Ok(statements)) => statements,
        _ => return Err(Unmergeable::Unparsable),
    };
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::Query(query)), true) => Ok(*query),
        _ => Err(Unmergeable::NotOneSelect),
    }
}

/// The clauses around the SELECT.
fn check_query(query: &Query) -> Result<(), Unmergeable> {
    use Unmergeable::*;
    if query.with.is_some() {
        return Err(With);
    }
    if query.fetch.is_some() {
        return Err(Fetch);
    }
    if !query.locks.is_empty() {
        return Err(Locking);
    }
    if query.for_clause.is_some() || query.format_clause.is_some() {
        return Err(UnsupportedClause("FOR XML/JSON or FORMAT"));
    }
    if query.settings.is_some() || !query.pipe_operators.is_empty() {
        return Err(UnsupportedClause("SETTINGS or pipe operators"));
    }
    Ok(())
}

/// The SELECT's own clauses (those of other dialects are refused wholesale).
fn check_select(select: &Select) -> Result<(), Unmergeable> {
    use sqlparser::ast::Distinct;
    use Unmergeable::*;
    match &select.distinct {
        Some(Distinct::Distinct) => return Err(Distinct),
        Some(Distinct::On(_)) => return Err(DistinctOn),
        _ => {}
    }
    if select.into.is_some() {
        return Err(Into);
    }
    if select.from.is_empty() {
        return Err(NoFrom);
    }
    if select.having.is_some() {
        return Err(Having);
    }
    if !select.named_window.is_empty() {
        return Err(Window);
    }
    let foreign = select.top.is_some()
        || select.select_modifiers.is_some()
        || select.exclude.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.qualify.is_some()
        || select.value_table_mode.is_some();
    match foreign {
        true => Err(UnsupportedClause("this SELECT clause")),
        false => Ok(()),
    }
}

/// Subqueries and window functions anywhere in the SELECT or its ORDER BY.
fn check_nested(select: &Select, order_by: &[OrderByExpr]) -> Result<(), Unmergeable> {
    struct Nested;
    impl Visitor for Nested {
        type Break = Unmergeable;
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<Unmergeable> {
            ControlFlow::Break(Unmergeable::Subquery)
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Unmergeable> {
            match expr {
                Expr::Function(f) if f.over.is_some() => ControlFlow::Break(Unmergeable::Window),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    if let ControlFlow::Break(refusal) = select.visit(&mut Nested) {
        return Err(refusal);
    }
    for key in order_by {
        if let ControlFlow::Break(refusal) = key.visit(&mut Nested) {
            return Err(refusal);
        }
    }
    Ok(())
}

fn order_by(query: &Query) -> Result<&[OrderByExpr], Unmergeable> {
    let Some(order_by) = &query.order_by else {
        return Ok(&[]);
    };
    let OrderByKind::Expressions(keys) = &order_by.kind else {
        return Err(Unmergeable::UnsupportedClause("ORDER BY ALL"));
    };
    if order_by.interpolate.is_some() || keys.iter().any(|k| k.with_fill.is_some()) {
        return Err(Unmergeable::UnsupportedClause("ORDER BY … WITH FILL"));
    }
    if keys
        .iter()
        .any(|k| matches!(k.options.sort, Some(OrderBySort::Using(_))))
    {
        return Err(Unmergeable::OrderByUsing);
    }
    Ok(keys)
}

/// OFFSET and LIMIT as integers (`LIMIT ALL`/`NULL` is no limit, `OFFSET NULL` is 0).
fn limits(query: &Query) -> Result<(u64, Option<u64>), Unmergeable> {
    let (limit, offset) = match &query.limit_clause {
        None => return Ok((0, None)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => (limit.as_ref(), offset.as_ref().map(|o| &o.value)),
        Some(_) => return Err(Unmergeable::UnsupportedClause("this LIMIT form")),
    };
    let count = |expr: Option<&Expr>| -> Result<Option<u64>, Unmergeable> {
        let Some(Expr::Value(v)) = expr else {
            return match expr {
                None => Ok(None),
                Some(_) => Err(Unmergeable::NonLiteralLimit),
            };
        };
        match &v.value {
            Value::Null => Ok(None),
            Value::Number(n, _) => n
                .parse()
                .map(Some)
                .map_err(|_| Unmergeable::NonLiteralLimit),
            _ => Err(Unmergeable::NonLiteralLimit),
        }
    };
    Ok((count(offset)?.unwrap_or(0), count(limit)?))
}

/// One select-list item, with what ORDER BY and GROUP BY resolution need.
#[derive(Debug)]
struct Item<'a> {
    /// `None` for a wildcard.
    expr: Option<&'a Expr>,
    alias: Option<&'a Ident>,
    /// The output column name (alias or Postgres' derived name); `None` for `?column?`.
    name: Option<String>,
    /// The output column index, known when no wildcard comes before.
    position: Option<usize>,
    /// The expression's text, to match ORDER BY and GROUP BY expressions.
    text: String,
}

fn items(projection: &[SelectItem]) -> Result<Vec<Item<'_>>, Unmergeable> {
    let mut out = Vec::with_capacity(projection.len());
    let mut after_wildcard = false;
    for (i, item) in projection.iter().enumerate() {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (Some(expr), None),
            SelectItem::ExprWithAlias { expr, alias } => (Some(expr), Some(alias)),
            SelectItem::Wildcard(options) if plain_wildcard(options) => (None, None),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(_), o)
                if plain_wildcard(o) =>
            {
                (None, None)
            }
            _ => return Err(Unmergeable::UnsupportedClause("this select-list item")),
        };
        after_wildcard |= expr.is_none();
        out.push(Item {
            expr,
            alias,
            name: match alias {
                Some(alias) => Some(names::folded(alias)),
                None => expr.and_then(names::output_name),
            },
            position: (!after_wildcard).then_some(i),
            text: expr.map(ToString::to_string).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `*` without EXCLUDE/EXCEPT/REPLACE/RENAME/ILIKE (other dialects').
fn plain_wildcard(options: &WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
}

fn group_by(select: &Select) -> Result<Vec<&Expr>, Unmergeable> {
    let GroupByExpr::Expressions(exprs, modifiers) = &select.group_by else {
        return Err(Unmergeable::UnsupportedClause("GROUP BY ALL"));
    };
    if !modifiers.is_empty() {
        return Err(Unmergeable::GroupingSets);
    }
    exprs
        .iter()
        .map(|e| match e {
            Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => {
                Err(Unmergeable::GroupingSets)
            }
            e => Ok(e),
        })
        .collect()
}
