//! From a checked SELECT to the merge plan and the shard rewrite: which column each ORDER BY key
//! is, what each shard column of an aggregate query holds, and which columns must be added.

use sqlparser::ast::{Expr, Ident, OrderByExpr, OrderByOptions, OrderBySort, Value};

use super::aggregates::{classify, is_bytewise, renamed, AggFunc};
use super::names::folded;
use super::Item;
use crate::sharding::merge::error::Unmergeable;
use crate::sharding::merge::plan::{AggPlan, Body, ColumnRef, Final, Role, SortKey};
use crate::sharding::merge::rewrite::{Rewrite, ShardSort, SortTarget};

/// The parts of a SELECT the shape depends on.
pub(super) struct Query<'q, 'a> {
    pub items: &'q [Item<'a>],
    pub group_by: &'q [&'a Expr],
    pub order_by: &'a [OrderByExpr],
    pub offset: u64,
    pub limit: Option<u64>,
}

/// What an ORDER BY key refers to, resolved as Postgres does.
enum Target<'a> {
    /// A select-list item (by output name or equal expression).
    Item(usize),
    /// An output position, 0-based (`ORDER BY 2`).
    Position(usize),
    /// An expression over the input rows, not in the select list.
    Input(&'a Expr),
}

type Shape = (Rewrite, Body, Vec<SortKey>);

