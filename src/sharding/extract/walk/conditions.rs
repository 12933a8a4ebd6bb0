//! Conditions: which conjuncts pin an instance to key values, which equate two shard keys, and
//! `key IN (SELECT key …)`.

use sqlparser::ast::{BinaryOperator, Expr, Query, SelectItem, SetExpr};

use super::{InstanceId, ScopeId, Walker};
use crate::sharding::extract::keys::{array_param, either};
use crate::sharding::plan::Keys;

impl Walker<'_, '_> {
    /// A WHERE or ON condition of `scope`. `pins`: whether it filters the scope's rows (a WHERE,
    /// or the ON of an inner join no RIGHT/FULL join follows), so that its key conditions pin.
    pub(super) fn condition(&mut self, condition: &Expr, scope: ScopeId, pins: bool) {
        let mut conjuncts = Vec::new();
        split_and(condition, &mut conjuncts);
        for conjunct in conjuncts {
            if self.key_equality(conjunct, scope) || self.key_in_subquery(conjunct, scope, pins) {
                continue;
            }
            if pins {
                // Only this scope's instances: a condition in a subquery on an outer query's key
                // (`u.id = 5` inside it) filters the subquery's rows, not the outer query's.
                for (id, keys) in self.pins(conjunct, scope) {
                    if self.instances[id].scope == scope {
                        self.pin(id, keys);
                    }
                }
            }
            self.subqueries(conjunct, Some(scope));
        }
    }

    /// `a.key = b.key`: co-located. Within one scope a restriction of either spreads to the
    /// other; from an outer query's instance it spreads into this scope's, not back out. Between
    /// two outer instances it says nothing about this scope's rows: no link.
    fn key_equality(&mut self, conjunct: &Expr, scope: ScopeId) -> bool {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = conjunct
        else {
            return false;
        };
        let (Some(a), Some(b)) = (self.column(left, scope), self.column(right, scope)) else {
            return false;
        };
        let (sa, sb) = (self.instances[a].scope, self.instances[b].scope);
        match (sa == scope, sb == scope) {
            (true, true) => self.link(a, b, true),
            (false, true) => self.link(a, b, false),
            (true, false) => self.link(b, a, false),
            (false, false) => {}
        }
        true
    }

    /// `a.key IN (SELECT b.key FROM …)` as a filter: each shard's subquery finds the keys of its
    /// own rows, and a key's rows all live on its shard, so the test is right shard by shard. The
    /// subquery must not cut its rows (LIMIT, FETCH, DISTINCT ON): that would differ by shard.
    fn key_in_subquery(&mut self, conjunct: &Expr, scope: ScopeId, pins: bool) -> bool {
        let Expr::InSubquery {
            expr,
            subquery,
            negated: false,
        } = conjunct
        else {
            return false;
        };
        let Some(outer) = self.column(expr, scope) else {
            return false;
        };
        let inner_scope = self.query(subquery, Some(scope), false);
        if let (Some(inner_scope), Some(projected)) = (inner_scope, projected_key(subquery)) {
            if let Some(inner) = self.column(projected, inner_scope) {
                if self.instances[inner].scope == inner_scope {
                    // A filter of this scope's rows restricts both ways; anything else (an outer
                    // join's ON, an outer query's key) only into the subquery.
                    let both = pins && self.instances[outer].scope == scope;
                    self.link(outer, inner, both);
                }
            }
        }
        true
    }

    /// The key restrictions a conjunct puts on instances: `key = v`, `key IN (v, …)`,
    /// `key = ANY($n)`, `key = ANY(ARRAY[v, …])`; ANDs of them; ORs whose every branch restricts
    /// the same instance.
    fn pins(&mut self, expr: &Expr, scope: ScopeId) -> Vec<(InstanceId, Keys)> {
        match expr {
            Expr::Nested(inner) => self.pins(inner, scope),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                let mut pins = self.pins(left, scope);
                pins.extend(self.pins(right, scope));
                pins
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                let (left, right) = (self.pins(left, scope), self.pins(right, scope));
                let mut pins = Vec::new();
                for (id, a) in &left {
                    for (other, b) in &right {
                        if id == other {
                            if let Some(keys) = either(a, b) {
                                pins.push((*id, keys));
                            }
                        }
                    }
                }
                pins
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                for (column, value) in [(left, right), (right, left)] {
                    if let Some(id) = self.column(column, scope) {
                        if let Some(key) = self.key_ref(value, id) {
                            return vec![(id, Keys::One(key))];
                        }
                    }
                }
                Vec::new()
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                let Some(id) = self.column(expr, scope) else {
                    return Vec::new();
                };
                self.list(id, list).into_iter().map(|k| (id, k)).collect()
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => {
                let Some(id) = self.column(left, scope) else {
                    return Vec::new();
                };
                if let Some(n) = array_param(right, self.instances[id].rule.key_type) {
                    return vec![(id, Keys::ArrayParam(n))];
                }
                match right.as_ref() {
                    Expr::Array(array) => self
                        .list(id, &array.elem)
                        .into_iter()
                        .map(|k| (id, k))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// Keys of a list of values, if every one is a key value.
    fn list(&mut self, id: InstanceId, values: &[Expr]) -> Option<Keys> {
        let mut refs = Vec::with_capacity(values.len());
        for value in values {
            let key = self.key_ref(value, id)?;
            if !refs.contains(&key) {
                refs.push(key);
            }
        }
        match refs.as_slice() {
            [] => None,
            [one] => Some(Keys::One(*one)),
            _ => Some(Keys::AnyOf(refs.into_boxed_slice())),
        }
    }
}

/// The top-level conjuncts of a condition (through parentheses).
fn split_and<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::Nested(inner) => split_and(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        _ => out.push(expr),
    }
}

/// The one expression a plain subquery selects, if it cannot cut rows shard by shard.
fn projected_key(query: &Query) -> Option<&Expr> {
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if matches!(select.distinct, Some(sqlparser::ast::Distinct::On(_))) || select.top.is_some() {
        return None;
    }
    match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(expr)] | [SelectItem::ExprWithAlias { expr, .. }] => Some(expr),
        _ => None,
    }
}
