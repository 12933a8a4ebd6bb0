//! Key extraction: what a parsed statement means for sharding (a [`ShardPlan`]), from the rules and
//! the statement's text. It runs once per statement shape, on a plan-cache miss, so it never reads
//! a literal's value: keys are referred to by position ([`KeyRef`]) and resolved per execution.
//!
//! Queries, INSERT, UPDATE and DELETE go through the scope walk (`walk`); this file sorts the other
//! statements: schema changes (on every shard when they name a sharded or reference table, on the
//! default shard when they name only unsharded ones), COPY, EXPLAIN, PREPARE, cursors, locks.
//! Whatever cannot be routed correctly is refused with a reason (`refuse`); nothing is guessed.
//!
//! [`KeyRef`]: crate::sharding::plan::KeyRef

mod keys;
mod refuse;
mod walk;

use sqlparser::ast::{
    CommentObject, CopySource, CopyTarget, CreateTable, CreateView, GrantObjects, Ident,
    ObjectName, ObjectType, Query, Statement, Truncate, Visit,
};

use super::plan::{Keys, ShardPlan};
use super::rules::Rules;
use walk::Walker;

/// The sharding plan of one parsed statement. `sql` is the text it was parsed from (the whole
/// query string: literal positions count from its start). With no sharded table in `rules`, every
/// statement is [`ShardPlan::Unsharded`].
pub fn shard_plan(statement: &Statement, sql: &str, rules: &Rules) -> ShardPlan {
    if rules.is_empty() {
        return ShardPlan::Unsharded;
    }
    match statement {
        // No table at all (`SELECT 1`, `SELECT now()`): any shard answers alike, so it stays on
        // a transaction's shard (writing functions are sent to the default shard by `classify`).
        Statement::Query(_) if walk::count_factors(statement) == 0 => ShardPlan::ReferenceRead,
        Statement::Query(query) => walk(statement, sql, rules, |w| {
            w.query(query, None, true);
        }),
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
            walk(statement, sql, rules, |w| w.write(statement, None, true))
        }
        Statement::Explain {
            statement: inner, ..
        } => explain(shard_plan(inner, sql, rules)),
        Statement::Copy {
            source, to, target, ..
        } => copy(source, *to, target, sql, rules),
        Statement::Truncate(truncate) => truncate_plan(truncate, rules),
        Statement::CreateTable(create) => create_table(create, sql, rules),
        Statement::CreateView(view) => create_view(view, rules),
        // DDL naming tables runs on every shard, unsharded tables' included: every shard keeps the
        // same schema (an unsharded table's rows stay on the default shard), which moving data
        // between shards relies on.
        Statement::CreateIndex(_) => ShardPlan::Ddl,
        Statement::AlterTable(_) => ShardPlan::Ddl,
        Statement::CreateTrigger(_) => ShardPlan::Ddl,
        Statement::DropTrigger(_) => ShardPlan::Ddl,
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Table => ShardPlan::Ddl,
            // Views live on the default shard (see `create_view`).
            ObjectType::View | ObjectType::MaterializedView => ShardPlan::Unsharded,
            _ => ShardPlan::Ddl,
        },
        Statement::Comment {
            object_type,
            object_name,
            ..
        } => comment(*object_type, object_name, rules),
        Statement::Vacuum(_) => ShardPlan::Ddl,
        Statement::Analyze(_) => ShardPlan::Ddl,
        Statement::Grant(grant) => grant_plan(grant.objects.as_ref()),
        Statement::Revoke(revoke) => grant_plan(revoke.objects.as_ref()),
        Statement::Prepare {
            statement: inner, ..
        } => prepare(shard_plan(inner, sql, rules)),
        Statement::Declare { stmts } => {
            let mut plan = ShardPlan::Unsharded;
            for query in stmts.iter().filter_map(|d| d.for_query.as_deref()) {
                match read(query, sql, rules) {
                    ShardPlan::Unsharded | ShardPlan::ReferenceRead => {}
                    ShardPlan::Refused(why) => plan = ShardPlan::Refused(why),
                    _ => plan = ShardPlan::Refused(refuse::CURSOR.into()),
                }
            }
            plan
        }
        Statement::Merge(_) => match walk::first_listed(statement, rules) {
            Some(table) => ShardPlan::Refused(refuse::merge(&table)),
            None => ShardPlan::Unsharded,
        },
        Statement::Lock(lock) => {
            let listed = lock
                .tables
                .iter()
                .filter_map(|t| last_name(&t.name))
                .find(|t| is_listed(t, rules));
            match listed {
                Some(table) => ShardPlan::Refused(refuse::lock(&table)),
                None => ShardPlan::Unsharded,
            }
        }
        Statement::AlterView { .. } => ShardPlan::Unsharded,
        Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::AlterType(_)
        | Statement::CreateDomain(_)
        | Statement::DropDomain(_)
        | Statement::CreateSchema { .. }
        | Statement::AlterSchema(_)
        | Statement::CreateExtension(_)
        | Statement::DropExtension(_)
        | Statement::CreateFunction(_)
        | Statement::AlterFunction(_)
        | Statement::DropFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::DropProcedure { .. }
        | Statement::AlterIndex { .. }
        | Statement::CreateCollation(_)
        | Statement::AlterCollation(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::CreateOperator(_)
        | Statement::AlterOperator(_)
        | Statement::DropOperator(_)
        | Statement::CreateTextSearch(_)
        | Statement::AlterTextSearch(_) => ShardPlan::Ddl,
        // Session and transaction control, cursors, notifications, EXECUTE (only unsharded
        // statements can be PREPAREd), CALL (a procedure's body is not seen: default shard).
        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::ShowVariable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Execute { .. }
        | Statement::Call(_)
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::NOTIFY { .. } => ShardPlan::Unsharded,
        _ => match walk::first_listed(statement, rules) {
            Some(table) => ShardPlan::Refused(refuse::cannot_follow(
                &table,
                "a statement kind it does not know",
            )),
            None => ShardPlan::Unsharded,
        },
    }
}

