//! INSERT, UPDATE and DELETE, at the top of a statement or in a WITH query: the write's target as an
//! instance of its own scope, refusals for what cannot be routed (moving a key, writing a
//! reference table, an INSERT without usable keys), and their subqueries.

use sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, Insert, ObjectName, OnConflictAction, OnInsert,
    SetExpr, Statement, TableFactor, TableWithJoins, Update, UpdateTableFromKind,
};

use super::{insert_table, InstanceId, ScopeId, Table, Walker};
use crate::sharding::extract::{last_name, refuse};
use crate::sharding::plan::{KeyRef, Keys};
use crate::sharding::rules::ShardedTable;

impl Walker<'_, '_> {
    pub(in crate::sharding::extract) fn write(
        &mut self,
        statement: &Statement,
        parent: Option<ScopeId>,
        top: bool,
    ) {
        match statement {
            Statement::Insert(insert) => self.insert(insert, parent, top),
            Statement::Update(update) => self.update(update, parent, top),
            Statement::Delete(delete) => self.delete(delete, parent, top),
            _ => self.refuse_if_listed("a statement nested in a query"),
        }
    }

    pub(in crate::sharding::extract) fn insert(
        &mut self,
        insert: &Insert,
        parent: Option<ScopeId>,
        top: bool,
    ) {
        self.writes = true;
        let scope = self.new_scope(parent, top);
        let Some(name) = insert_table(insert) else {
            self.refuse_if_listed("INSERT into a table function");
            return;
        };
        match self.table(name, None, scope) {
            Table::Reference(table) => self.write_reference(table, top),
            Table::Other => {
                if let Some(source) = &insert.source {
                    self.query(source, Some(scope), false);
                }
            }
            Table::Sharded(id) => self.insert_sharded(insert, id, top),
        }
        self.subqueries(&insert.on, Some(scope));
        self.subqueries(&insert.returning, Some(scope));
    }

    /// INSERT into a sharded table: each row's key, from VALUES.
    fn insert_sharded(&mut self, insert: &Insert, id: InstanceId, top: bool) {
        let rule = self.instances[id].rule;
        let scope = self.instances[id].scope;
        if let Some(OnInsert::OnConflict(conflict)) = &insert.on {
            if let OnConflictAction::DoUpdate(update) = &conflict.action {
                let assigned = update.assignments.iter().flat_map(|a| targets(&a.target));
                if assigned
                    .filter_map(last_name)
                    .any(|column| column == rule.column)
                {
                    self.refuse(refuse::update_moves_key(rule));
                }
            }
        }
        let rows = match self.insert_keys(insert, rule) {
            Ok(rows) => rows,
            Err(refusal) => return self.refuse(refusal),
        };
        if let Some(source) = &insert.source {
            // VALUES may hold subqueries; their scopes sit under the INSERT's.
            self.subqueries(source.body.as_ref(), Some(scope));
        }
        match (rows.first(), rows.len()) {
            (Some(one), 1) => self.pin(id, Keys::One(*one)),
            _ if top => self.insert_rows = Some(rows),
            _ => self.refuse(refuse::insert_rows_with_more(rule)),
        }
    }

