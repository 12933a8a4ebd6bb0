//! The router's own plan types (what a statement does) and the fold that turns the plans of one unit
//! into a routing [`Decision`].
//!
//! Plans are cached by fingerprint, so they hold only what the statement text says regardless of its
//! literal values. Whatever depends on live state (which functions write, the client's
//! `default_transaction_read_only`) is decided here, in the fold, never in the cached plan.

use super::functions::FunctionCatalog;
use crate::sharding::ShardPlan;

/// Routing hint from a leading comment: `/* pgscale: primary */`, `/* pgscale: replica */` (also
/// `-- pgscale: replica`), case-insensitive, whitespace-tolerant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// Why a statement must run on the primary. Doubles as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReason {
    /// INSERT/UPDATE/DELETE/MERGE, DDL, VACUUM, CALL, DO, LOCK, PREPARE/EXECUTE … anything not known
    /// to be a read.
    Statement,
    /// `SELECT … FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE`, anywhere (also in subqueries).
    Locking,
    /// `SELECT … INTO new_table`.
    SelectInto,
    /// A data-modifying statement nested in a query: `WITH x AS (INSERT/UPDATE/DELETE …) …`, at any depth.
    ModifyingCte,
    /// `EXPLAIN ANALYZE` of a write: it executes it.
    ExplainAnalyze,
    /// `NOTIFY` / `LISTEN` / `UNLISTEN`: standbys refuse NOTIFY; LISTEN state lives on one server.
    Notify,
    /// `COPY … FROM`.
    CopyFrom,
    /// CREATE/ALTER/DROP FUNCTION or PROCEDURE, CREATE/ALTER/DROP EXTENSION: the session refreshes its
    /// function catalog after these.
    FunctionDdl,
    /// Calls a function the catalog says writes (decided in the fold, not in the cached plan).
    Function,
    /// sqlparser could not parse it (counted by the plan cache).
    Unparsable,
}

/// What one statement does, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SELECT, VALUES, TABLE, SHOW, EXPLAIN without ANALYZE, EXPLAIN ANALYZE of a read, read-only CTEs,
    /// `COPY … TO STDOUT` of a table or a read query, `DECLARE` of a read cursor.
    Read,
    /// Must run on the primary.
    Write(WriteReason),
    /// `BEGIN` / `START TRANSACTION [READ ONLY|READ WRITE]` (`None`: not said).
    Begin { read_only: Option<bool> },
    /// `SET TRANSACTION READ ONLY/WRITE` (inside a transaction; `None`: other modes only).
    SetTransaction { read_only: Option<bool> },
    /// COMMIT, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO, PREPARE TRANSACTION: neutral.
    TxEnd,
    /// SET/RESET/DISCARD/DEALLOCATE, SET SESSION CHARACTERISTICS: session state the proxy replays on
    /// any server; neutral.
    Session,
    /// `FETCH`, `MOVE`, `CLOSE`: neutral. Inside a transaction they follow the transaction's server;
    /// outside one only a `WITH HOLD` cursor can exist, and those are declared on the primary (see
    /// [`Kind::Write`] for `DECLARE … WITH HOLD`), where a neutral unit goes.
    Cursor,
}

/// One statement's classification, cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPlan {
    pub kind: Kind,
    /// Every function called anywhere in the statement, as lowercase unqualified names (quoted
    /// identifiers keep their case), deduplicated, in order of appearance.
    pub functions: Box<[Box<str>]>,
    /// Which shards it touches, as far as its text says ([`ShardPlan::Unsharded`] when no table
    /// is sharded). Key values are positions, resolved per execution by `sharding::resolve`.
    pub shard: ShardPlan,
}

impl StatementPlan {
    /// A plan that calls no function.
    pub fn of(kind: Kind) -> StatementPlan {
        StatementPlan {
            kind,
            functions: Box::default(),
            shard: ShardPlan::Unsharded,
        }
    }
}

/// A whole query string's classification: one entry per statement (a simple-protocol string can hold
/// several; an empty or comment-only string holds none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub statements: Box<[StatementPlan]>,
}

impl Plan {
    /// Whether some part of the text could not be parsed (what the plan cache counts).
    pub fn is_unparsable(&self) -> bool {
        self.statements
            .iter()
            .any(|s| s.kind == Kind::Write(WriteReason::Unparsable))
    }
}

/// Where a unit (one simple Query string, or an extended-protocol batch up to Sync) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// All reads, or a transaction declared read-only.
    Replica,
    Primary(PrimaryReason),
    /// Only session commands, COMMIT and the like: any server will do (the session sends it to the
    /// primary but does not count it as a write).
    Neutral,
}