/// The plan for a statement pgscale could not parse: statements that only steer the session or
/// the transaction are fine anywhere; anything else may touch sharded rows.
pub fn unparsable_plan(session_only: bool) -> ShardPlan {
    match session_only {
        true => ShardPlan::Unsharded,
        false => ShardPlan::Refused(refuse::UNPARSABLE.into()),
    }
}

/// Runs the scope walk over `node` (a statement, or a query in one).
fn walk<V: Visit>(node: &V, sql: &str, rules: &Rules, run: impl FnOnce(&mut Walker)) -> ShardPlan {
    if walk::first_listed(node, rules).is_none() {
        return ShardPlan::Unsharded;
    }
    let mut walker = Walker::new(rules, sql);
    run(&mut walker);
    walker.finish(walk::count_factors(node))
}

/// A query read on its own (COPY's, a cursor's, a view's).
fn read(query: &Query, sql: &str, rules: &Rules) -> ShardPlan {
    walk(query, sql, rules, |w| {
        w.query(query, None, true);
    })
}

/// EXPLAIN shows one server's plan: fine for one shard, refused for several.
fn explain(inner: ShardPlan) -> ShardPlan {
    match inner {
        ShardPlan::Keyed {
            keys: Keys::One(_), ..
        }
        | ShardPlan::Unsharded
        | ShardPlan::ReferenceRead
        | ShardPlan::Ddl
        | ShardPlan::Refused(_) => inner,
        _ => ShardPlan::Refused(refuse::EXPLAIN_MANY.into()),
    }
}

/// A prepared statement lives where PREPARE ran, so only what runs on the default shard can be.
fn prepare(inner: ShardPlan) -> ShardPlan {
    match inner {
        ShardPlan::Unsharded | ShardPlan::ReferenceRead => ShardPlan::Unsharded,
        ShardPlan::Refused(why) => ShardPlan::Refused(why),
        _ => ShardPlan::Refused(refuse::PREPARE.into()),
    }
}

/// COPY FROM STDIN into a sharded table splits rows by key (its column list must name the key);
/// COPY TO of a sharded table is refused unless its query is pinned to one key; server-side files
/// and programs are refused for sharded tables.
fn copy(source: &CopySource, to: bool, target: &CopyTarget, sql: &str, rules: &Rules) -> ShardPlan {
    let client_side = matches!(target, CopyTarget::Stdin | CopyTarget::Stdout);
    match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            let Some(table) = last_name(table_name) else {
                return ShardPlan::Unsharded;
            };
            if let Some(rule) = rules.sharded(&table) {
                if !client_side {
                    return ShardPlan::Refused(refuse::copy_server_side(rule));
                }
                if to {
                    return ShardPlan::Refused(refuse::copy_out(rule));
                }
                if columns.is_empty() {
                    return ShardPlan::Refused(refuse::copy_needs_columns(rule));
                }
                return match columns.iter().position(|c| fold(c) == rule.column) {
                    Some(column_index) => ShardPlan::CopyIn {
                        key_type: rule.key_type,
                        column_index,
                        columns: columns.len(),
                    },
                    None => ShardPlan::Refused(refuse::copy_missing_key(rule)),
                };
            }
            match (rules.is_reference(&table), to) {
                (true, false) => ShardPlan::Refused(refuse::write_reference(&table)),
                (true, true) if client_side => ShardPlan::ReferenceRead,
                _ => ShardPlan::Unsharded,
            }
        }
        CopySource::Query(query) => match read(query, sql, rules) {
            plan @ (ShardPlan::Unsharded | ShardPlan::Refused(_)) => plan,
            ShardPlan::ReferenceRead if client_side => ShardPlan::ReferenceRead,
            ShardPlan::ReferenceRead => ShardPlan::Unsharded,
            plan => {
                let table = walk::first_sharded(query, rules);
                match (table, &plan) {
                    (Some(rule), _) if !client_side => {
                        ShardPlan::Refused(refuse::copy_server_side(rule))
                    }
                    (
                        _,
                        ShardPlan::Keyed {
                            keys: Keys::One(_), ..
                        },
                    ) => plan,
                    (Some(rule), _) => ShardPlan::Refused(refuse::copy_out(rule)),
                    (None, _) => ShardPlan::Refused(refuse::EXPLAIN_MANY.into()),
                }
            }
        },
    }
}