    /// The shard key of each VALUES row, or why there is none.
    fn insert_keys(
        &mut self,
        insert: &Insert,
        rule: &ShardedTable,
    ) -> Result<Vec<KeyRef>, Box<str>> {
        let Some(source) = &insert.source else {
            return Err(refuse::insert_default_key(rule)); // DEFAULT VALUES
        };
        let plain = source.with.is_none()
            && source.order_by.is_none()
            && source.limit_clause.is_none()
            && source.fetch.is_none();
        let SetExpr::Values(values) = source.body.as_ref() else {
            return Err(refuse::insert_select(rule));
        };
        if !plain {
            return Err(refuse::insert_select(rule));
        }
        if insert.columns.is_empty() {
            return Err(refuse::insert_needs_columns(rule));
        }
        let index = insert
            .columns
            .iter()
            .position(|c| last_name(c).is_some_and(|c| c == rule.column))
            .ok_or_else(|| refuse::insert_missing_key(rule))?;
        let mut keys = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            let value = row
                .content
                .get(index)
                .ok_or_else(|| refuse::insert_missing_key(rule))?;
            let key = key_ref_for(self, value, rule);
            keys.push(key.ok_or_else(|| match is_default(value) {
                true => refuse::insert_default_key(rule),
                false => refuse::insert_key_expression(rule),
            })?);
        }
        Ok(keys)
    }

    fn update(&mut self, update: &Update, parent: Option<ScopeId>, top: bool) {
        self.writes = true;
        let scope = self.new_scope(parent, top);
        let mut on = Vec::new();
        let target = self.write_target(&update.table, scope, top);
        if let Some(id) = target {
            let rule = self.instances[id].rule;
            let assigned = update.assignments.iter().flat_map(|a| targets(&a.target));
            if assigned
                .filter_map(last_name)
                .any(|column| column == rule.column)
            {
                self.refuse(refuse::update_moves_key(rule));
            }
        }
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &update.from
        {
            for item in from {
                self.table_with_joins(item, scope, &mut on, false);
            }
        }
        self.finish_write(scope, on, update.selection.as_ref());
        self.subqueries(&update.assignments, Some(scope));
        self.subqueries(&update.returning, Some(scope));
        if !update.order_by.is_empty() || update.limit.is_some() || update.or.is_some() {
            self.refuse_if_listed("UPDATE with ORDER BY or LIMIT");
        }
    }

    fn delete(&mut self, delete: &Delete, parent: Option<ScopeId>, top: bool) {
        self.writes = true;
        let scope = self.new_scope(parent, top);
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
        let mut on = Vec::new();
        match (delete.tables.is_empty(), from.as_slice()) {
            (true, [target]) => {
                self.write_target(target, scope, top);
            }
            _ => self.refuse_if_listed("DELETE of several tables"),
        }
        if let Some(using) = &delete.using {
            for item in using {
                self.table_with_joins(item, scope, &mut on, false);
            }
        }
        self.finish_write(scope, on, delete.selection.as_ref());
        self.subqueries(&delete.returning, Some(scope));
        if !delete.order_by.is_empty() || delete.limit.is_some() {
            self.refuse_if_listed("DELETE with ORDER BY or LIMIT");
        }
    }

    /// A write of reference table `table`: the statement itself (`top`) goes to every shard's copy;
    /// one nested in a query (a writing CTE) is refused.
    fn write_reference(&mut self, table: String, top: bool) {
        match top && self.reference_write.is_none() {
            true => self.reference_write = Some(table),
            false => self.refuse(refuse::write_reference(&table)),
        }
    }

    /// The table an UPDATE or DELETE writes: its sharded instance, if it is one (a reference
    /// table's write is noted for every shard).
    fn write_target(
        &mut self,
        target: &TableWithJoins,
        scope: ScopeId,
        top: bool,
    ) -> Option<InstanceId> {
        if !target.joins.is_empty() {
            self.refuse_if_listed("a write to a join");
        }
        self.count_factor();
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = &target.relation
        else {
            self.refuse_if_listed("a write to something other than a table");
            return None;
        };
        match self.table(name, alias.as_ref(), scope) {
            Table::Sharded(id) => Some(id),
            Table::Reference(table) => {
                self.write_reference(table, top);
                None
            }
            Table::Other => None,
        }
    }

    fn finish_write(&mut self, scope: ScopeId, on: Vec<(&Expr, bool)>, selection: Option<&Expr>) {
        for (condition, pins) in on {
            self.condition(condition, scope, pins);
        }
        if let Some(selection) = selection {
            self.condition(selection, scope, true);
        }
    }

    fn count_factor(&mut self) {
        self.factors += 1;
    }
}

fn key_ref_for(walker: &mut Walker, value: &Expr, rule: &ShardedTable) -> Option<KeyRef> {
    crate::sharding::extract::keys::key_ref(value, rule.key_type, &mut walker.literals)
}

/// `DEFAULT` in a VALUES row (sqlparser reads it as an identifier).
fn is_default(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(ident) if ident.quote_style.is_none()
        && ident.value.eq_ignore_ascii_case("default"))
}

/// The columns an assignment sets.
fn targets(target: &AssignmentTarget) -> Vec<&ObjectName> {
    match target {
        AssignmentTarget::ColumnName(name) => vec![name],
        AssignmentTarget::Tuple(names) => names.iter().collect(),
    }
}
