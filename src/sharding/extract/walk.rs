//! The walk over a query's scopes: every sharded table *instance* (a mention in a FROM list, or a
//! write's target), the conditions that pin an instance to key values, and the equalities between
//! shard keys that make two instances' rows live on the same shard (co-location).
//!
//! Soundness rests on three rules:
//! - A pin (`key = v`, `key IN (…)`, `key = ANY($n)`) counts only where it filters the instance's
//!   rows: a WHERE conjunct, or the ON of an inner join not followed by a RIGHT or FULL join.
//! - A restriction spreads along key equalities of one scope both ways, and into a correlated
//!   subquery (`p.user_id = u.id` inside it), never out of one.
//! - Running a statement on several shards is right only if each shard can answer for its own
//!   rows: every sharded instance of a scope is co-located, and every nested instance is tied to
//!   the outer query's by a key equality (or `key IN (SELECT key …)`).

use sqlparser::ast::{
    Expr, Insert, ObjectName, Query, Select, SetExpr, SetOperator, TableAlias, TableFactor,
    TableObject, TableWithJoins,
};

use super::keys::{key_ref, Literals};
use super::{fold, last_name, refuse};
use crate::sharding::plan::{KeyRef, Keys};
use crate::sharding::rules::{Rules, ShardedTable};

mod conditions;
mod decide;
mod visit;
mod writes;

pub(super) use visit::{count_factors, first_listed, first_sharded};

pub(super) type InstanceId = usize;
pub(super) type ScopeId = usize;

/// One mention of a sharded table.
pub(super) struct Instance<'r> {
    pub(super) rule: &'r ShardedTable,
    pub(super) scope: ScopeId,
    /// Every key restriction found for it (pins and what spread to it).
    pub(super) keys: Vec<Keys>,
}

/// A FROM item as a scope sees it: by the name columns are qualified with.
struct Relation {
    name: String,
    instance: Option<InstanceId>,
}

/// A SELECT (or an UPDATE/DELETE/INSERT): what its columns can refer to.
struct Scope {
    parent: Option<ScopeId>,
    /// The statement's own level (or a branch of its top-level UNION), whose rows are what the
    /// client gets; any other scope is nested.
    top: bool,
    relations: Vec<Relation>,
}

/// How a restriction spreads along a key equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    Both,
    /// From the first instance (outer) to the second (in a subquery) only.
    Inward,
}

/// What a mentioned table is to the rules.
pub(super) enum Table {
    Sharded(InstanceId),
    Reference(String),
    /// Not listed: unsharded (on the default shard), a CTE, a catalog table.
    Other,
}

pub(super) struct Walker<'r, 's> {
    rules: &'r Rules,
    pub(super) literals: Literals<'s>,
    pub(super) instances: Vec<Instance<'r>>,
    scopes: Vec<Scope>,
    links: Vec<(InstanceId, InstanceId, Spread)>,
    /// Names of the WITH queries in scope, innermost last.
    ctes: Vec<String>,
    refusal: Option<Box<str>>,
    /// The first table seen that is neither sharded nor reference nor a catalog.
    unsharded: Option<String>,
    reference_read: bool,
    /// A data-modifying part: INSERT/UPDATE/DELETE at the top or in a WITH.
    pub(super) writes: bool,
    /// The reference table the statement itself writes (a top-level INSERT/UPDATE/DELETE).
    pub(super) reference_write: Option<String>,
    select_into: bool,
    /// INTERSECT or EXCEPT at the top level.
    top_intersect_except: bool,
    /// The rows' keys of a top-level multi-row INSERT into a sharded table.
    insert_rows: Option<Vec<KeyRef>>,
    /// Table factors walked, to compare with how many the statement has: one missed (a clause
    /// this walk does not follow) refuses rather than overlooks a table.
    factors: usize,
}

impl<'r, 's> Walker<'r, 's> {
    pub(super) fn new(rules: &'r Rules, sql: &'s str) -> Walker<'r, 's> {
        Walker {
            rules,
            literals: Literals::new(sql),
            instances: Vec::new(),
            scopes: Vec::new(),
            links: Vec::new(),
            ctes: Vec::new(),
            refusal: None,
            unsharded: None,
            reference_read: false,
            writes: false,
            reference_write: None,
            select_into: false,
            top_intersect_except: false,
            insert_rows: None,
            factors: 0,
        }
    }