/// TRUNCATE: of sharded tables on every shard, of reference tables refused (a write), of
/// unsharded tables on the default shard.
fn truncate_plan(truncate: &Truncate, rules: &Rules) -> ShardPlan {
    let names = truncate.table_names.iter().map(|t| &t.name);
    if let Some(table) = names
        .clone()
        .filter_map(last_name)
        .find(|t| rules.is_reference(t))
    {
        return ShardPlan::Refused(refuse::write_reference(&table));
    }
    // Emptying only unsharded tables is a write on the default shard, where their rows are (it
    // also works inside a transaction, as `pgbench -i` runs it).
    match names.filter_map(last_name).any(|t| is_listed(&t, rules)) {
        true => ShardPlan::Ddl,
        false => ShardPlan::Unsharded,
    }
}

/// CREATE TABLE: like other table DDL, but a table made from a query is refused when the query
/// reads sharded tables or the new table is listed (it would hold one shard's rows).
fn create_table(create: &CreateTable, sql: &str, rules: &Rules) -> ShardPlan {
    let Some(query) = &create.query else {
        return ShardPlan::Ddl;
    };
    if let Some(table) = last_name(&create.name).filter(|t| is_listed(t, rules)) {
        return ShardPlan::Refused(refuse::create_as(&table));
    }
    match read(query, sql, rules) {
        ShardPlan::Unsharded | ShardPlan::ReferenceRead => ShardPlan::Unsharded,
        ShardPlan::Refused(why) => ShardPlan::Refused(why),
        _ => {
            let table = walk::first_listed(query.as_ref(), rules).unwrap_or_default();
            ShardPlan::Refused(refuse::create_as(&table))
        }
    }
}

/// Views are unlisted relations, so their reads go to the default shard: a view over a sharded
/// table would show that shard's rows only, and is refused. A listed name is DDL on every shard.
fn create_view(view: &CreateView, rules: &Rules) -> ShardPlan {
    if let Some(rule) = walk::first_sharded(view.query.as_ref(), rules) {
        return ShardPlan::Refused(refuse::view_over_sharded(rule));
    }
    match last_name(&view.name).is_some_and(|v| is_listed(&v, rules)) {
        true => ShardPlan::Ddl,
        false => ShardPlan::Unsharded,
    }
}

fn comment(object: CommentObject, name: &ObjectName, rules: &Rules) -> ShardPlan {
    match object {
        CommentObject::Table => ShardPlan::Ddl,
        CommentObject::Column => {
            // `table.column`: the table is the part before the last.
            let table = name
                .0
                .len()
                .checked_sub(2)
                .and_then(|i| name.0.get(i))
                .and_then(|part| part.as_ident())
                .map(fold);
            match table {
                Some(table) if is_listed(&table, rules) => ShardPlan::Ddl,
                _ => ShardPlan::Unsharded,
            }
        }
        CommentObject::View | CommentObject::MaterializedView => ShardPlan::Unsharded,
        _ => ShardPlan::Ddl,
    }
}

fn grant_plan(objects: Option<&GrantObjects>) -> ShardPlan {
    match objects {
        Some(GrantObjects::Views(_)) => ShardPlan::Unsharded,
        _ => ShardPlan::Ddl,
    }
}

fn is_listed(table: &str, rules: &Rules) -> bool {
    rules.sharded(table).is_some() || rules.is_reference(table)
}

/// An identifier as Postgres matches it: unquoted ones fold to lowercase (as the rules' names
/// are), quoted ones keep their case.
pub(crate) fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The unqualified, folded name of a table (`public.Users` → `users`).
pub(crate) fn last_name(name: &ObjectName) -> Option<String> {
    name.0.last()?.as_ident().map(fold)
}

#[cfg(test)]
mod tests;
