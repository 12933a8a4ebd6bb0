//! Statement classification: sqlparser's AST in, the router's own [`Plan`] out. The only router file
//! (with its `fallback` helper) that sees sqlparser types; sharding plans come from
//! `sharding::extract`, handed each parsed statement.
//!
//! A `SELECT` can wrap a mutation, so queries are walked to any depth (sqlparser's `Visitor`) for
//! locking clauses, `SELECT INTO`, data-modifying statements nested in them, and function calls.
//! Nothing here looks at a literal value: plans are cached by fingerprint, which ignores them.

mod fallback;

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{
    CopySource, CopyTarget, DeclareType, Expr, ObjectName, ObjectNamePart, Query, Select, Set,
    SetExpr, Statement, TableFactor, TransactionAccessMode, TransactionIsolationLevel,
    TransactionMode, UtilityOption, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::plan::{Kind, Plan, StatementPlan, WriteReason};
use crate::sharding::{shard_plan, Rules, ShardPlan};

/// Parses `sql` with sqlparser's PostgreSqlDialect and classifies every statement. Empty text (or
/// only `;` and comments) gives a plan with no statements.
///
/// When the whole text does not parse, its statements are parsed one by one and those that still fail
/// are classified from their leading keywords (see `fallback`): a failure costs at most the failing
/// statement, and Postgres syntax sqlparser lacks (`FOR NO KEY UPDATE`, `TABLE t`, `DEFERRABLE`, DO,
/// VACUUM options …) still gets its proper kind. What is left is `Write(Unparsable)`.
///
/// With sharded tables in `rules`, each statement also gets its [`ShardPlan`]; with none (the
/// common case) that costs one branch.
pub fn classify(sql: &str, rules: &Rules) -> Plan {
    let statements = match parse(sql) {
        Some(parsed) => parsed
            .iter()
            .map(|s| with_shard(classify_statement(s), s, sql, rules, 0))
            .collect(),
        None => fallback::classify_pieces(sql, rules),
    };
    Plan { statements }
}

/// `plan` with the statement's sharding plan, when `rules` shard anything. `sql` is the text the
/// statement was parsed from, which holds its literals after `literals_before` others of the
/// query string. Reading reference tables only may go to any shard, but not if the statement
/// writes or locks: then it is for the default shard, like other writes of unsharded data.
fn with_shard(
    mut plan: StatementPlan,
    statement: &Statement,
    sql: &str,
    rules: &Rules,
    literals_before: u32,
) -> StatementPlan {
    if rules.is_empty() {
        return plan;
    }
    plan.shard = match shard_plan(statement, sql, rules).shift_literals(literals_before) {
        // Any shard answers a read of reference tables (or of no table) alike, unless it calls a
        // function that may read or write unsharded tables: those live on the default shard.
        ShardPlan::ReferenceRead
            if plan.kind != Kind::Read
                || plan
                    .functions
                    .iter()
                    .any(|f| !SHARD_NEUTRAL_FUNCTIONS.contains(&&**f)) =>
        {
            ShardPlan::Unsharded
        }
        shard => shard,
    };
    plan
}

/// Built-in functions that read no table: a statement calling only these answers alike on any
/// shard.
const SHARD_NEUTRAL_FUNCTIONS: &[&str] = &[
    "abs",
    "clock_timestamp",
    "coalesce",
    "concat",
    "current_database",
    "current_schema",
    "current_setting",
    "date_trunc",
    "greatest",
    "inet_server_addr",
    "inet_server_port",
    "least",
    "length",
    "lower",
    "now",
    "nullif",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "round",
    "statement_timestamp",
    "timeofday",
    "to_char",
    "transaction_timestamp",
    "trim",
    "upper",
    "version",
];

/// sqlparser's statements, or `None` if the text does not parse. A panic inside sqlparser is taken as
/// a parse failure: a client's text must never take the proxy down.
fn parse(sql: &str) -> Option<Vec<Statement>> {
    catch_unwind(AssertUnwindSafe(|| {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
    }))
    .ok()?
    .ok()
}

/// One parsed statement's plan.
fn classify_statement(statement: &Statement) -> StatementPlan {
    use WriteReason as W;
    let kind = match statement {
        Statement::Query(query) => return query_plan(query.as_ref(), None),
        Statement::Explain {
            analyze,
            options,
            statement: inner,
            ..
        } => return explain(*analyze, options.as_deref(), inner),
        Statement::Copy {
            source, to, target, ..
        } => match (to, source, target) {
            (false, ..) => Kind::Write(W::CopyFrom),
            (true, CopySource::Table { .. }, CopyTarget::Stdout) => Kind::Read,
            (true, CopySource::Query(query), CopyTarget::Stdout) => {
                return query_plan(query.as_ref(), None)
            }
            // COPY … TO 'file' / PROGRAM: a side effect on one server's host; keep it on the primary.
            (true, ..) => Kind::Write(W::Statement),
        },
        Statement::Declare { stmts } => {
            let mut cursors = stmts.iter().map(|d| match (&d.declare_type, &d.for_query) {
                (Some(DeclareType::Cursor), Some(query)) if d.hold != Some(true) => Some(query),
                _ => None,
            });
            // One plain cursor over a query: as its query. WITH HOLD cursors outlive the transaction
            // on the server that made them, so they are made on the primary (FETCH is neutral).
            return match (cursors.next(), cursors.next()) {
                (Some(Some(query)), None) => query_plan(query.as_ref(), None),
                _ => with_functions(Kind::Write(W::Statement), statement),
            };
        }
        Statement::Fetch { into: None, .. } | Statement::Close { .. } => Kind::Cursor,
        Statement::ShowVariable { .. } => Kind::Read,
        Statement::StartTransaction {
            modes,
            statements,
            exception,
            ..
        } if statements.is_empty() && exception.is_none() => Kind::Begin {
            read_only: access_mode(modes),
        },
        Statement::Set(Set::SetTransaction {
            modes,
            session: false,
            ..
        }) => Kind::SetTransaction {
            read_only: access_mode(modes),
        },
        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => Kind::Session,
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Kind::TxEnd,
        Statement::LISTEN { .. } | Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => {
            Kind::Write(W::Notify)
        }
        Statement::CreateFunction(_)
        | Statement::AlterFunction(_)
        | Statement::DropFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::DropProcedure { .. }
        | Statement::CreateExtension(_)
        | Statement::DropExtension(_) => {
            // Bodies are not called here: no functions.
            return StatementPlan::of(Kind::Write(W::FunctionDdl));
        }
        // INSERT/UPDATE/DELETE/MERGE, other DDL, CALL, LOCK, VACUUM, PREPARE/EXECUTE (the prepared
        // statement lives where PREPARE ran) and whatever is not known to be a read.
        _ => Kind::Write(W::Statement),
    };
    with_functions(kind, statement)
}

/// `kind`, with the functions `statement` calls.
fn with_functions(kind: Kind, statement: &Statement) -> StatementPlan {
    let mut scan = Scan {
        own_statements: 1,
        ..Scan::default()
    };
    let _ = statement.visit(&mut scan);
    if let Statement::Call(function) = statement {
        scan.add_function(&function.name);
    }
    scan.plan(kind)
}

/// A query's plan. `override_write` replaces the write reason, if any (EXPLAIN ANALYZE keeps reads as
/// reads but turns writes into `ExplainAnalyze`).
fn query_plan(query: &Query, override_write: Option<WriteReason>) -> StatementPlan {
    let mut scan = Scan::default();
    let _ = query.visit(&mut scan);
    // `WITH … INSERT/UPDATE/DELETE/MERGE` comes as a query whose body is the statement.
    let is_statement = matches!(
        *query.body,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    );
    let reason = match is_statement {
        true => Some(WriteReason::Statement),
        false => scan.write_reason(),
    };
    let kind = match reason {
        Some(reason) => Kind::Write(override_write.unwrap_or(reason)),
        None => Kind::Read,
    };
    scan.plan(kind)
}

/// `EXPLAIN`: planning only, unless ANALYZE executes the statement. The `ANALYZE` option counts
/// whatever its value (`(ANALYZE false)`), since values are not part of the fingerprint.
fn explain(analyze: bool, options: Option<&[UtilityOption]>, inner: &Statement) -> StatementPlan {
    let analyze = analyze
        || options.is_some_and(|o| {
            o.iter()
                .any(|o| o.name.value.eq_ignore_ascii_case("analyze"))
        });
    if !analyze {
        // EXPLAIN EXECUTE needs the prepared statement, which lives on the primary.
        return match inner {
            Statement::Execute { .. } => StatementPlan::of(Kind::Write(WriteReason::Statement)),
            _ => StatementPlan::of(Kind::Read),
        };
    }
    if let Statement::Query(query) = inner {
        return query_plan(query.as_ref(), Some(WriteReason::ExplainAnalyze));
    }
    let plan = classify_statement(inner);
    match plan.kind {
        Kind::Read => plan,
        _ => StatementPlan {
            kind: Kind::Write(WriteReason::ExplainAnalyze),
            ..plan
        },
    }
}

/// READ ONLY / READ WRITE among transaction modes (the last one said wins, as in Postgres). A
/// SERIALIZABLE transaction counts as read-write whatever it says: hot standbys refuse that level.
fn access_mode(modes: &[TransactionMode]) -> Option<bool> {
    let serializable = modes.iter().any(|mode| {
        matches!(
            mode,
            TransactionMode::IsolationLevel(TransactionIsolationLevel::Serializable)
        )
    });
    if serializable {
        return Some(false);
    }
    modes.iter().rev().find_map(|mode| match mode {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// What a walk over a statement or query found, at any depth.
#[derive(Default)]
struct Scan {
    functions: Vec<Box<str>>,
    /// Statements entered: the scanned statement itself, then any nested one.
    statements: usize,
    /// 1 when the walk starts at a statement (which is not nested in itself), 0 at a query.
    own_statements: usize,
    nested_write: bool,
    locking: bool,
    select_into: bool,
}

impl Scan {
    /// The strongest write a query showed: a nested mutation, then `SELECT INTO`, then a lock.
    fn write_reason(&self) -> Option<WriteReason> {
        if self.nested_write {
            Some(WriteReason::ModifyingCte)
        } else if self.select_into {
            Some(WriteReason::SelectInto)
        } else if self.locking {
            Some(WriteReason::Locking)
        } else {
            None
        }
    }

    fn plan(self, kind: Kind) -> StatementPlan {
        StatementPlan {
            kind,
            functions: self.functions.into_boxed_slice(),
            shard: ShardPlan::Unsharded,
        }
    }

    /// Records a called function by its last name part, folded like an identifier.
    fn add_function(&mut self, name: &ObjectName) {
        let Some(ObjectNamePart::Identifier(ident)) = name.0.last() else {
            return;
        };
        let folded: Box<str> = match ident.quote_style {
            Some(_) => ident.value.as_str().into(),
            None => ident.value.to_ascii_lowercase().into(),
        };
        if !self.functions.contains(&folded) {
            self.functions.push(folded);
        }
    }
}

impl Visitor for Scan {
    type Break = ();

    fn pre_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.statements += 1;
        self.nested_write |= self.statements > self.own_statements;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.locking |= !query.locks.is_empty();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.select_into |= select.into.is_some();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.add_function(&function.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // `FROM f(…)`: sqlparser reads a set-returning function as a table with arguments.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.add_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod tests;