impl<'a> Query<'_, 'a> {
    /// Whether rows combine per group: GROUP BY, or an aggregate in the select list or ORDER BY.
    pub(super) fn is_aggregate(&self) -> Result<bool, Unmergeable> {
        if !self.group_by.is_empty() {
            return Ok(true);
        }
        let exprs = self.items.iter().filter_map(|item| item.expr);
        for expr in exprs.chain(self.order_by.iter().map(|k| &k.expr)) {
            if classify(expr)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rows pass through: sorted by a k-way merge of the shards' sorted rows, cut by LIMIT n + m
    /// on every shard.
    pub(super) fn rows(&self) -> Result<Shape, Unmergeable> {
        let mut rewrite = Rewrite {
            limit: self.limit.and_then(|n| n.checked_add(self.offset)),
            ..Rewrite::default()
        };
        let mut order = Vec::new();
        for key in self.order_by {
            let (column, target, expr) = match self.resolve(&key.expr)? {
                Target::Position(p) => {
                    let item = self.items.iter().find(|it| it.position == Some(p));
                    (
                        ColumnRef::Visible(p),
                        SortTarget::Position(p),
                        item.and_then(|it| it.expr),
                    )
                }
                Target::Item(i) => match (self.items[i].position, self.items[i].expr) {
                    (Some(p), expr) => (ColumnRef::Visible(p), SortTarget::Position(p), expr),
                    // After a `*`: its position is unknown, so it is selected again, hidden.
                    (None, expr) => {
                        let expr = expr.ok_or(Unmergeable::UnsupportedClause("ORDER BY *"))?;
                        let k = hide(&mut rewrite.hidden, expr);
                        (ColumnRef::Hidden(k), SortTarget::Hidden(k), Some(expr))
                    }
                },
                Target::Input(expr) => {
                    let k = hide(&mut rewrite.hidden, expr);
                    (ColumnRef::Hidden(k), SortTarget::Hidden(k), Some(expr))
                }
            };
            order.push(sort_key(
                column,
                &key.options,
                expr.is_some_and(is_bytewise),
            ));
            rewrite.order_by.push(ShardSort {
                target,
                options: key.options.clone(),
            });
        }
        let hidden = rewrite.hidden.len();
        Ok((rewrite, Body::Rows { hidden }, order))
    }

    /// Partial aggregates combined per group, then ordered and limited; the shards get neither
    /// ORDER BY nor LIMIT, since a group's rows may be on every shard.
    pub(super) fn aggregate(&self) -> Result<Shape, Unmergeable> {
        let mut agg = AggBuilder {
            visible: self.items.len(),
            roles: Vec::new(),
            hidden_roles: Vec::new(),
            finals: Vec::new(),
            rewrite: Rewrite::default(),
        };
        for (i, item) in self.items.iter().enumerate() {
            let expr = item.expr.ok_or(Unmergeable::WildcardWithAggregates)?;
            agg.item(i, expr, item.alias)?;
        }
        for &expr in self.group_by {
            self.group_key(&mut agg, expr)?;
        }
        let mut order = Vec::new();
        for key in self.order_by {
            let (column, expr) = match self.resolve(&key.expr)? {
                Target::Position(p) if p < agg.visible => {
                    (ColumnRef::Visible(p), self.items[p].expr)
                }
                Target::Position(p) => return Err(position_error("ORDER BY", p as u64 + 1)),
                Target::Item(i) => (ColumnRef::Visible(i), self.items[i].expr),
                Target::Input(expr) => (ColumnRef::Hidden(agg.hidden_final(expr)?), Some(expr)),
            };
            order.push(sort_key(
                column,
                &key.options,
                expr.is_some_and(is_bytewise),
            ));
        }
        let mut roles = agg.roles;
        roles.extend(agg.hidden_roles);
        let plan = AggPlan {
            grouped: !self.group_by.is_empty(),
            roles,
            finals: agg.finals,
            visible: agg.visible,
        };
        Ok((agg.rewrite, Body::Aggregate(plan), order))
    }

    /// Marks (or adds) the shard column holding a GROUP BY expression as part of the key.
    fn group_key(&self, agg: &mut AggBuilder, expr: &Expr) -> Result<(), Unmergeable> {
        let text = expr.to_string();
        let item = match position(expr)? {
            Some(p) => {
                let index = usize::try_from(p).ok().and_then(|p| p.checked_sub(1));
                let index = index.filter(|&i| i < agg.visible);
                Some(index.ok_or(position_error("GROUP BY", p))?)
            }
            None => {
                // GROUP BY prefers a table column to an output column of the same name; which one
                // exists is the catalog's secret.
                if let Expr::Identifier(ident) = expr {
                    let name = folded(ident);
                    let aliased = |it: &&Item| it.alias.is_some_and(|a| folded(a) == name);
                    if self.items.iter().filter(aliased).any(|it| it.text != text) {
                        return Err(Unmergeable::AmbiguousName(name.into()));
                    }
                }
                if classify(expr)?.is_some() {
                    return Err(Unmergeable::AggregateInGroupBy);
                }
                self.items.iter().position(|it| it.text == text)
            }
        };
        match item {
            Some(i) => match &mut agg.roles[i] {
                role @ Role::Carried => *role = Role::Key,
                Role::Key => {}
                _ => return Err(Unmergeable::AggregateInGroupBy),
            },
            None if agg.hidden_column(&text).is_some() => {}
            None => {
                agg.push(expr.clone(), Role::Key);
            }
        }
        Ok(())
    }

    /// What an ORDER BY expression refers to: an integer is a position; a bare name is an output
    /// column of that name first; an expression equal to an item is that item.
    fn resolve(&self, expr: &'a Expr) -> Result<Target<'a>, Unmergeable> {
        if let Some(p) = position(expr)? {
            let index = usize::try_from(p).ok().and_then(|p| p.checked_sub(1));
            return index
                .map(Target::Position)
                .ok_or(position_error("ORDER BY", p));
        }
        if let Expr::Identifier(ident) = expr {
            let name = folded(ident);
            let mut named = self
                .items
                .iter()
                .enumerate()
                .filter(|(_, it)| it.name.as_deref() == Some(name.as_str()));
            if let Some((i, first)) = named.next() {
                if named.any(|(_, it)| it.text != first.text) {
                    return Err(Unmergeable::AmbiguousName(name.into()));
                }
                return Ok(Target::Item(i));
            }
        }
        let text = expr.to_string();
        Ok(match self.items.iter().position(|it| it.text == text) {
            Some(i) => Target::Item(i),
            None => Target::Input(expr),
        })
    }
}

/// The shard columns and merged columns of an aggregate query, as they are found.
struct AggBuilder {
    /// Select-list items: the first shard columns and the first merged columns.
    visible: usize,
    /// The select-list items' shard columns.
    roles: Vec<Role>,
    /// The hidden shard columns after them, one per `rewrite.hidden` expression.
    hidden_roles: Vec<Role>,
    finals: Vec<Final>,
    rewrite: Rewrite,
}

impl AggBuilder {
    /// Select-list item `i` (items come in order, so its shard column is `i`).
    fn item(&mut self, i: usize, expr: &Expr, alias: Option<&Ident>) -> Result<(), Unmergeable> {
        let role = match classify(expr)? {
            None => Role::Carried,
            Some((AggFunc::Avg, f)) => {
                let name = alias.cloned().unwrap_or_else(|| Ident::new("avg"));
                self.rewrite.replaced.push((i, renamed(f, "sum"), name));
                self.roles.push(Role::Sum);
                let count = self.push(renamed(f, "count"), Role::Count);
                self.finals.push(Final::Avg { sum: i, count });
                return Ok(());
            }
            Some((func, _)) => role_of(func, expr),
        };
        self.roles.push(role);
        self.finals.push(Final::Column(i));
        Ok(())
    }

    /// Adds a hidden shard column; its shard column index.
    fn push(&mut self, expr: Expr, role: Role) -> usize {
        self.rewrite.hidden.push(expr);
        self.hidden_roles.push(role);
        self.visible + self.hidden_roles.len() - 1
    }

    /// The hidden shard column already computing `text`, if any.
    fn hidden_column(&self, text: &str) -> Option<usize> {
        let k = self
            .rewrite
            .hidden
            .iter()
            .position(|e| e.to_string() == text)?;
        Some(self.visible + k)
    }

    /// A merged column for an ORDER BY expression not in the select list; its hidden index.
    fn hidden_final(&mut self, expr: &Expr) -> Result<usize, Unmergeable> {
        let last = match classify(expr)? {
            Some((AggFunc::Avg, f)) => Final::Avg {
                sum: self.push(renamed(f, "sum"), Role::Sum),
                count: self.push(renamed(f, "count"), Role::Count),
            },
            Some((func, _)) => Final::Column(self.push(expr.clone(), role_of(func, expr))),
            None => match self.hidden_column(&expr.to_string()) {
                Some(column) => Final::Column(column),
                None => Final::Column(self.push(expr.clone(), Role::Carried)),
            },
        };
        self.finals.push(last);
        Ok(self.finals.len() - 1 - self.visible)
    }
}

fn role_of(func: AggFunc, expr: &Expr) -> Role {
    let bytewise = is_bytewise(expr);
    match func {
        AggFunc::Count => Role::Count,
        AggFunc::Sum | AggFunc::Avg => Role::Sum,
        AggFunc::Min => Role::Min { bytewise },
        AggFunc::Max => Role::Max { bytewise },
    }
}

/// Adds `expr` to the hidden columns unless it is there already; its index among them.
fn hide(hidden: &mut Vec<Expr>, expr: &Expr) -> usize {
    let text = expr.to_string();
    match hidden.iter().position(|e| e.to_string() == text) {
        Some(k) => k,
        None => {
            hidden.push(expr.clone());
            hidden.len() - 1
        }
    }
}

/// An integer literal in ORDER BY or GROUP BY (a position); other constants are refused.
fn position(expr: &Expr) -> Result<Option<u64>, Unmergeable> {
    let Expr::Value(v) = expr else {
        return Ok(None);
    };
    match &v.value {
        Value::Number(n, _) => n.parse().map(Some).map_err(|_| Unmergeable::ConstantKey),
        _ => Err(Unmergeable::ConstantKey),
    }
}

fn position_error(clause: &'static str, position: u64) -> Unmergeable {
    Unmergeable::Position { clause, position }
}

/// Postgres' defaults: ascending; NULLs last when ascending, first when descending.
fn sort_key(column: ColumnRef, options: &OrderByOptions, bytewise: bool) -> SortKey {
    let descending = matches!(options.sort, Some(OrderBySort::Desc));
    SortKey {
        column,
        descending,
        nulls_first: options.nulls_first.unwrap_or(descending),
        bytewise,
    }
}