/// Why a unit goes to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryReason {
    Write(WriteReason),
    /// A `BEGIN` not declared read-only (and `default_transaction_read_only` off).
    ReadWriteTransaction,
    /// `/* pgscale: primary */`.
    Hint,
}

/// Folds the plans of one unit, in order. Small and `Copy`: the session keeps one while it holds a
/// unit's messages.
///
/// Transactions are tracked per `BEGIN`: a `SET TRANSACTION` applies to the latest `BEGIN` of the
/// unit (one before any `BEGIN` belongs to a transaction opened by an earlier unit, whose server is
/// already chosen, so it is ignored here). If a unit opens several transactions, one read-write
/// transaction sends the whole unit to the primary.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitRouter {
    added: bool,
    hint: Option<Hint>,
    first_write: Option<WriteReason>,
    saw_read: bool,
    catalog_refresh: bool,
    /// The access mode of the latest `BEGIN` in the unit, as amended by `SET TRANSACTION`.
    open_tx: Option<Option<bool>>,
    /// Earlier transactions of the unit: some said READ WRITE / some said nothing.
    earlier_rw: bool,
    earlier_unsaid: bool,
}

impl UnitRouter {
    /// Adds one query string's plan. A read that calls a function the catalog says writes counts as
    /// `Write(Function)`.
    pub fn add(&mut self, plan: &Plan, catalog: &FunctionCatalog) {
        self.added = true;
        for statement in plan.statements.iter() {
            self.add_kind(effective_kind(statement, catalog));
        }
    }

    /// A routing hint; the first hint of the unit wins.
    pub fn add_hint(&mut self, hint: Hint) {
        self.added = true;
        self.hint.get_or_insert(hint);
    }

    /// A FunctionCall ('F') protocol message: it can call anything, so it is a write.
    pub fn add_function_call(&mut self) {
        self.added = true;
        self.add_kind(Kind::Write(WriteReason::Function));
    }

    /// Where the unit goes. `default_read_only` is the client's `default_transaction_read_only`, which
    /// decides a `BEGIN` that says neither READ ONLY nor READ WRITE.
    pub fn decide(&self, default_read_only: bool) -> Decision {
        match self.hint {
            Some(Hint::Primary) => return Decision::Primary(PrimaryReason::Hint),
            Some(Hint::Replica) => return Decision::Replica,
            None => {}
        }
        if let Some(reason) = self.first_write {
            return Decision::Primary(PrimaryReason::Write(reason));
        }
        if let Some(open) = self.open_tx {
            let unsaid = self.earlier_unsaid || open.is_none();
            let read_write = self.earlier_rw || open == Some(false);
            if read_write || (unsaid && !default_read_only) {
                return Decision::Primary(PrimaryReason::ReadWriteTransaction);
            }
            return Decision::Replica;
        }
        if self.saw_read {
            Decision::Replica
        } else {
            Decision::Neutral
        }
    }

    /// Nothing added yet.
    pub fn is_empty(&self) -> bool {
        !self.added
    }

    /// The unit created, changed or dropped functions or extensions: the session should relearn
    /// which functions write once the unit has run.
    pub fn needs_catalog_refresh(&self) -> bool {
        self.catalog_refresh
    }

    fn add_kind(&mut self, kind: Kind) {
        match kind {
            Kind::Read => self.saw_read = true,
            Kind::Write(reason) => {
                self.catalog_refresh |= reason == WriteReason::FunctionDdl;
                self.first_write.get_or_insert(reason);
            }
            Kind::Begin { read_only } => {
                if let Some(previous) = self.open_tx.replace(read_only) {
                    self.earlier_rw |= previous == Some(false);
                    self.earlier_unsaid |= previous.is_none();
                }
            }
            Kind::SetTransaction { read_only } => {
                if let (Some(open), Some(said)) = (self.open_tx.as_mut(), read_only) {
                    *open = Some(said);
                }
            }
            Kind::TxEnd | Kind::Session | Kind::Cursor => {}
        }
    }
}

/// The statement's kind once the catalog has had its say.
fn effective_kind(statement: &StatementPlan, catalog: &FunctionCatalog) -> Kind {
    if statement.kind == Kind::Read && statement.functions.iter().any(|f| catalog.is_write(f)) {
        Kind::Write(WriteReason::Function)
    } else {
        statement.kind
    }
}

#[cfg(test)]
mod tests;
