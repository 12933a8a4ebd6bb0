//! Which function calls are aggregates, which of those pgscale can merge (count, sum, min, max,
//! avg in their plain forms), and the `sum`/`count` pair an `avg` is split into.
//!
//! Aggregates are known by name: Postgres' built-in ones, unqualified or in `pg_catalog`. A
//! user-defined aggregate cannot be told from a plain function without the catalog, so it is
//! taken for one (the caller's rules must not send such queries here).

use std::ops::ControlFlow;

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArguments, Ident, ObjectNamePart, Visit, Visitor,
};

use super::names::{folded, last_name};
use crate::sharding::merge::error::Unmergeable;

/// A mergeable aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// Built-in aggregates pgscale refuses, by name (window-only functions need OVER, refused anyway).
const UNMERGEABLE: &[&str] = &[
    "any_value",
    "array_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "every",
    "grouping",
    "json_agg",
    "json_agg_strict",
    "json_arrayagg",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "json_objectagg",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "mode",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
];

enum Known {
    Mergeable(AggFunc),
    Unmergeable(&'static str),
}

/// The aggregate `f` calls, if it names a built-in one.
fn known(f: &Function) -> Option<Known> {
    if f.name.0.len() > 2 {
        return None;
    }
    if let [ObjectNamePart::Identifier(schema), _] = f.name.0.as_slice() {
        if folded(schema) != "pg_catalog" {
            return None;
        }
    }
    let name = last_name(&f.name)?;
    Some(match name.as_str() {
        "count" => Known::Mergeable(AggFunc::Count),
        "sum" => Known::Mergeable(AggFunc::Sum),
        "min" => Known::Mergeable(AggFunc::Min),
        "max" => Known::Mergeable(AggFunc::Max),
        "avg" => Known::Mergeable(AggFunc::Avg),
        _ => Known::Unmergeable(UNMERGEABLE.iter().find(|n| **n == name)?),
    })
}

/// `Some` when `expr` is one bare mergeable aggregate call (parentheses allowed), `None` when it
/// contains no aggregate; refused when an aggregate is inside an expression or not mergeable.
pub(super) fn classify(expr: &Expr) -> Result<Option<(AggFunc, &Function)>, Unmergeable> {
    let mut bare = expr;
    while let Expr::Nested(inner) = bare {
        bare = inner;
    }
    if let Expr::Function(f) = bare {
        if let Some(known) = known(f) {
            let func = mergeable(f, known)?;
            if contains_aggregate(&f.args)? {
                return Err(Unmergeable::ExpressionOverAggregate);
            }
            return Ok(Some((func, f)));
        }
    }
    match contains_aggregate(expr)? {
        true => Err(Unmergeable::ExpressionOverAggregate),
        false => Ok(None),
    }
}

/// Refuses the aggregate unless it is count/sum/min/max/avg with no DISTINCT, FILTER, ORDER BY,
/// WITHIN GROUP or other clause.
fn mergeable(f: &Function, known: Known) -> Result<AggFunc, Unmergeable> {
    let func = match known {
        Known::Mergeable(func) => func,
        Known::Unmergeable(name) => return Err(Unmergeable::UnsupportedAggregate(name)),
    };
    if f.over.is_some() {
        return Err(Unmergeable::Window);
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(Unmergeable::AggregateClause);
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(Unmergeable::DistinctAggregate);
    }
    let plain = list.clauses.is_empty()
        && f.filter.is_none()
        && f.within_group.is_empty()
        && f.null_treatment.is_none()
        && matches!(f.parameters, FunctionArguments::None);
    match plain {
        true => Ok(func),
        false => Err(Unmergeable::AggregateClause),
    }
}

/// Whether any aggregate is called inside `node`; refuses unmergeable ones (so that the message
/// names the real problem, e.g. `string_agg`, not the expression around it).
fn contains_aggregate<V: Visit>(node: &V) -> Result<bool, Unmergeable> {
    struct Find;
    impl Visitor for Find {
        type Break = Result<(), Unmergeable>;
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Self::Break> {
            if let Expr::Function(f) = expr {
                if let Some(known) = known(f) {
                    return ControlFlow::Break(mergeable(f, known).map(|_| ()));
                }
            }
            ControlFlow::Continue(())
        }
    }
    match node.visit(&mut Find) {
        ControlFlow::Continue(()) => Ok(false),
        ControlFlow::Break(result) => result.map(|()| true),
    }
}

/// Whether `expr` orders text byte by byte: `COLLATE "C"` (or POSIX, ucs_basic) on it, or on the
/// argument of the min/max it is.
pub(super) fn is_bytewise(expr: &Expr) -> bool {
    match expr {
        Expr::Nested(inner) => is_bytewise(inner),
        Expr::Collate { collation, .. } => matches!(
            last_name(collation).as_deref(),
            Some("C" | "POSIX" | "ucs_basic")
        ),
        Expr::Function(f) if matches!(last_name(&f.name).as_deref(), Some("min" | "max")) => {
            single_arg(f).is_some_and(is_bytewise)
        }
        _ => false,
    }
}

fn single_arg(f: &Function) -> Option<&Expr> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr};
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e),
        _ => None,
    }
}

/// The same call under another name: `avg(x)` becomes `sum(x)` and `count(x)`.
pub(super) fn renamed(f: &Function, name: &str) -> Expr {
    let mut f = f.clone();
    if let Some(last) = f.name.0.last_mut() {
        *last = ObjectNamePart::Identifier(Ident::new(name));
    }
    Expr::Function(f)
}