    /// Keeps the first refusal: it is the one the statement's order makes most obvious.
    pub(super) fn refuse(&mut self, why: Box<str>) {
        self.refusal.get_or_insert(why);
    }

    fn new_scope(&mut self, parent: Option<ScopeId>, top: bool) -> ScopeId {
        self.scopes.push(Scope {
            parent,
            top,
            relations: Vec::new(),
        });
        self.scopes.len() - 1
    }

    /// A query: its WITH queries (nested scopes), its body, then subqueries in ORDER BY/LIMIT.
    /// Returns the scope of its body when that is one SELECT (for `key IN (SELECT key …)`).
    pub(super) fn query(
        &mut self,
        query: &Query,
        parent: Option<ScopeId>,
        top: bool,
    ) -> Option<ScopeId> {
        let visible = self.ctes.len();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = fold(&cte.alias.name);
                if with.recursive {
                    self.ctes.push(name.clone());
                }
                self.query(&cte.query, parent, false);
                self.ctes.push(name);
            }
        }
        let scope = self.set_expr(&query.body, parent, top);
        self.subqueries(&query.order_by, parent);
        self.subqueries(&query.limit_clause, parent);
        self.subqueries(&query.fetch, parent);
        self.ctes.truncate(visible);
        let plain = query.limit_clause.is_none() && query.fetch.is_none();
        scope.filter(|_| plain)
    }

    fn set_expr(&mut self, body: &SetExpr, parent: Option<ScopeId>, top: bool) -> Option<ScopeId> {
        match body {
            SetExpr::Select(select) => Some(self.select(select, parent, top)),
            SetExpr::Query(query) => self.query(query, parent, top),
            SetExpr::SetOperation {
                op, left, right, ..
            } => {
                if top && *op != SetOperator::Union {
                    self.top_intersect_except = true;
                }
                self.set_expr(left, parent, top);
                self.set_expr(right, parent, top);
                None
            }
            SetExpr::Values(values) => {
                self.subqueries(values, parent);
                None
            }
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement) => {
                self.write(statement, parent, top);
                None
            }
            SetExpr::Table(table) => {
                // `TABLE name`: SELECT * FROM name.
                let scope = self.new_scope(parent, top);
                if let Some(name) = &table.table_name {
                    let object = ObjectName::from(vec![sqlparser::ast::Ident::new(name)]);
                    self.table(&object, None, scope);
                }
                Some(scope)
            }
            _ => {
                self.refuse_if_listed("MERGE or an unknown query form");
                None
            }
        }
    }

    /// Refuses, naming some listed table the statement mentions (or a generic name).
    pub(super) fn refuse_if_listed(&mut self, what: &str) {
        let table = self
            .instances
            .first()
            .map_or("a listed table", |i| i.rule.table.as_str())
            .to_owned();
        self.refuse(refuse::cannot_follow(&table, what));
    }

    fn select(&mut self, select: &Select, parent: Option<ScopeId>, top: bool) -> ScopeId {
        let scope = self.new_scope(parent, top);
        self.select_into |= select.into.is_some();
        let mut on = Vec::new();
        for from in &select.from {
            self.table_with_joins(from, scope, &mut on, false);
        }
        for (condition, pins) in on {
            self.condition(condition, scope, pins);
        }
        if let Some(selection) = &select.selection {
            self.condition(selection, scope, true);
        }
        let s = Some(scope);
        self.subqueries(&select.projection, s);
        self.subqueries(&select.distinct, s);
        self.subqueries(&select.top, s);
        self.subqueries(&select.prewhere, s);
        self.subqueries(&select.group_by, s);
        self.subqueries(&select.having, s);
        self.subqueries(&select.named_window, s);
        self.subqueries(&select.qualify, s);
        self.subqueries(&select.sort_by, s);
        self.subqueries(&select.cluster_by, s);
        self.subqueries(&select.distribute_by, s);
        self.subqueries(&select.connect_by, s);
        if !select.lateral_views.is_empty() {
            self.refuse_if_listed("LATERAL VIEW");
        }
        scope
    }

    /// A FROM item and its joins; join conditions are collected (with whether they may pin) and
    /// read once the scope knows all its relations. Returns the sharded instances it introduced.
    pub(super) fn table_with_joins<'q>(
        &mut self,
        from: &'q TableWithJoins,
        scope: ScopeId,
        on: &mut Vec<(&'q Expr, bool)>,
        nested: bool,
    ) -> Vec<InstanceId> {
        use sqlparser::ast::JoinConstraint as C;
        use sqlparser::ast::JoinOperator as J;
        let mut left = self.factor(&from.relation, scope, on);
        // A RIGHT or FULL join keeps rows the joins before it filtered out: their ON cannot pin.
        let last_right_or_full = from.joins.iter().rposition(|join| {
            matches!(
                join.join_operator,
                J::Right(_) | J::RightOuter(_) | J::FullOuter(_)
            )
        });
        for (i, join) in from.joins.iter().enumerate() {
            let right = self.factor(&join.relation, scope, on);
            let (constraint, inner) = match &join.join_operator {
                J::Join(c) | J::Inner(c) | J::CrossJoin(c) | J::StraightJoin(c) => (c, true),
                J::Left(c) | J::LeftOuter(c) | J::Right(c) | J::RightOuter(c) | J::FullOuter(c) => {
                    (c, false)
                }
                _ => {
                    self.refuse_if_listed("a join Postgres does not have");
                    continue;
                }
            };
            let pins = inner && !nested && last_right_or_full.is_none_or(|r| r < i);
            match constraint {
                C::On(condition) => on.push((condition, pins)),
                C::Using(columns) => {
                    for column in columns {
                        let Some(column) = last_name(column) else {
                            continue;
                        };
                        self.using(&column, &left, &right);
                    }
                }
                C::Natural | C::None => {}
            }
            left.extend(right);
        }
        left
    }

    /// `JOIN … USING (col)`: the instances on either side whose key is `col` are co-located.
    fn using(&mut self, column: &str, left: &[InstanceId], right: &[InstanceId]) {
        let keyed = |ids: &[InstanceId], instances: &[Instance]| -> Vec<InstanceId> {
            ids.iter()
                .copied()
                .filter(|id| instances[*id].rule.column == column)
                .collect()
        };
        let (left, right) = (keyed(left, &self.instances), keyed(right, &self.instances));
        for a in &left {
            for b in &right {
                self.links.push((*a, *b, Spread::Both));
            }
        }
    }

    fn factor<'q>(
        &mut self,
        factor: &'q TableFactor,
        scope: ScopeId,
        on: &mut Vec<(&'q Expr, bool)>,
    ) -> Vec<InstanceId> {
        self.factors += 1;
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => match self.table(name, alias.as_ref(), scope) {
                Table::Sharded(id) => vec![id],
                _ => Vec::new(),
            },
            TableFactor::Table {
                name, alias, args, ..
            } => {
                // `FROM f(…)`: a set-returning function.
                self.subqueries(args, Some(scope));
                self.relation(alias_or(alias.as_ref(), name), None, scope);
                Vec::new()
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                // Only LATERAL sees the FROM items before it.
                let parent = match lateral {
                    true => Some(scope),
                    false => self.scopes[scope].parent,
                };
                self.query(subquery, parent, false);
                let name = alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default();
                self.relation(name, None, scope);
                Vec::new()
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                self.subqueries(args, Some(scope));
                self.relation(alias_or(alias.as_ref(), name), None, scope);
                Vec::new()
            }
            TableFactor::TableFunction { expr, alias } => {
                self.subqueries(expr, Some(scope));
                let name = alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default();
                self.relation(name, None, scope);
                Vec::new()
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                self.subqueries(array_exprs, Some(scope));
                let name = alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default();
                self.relation(name, None, scope);
                Vec::new()
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    self.refuse_if_listed("an aliased parenthesized join");
                }
                self.table_with_joins(table_with_joins, scope, on, true)
            }
            _ => {
                self.refuse_if_listed("a FROM item Postgres does not have");
                Vec::new()
            }
        }
    }

    /// A table mentioned by name: a WITH query, a sharded instance, a reference table or another
    /// table; registered in `scope` under its alias (else its name).
    pub(super) fn table(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        scope: ScopeId,
    ) -> Table {
        let Some(table) = last_name(name) else {
            self.refuse_if_listed("a table name that is not an identifier");
            return Table::Other;
        };
        let exposed = alias.map_or_else(|| table.clone(), |a| fold(&a.name));
        if name.0.len() == 1 && self.ctes.contains(&table) {
            self.relation(exposed, None, scope);
            return Table::Other;
        }
        if let Some(rule) = self.rules.sharded(&table) {
            self.instances.push(Instance {
                rule,
                scope,
                keys: Vec::new(),
            });
            let id = self.instances.len() - 1;
            self.relation(exposed, Some(id), scope);
            return Table::Sharded(id);
        }
        self.relation(exposed, None, scope);
        if self.rules.is_reference(&table) {
            self.reference_read = true;
            return Table::Reference(table);
        }
        if !is_catalog(name, &table) {
            self.unsharded.get_or_insert_with(|| table.clone());
        }
        Table::Other
    }

    fn relation(&mut self, name: String, instance: Option<InstanceId>, scope: ScopeId) {
        self.scopes[scope]
            .relations
            .push(Relation { name, instance });
    }

    /// The instance whose shard key `expr` is, if it is a plain column reference to one: `u.id`,
    /// `users.id`, `public.users.id`, or `id` when exactly one instance of the innermost scope
    /// with relations has that key. An unqualified name in a scope that has other relations may
    /// be their column: no key.
    pub(super) fn column(&self, expr: &Expr, scope: ScopeId) -> Option<InstanceId> {
        match expr {
            Expr::Nested(inner) => self.column(inner, scope),
            Expr::Identifier(ident) => {
                let column = fold(ident);
                let mut at = Some(scope);
                while let Some(s) = at {
                    let scope = &self.scopes[s];
                    let mut keyed = scope
                        .relations
                        .iter()
                        .filter_map(|r| r.instance)
                        .filter(|i| self.instances[*i].rule.column == column);
                    if let Some(first) = keyed.next() {
                        // Several: only if `USING (col)` merged them into one column.
                        let merged = keyed.all(|other| self.linked(first, other));
                        return merged.then_some(first);
                    }
                    if !scope.relations.is_empty() {
                        return None;
                    }
                    at = scope.parent;
                }
                None
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = fold(&parts[parts.len() - 1]);
                let qualifier = fold(&parts[parts.len() - 2]);
                let mut at = Some(scope);
                while let Some(s) = at {
                    let scope = &self.scopes[s];
                    if let Some(relation) = scope.relations.iter().find(|r| r.name == qualifier) {
                        let id = relation.instance?;
                        return (self.instances[id].rule.column == column).then_some(id);
                    }
                    at = scope.parent;
                }
                None
            }
            _ => None,
        }
    }

    /// Whether a key equality of one scope links the two instances directly.
    fn linked(&self, a: InstanceId, b: InstanceId) -> bool {
        self.links
            .iter()
            .any(|&(x, y, spread)| spread == Spread::Both && ((x, y) == (a, b) || (x, y) == (b, a)))
    }

    pub(super) fn link(&mut self, a: InstanceId, b: InstanceId, spread_both: bool) {
        let spread = if spread_both {
            Spread::Both
        } else {
            Spread::Inward
        };
        self.links.push((a, b, spread));
    }

    pub(super) fn pin(&mut self, id: InstanceId, keys: Keys) {
        let known = &mut self.instances[id].keys;
        if !known.contains(&keys) {
            known.push(keys);
        }
    }

    pub(super) fn key_ref(&mut self, expr: &Expr, id: InstanceId) -> Option<KeyRef> {
        key_ref(expr, self.instances[id].rule.key_type, &mut self.literals)
    }
}

/// The alias of a FROM item, else the last part of its name.
fn alias_or(alias: Option<&TableAlias>, name: &ObjectName) -> String {
    alias.map_or_else(|| last_name(name).unwrap_or_default(), |a| fold(&a.name))
}

/// System catalogs exist on every shard: `pg_catalog.*`, `information_schema.*`, `pg_*`.
fn is_catalog(name: &ObjectName, table: &str) -> bool {
    let schema = name.0.len().checked_sub(2).and_then(|i| name.0.get(i));
    let in_system_schema = schema.and_then(|part| part.as_ident()).is_some_and(|s| {
        let s = fold(s);
        s == "pg_catalog" || s == "information_schema"
    });
    in_system_schema || (table.starts_with("pg_") && name.0.len() == 1)
}

/// Which table of an INSERT: a name (a function as target is not Postgres).
pub(super) fn insert_table(insert: &Insert) -> Option<&ObjectName> {
    match &insert.table {
        TableObject::TableName(name) => Some(name),
        _ => None,
    }
}
