//! Named prepared statements under transaction pooling: each client `Parse` gets a server-side name
//! of its own, `pgscale_<client>_<n>_<random>`, prepared on whichever server connection the client
//! uses it on.
//! Names are never shared between clients or between two `Parse`s: a fresh `Parse` is parsed afresh
//! on the server (after a schema change it sees the new shape, as on a direct connection), and no
//! client can run, replace or be broken by another client's statement. What is shared, by text, is
//! only the proxy's own work: routing plan, session changes, and whether the text parsed (which lets
//! a `Parse` be answered before a server connection is free).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;

use crate::protocol::codec;
use crate::router::cache::PlanCache;
use crate::router::plan::Plan;
use crate::router::session_ops::{session_ops, split_statements, SessionOp};

/// Past this many distinct texts the registry starts afresh (clients keep theirs alive).
const MAX_REGISTRY_ENTRIES: usize = 100_000;

/// What the proxy knows about one statement text (with parameter types), shared by every client.
#[derive(Debug)]
pub struct StatementText {
    /// Names the text in a pool's set of texts known to parse.
    pub id: Arc<str>,
    pub ops: Vec<SessionOp>,
    pub plan: Arc<Plan>,
    pub sql: Arc<str>,
    /// It reads `pg_prepared_statements` (see [`reads_prepared_statements`]).
    pub lists_statements: bool,
}

/// One client's named statement, as the servers know it.
#[derive(Debug)]
pub struct PreparedStatement {
    /// `pgscale_<client>_<n>_<random>`: its name on every server connection it is prepared on.
    pub server_name: Arc<str>,
    /// A complete `Parse` frame under `server_name`, ready to send.
    pub parse_frame: Bytes,
    /// Session changes the statement makes when executed (`SET` prepared by a driver).
    pub ops: Vec<SessionOp>,
    /// Where it may run (classified once per text, reused at every `Bind`).
    pub plan: Arc<Plan>,
    /// The text, for shard keys written as literals (read at each `Bind`).
    pub sql: Arc<str>,
    /// The shared text's id (see [`StatementText::id`]).
    pub text_id: Arc<str>,
    /// Binding it first closes other clients' statements on the server (it lists them).
    pub lists_statements: bool,
}

/// The server-name prefix of `owner`'s statements.
pub fn owner_prefix(owner: u64) -> String {
    format!("pgscale_{owner}_")
}

/// All statement texts prepared through this proxy, keyed by text and parameter types.
#[derive(Default)]
pub struct StatementRegistry {
    by_body: DashMap<Bytes, Arc<StatementText>>,
    next_id: AtomicU64,
}

impl StatementRegistry {
    /// The shared facts of a `Parse` body whose name has been stripped (`rest` = query + types).
    pub fn text(&self, rest: &[u8], query: &str, plans: &PlanCache) -> Arc<StatementText> {
        if let Some(found) = self.by_body.get(rest) {
            return found.clone();
        }
        if self.by_body.len() >= MAX_REGISTRY_ENTRIES {
            self.by_body.clear();
        }
        let key = Bytes::copy_from_slice(rest);
        self.by_body
            .entry(key)
            .or_insert_with(|| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                Arc::new(StatementText {
                    id: Arc::from(format!("t{id}")),
                    ops: session_ops(query),
                    plan: plans.plan(query),
                    sql: Arc::from(query),
                    lists_statements: reads_prepared_statements(query),
                })
            })
            .clone()
    }

    /// A new statement of `owner` for `text` (`rest` as in [`StatementRegistry::text`]).
    pub fn statement(
        &self,
        text: &StatementText,
        rest: &[u8],
        owner: u64,
    ) -> Arc<PreparedStatement> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The random tail keeps other clients on the same server from guessing the name and running
        // or deallocating the statement with SQL `EXECUTE`/`DEALLOCATE`.
        let server_name: Arc<str> = Arc::from(format!(
            "{}{n}_{:016x}",
            owner_prefix(owner),
            rand::random::<u64>()
        ));
        let mut frame = BytesMut::with_capacity(rest.len() + server_name.len() + 6);
        let at = codec::begin(&mut frame, b'P');
        codec::put_cstr(&mut frame, server_name.as_bytes());
        frame.put_slice(rest);
        codec::finish(&mut frame, at);
        Arc::new(PreparedStatement {
            server_name,
            parse_frame: frame.freeze(),
            ops: text.ops.clone(),
            plan: text.plan.clone(),
            sql: text.sql.clone(),
            text_id: text.id.clone(),
            lists_statements: text.lists_statements,
        })
    }

    /// [`StatementRegistry::text`] then [`StatementRegistry::statement`].
    pub fn prepare(
        &self,
        rest: &[u8],
        query: &str,
        plans: &PlanCache,
        owner: u64,
    ) -> Arc<PreparedStatement> {
        let text = self.text(rest, query, plans);
        self.statement(&text, rest, owner)
    }

    pub fn len(&self) -> usize {
        self.by_body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_body.is_empty()
    }
}

/// Whether `sql` prepares a statement with SQL (`PREPARE name AS …`, not `PREPARE TRANSACTION`):
/// server state the proxy cannot move, so the client keeps its server connection.
pub fn sql_prepares(sql: &str) -> bool {
    // Runs on every query: the cheap look first.
    contains_ignore_case(sql.as_bytes(), b"prepare")
        && split_statements(sql).any(|statement| {
            let mut words = statement
                .split(|c: char| c.is_whitespace() || c == '(')
                .filter(|w| !w.is_empty());
            words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
                && !words
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("transaction"))
        })
}

/// Whether `sql` reads the `pg_prepared_statements` view (which lists a connection's statements).
pub fn reads_prepared_statements(sql: &str) -> bool {
    contains_ignore_case(sql.as_bytes(), b"pg_prepared_statements")
}

/// Whether `hay` contains `needle` (lowercase ASCII), in any case.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    let upper = first.to_ascii_uppercase();
    hay.iter().enumerate().any(|(at, b)| {
        (*b == first || *b == upper)
            && hay
                .get(at..at + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// A client's own statement names.
#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, Arc<PreparedStatement>>,
}

impl ClientStatements {
    /// The server names of the client's statements.
    pub fn server_names(&self) -> HashSet<&str> {
        self.by_name.values().map(|s| &*s.server_name).collect()
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: &[u8], statement: Arc<PreparedStatement>) {
        self.by_name.insert(Bytes::copy_from_slice(name), statement);
    }

    /// Forgets `name` if it still refers to `statement` (a failed `Parse` must not leave it behind).
    pub fn remove_if(&mut self, name: &[u8], statement: &Arc<PreparedStatement>) {
        if self
            .by_name
            .get(name)
            .is_some_and(|s| Arc::ptr_eq(s, statement))
        {
            self.by_name.remove(name);
        }
    }

    pub fn take(&mut self, name: &[u8]) -> Option<Arc<PreparedStatement>> {
        self.by_name.remove(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.by_name.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// Builds a frame equal to `frame` but naming `server_name` where the client named its statement.
/// `name_at`..`name_end` is the client's name (without NUL) inside `frame`.
pub fn rename(frame: &[u8], name_at: usize, name_end: usize, server_name: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(frame.len() + server_name.len());
    let at = codec::begin(&mut out, frame[0]);
    out.put_slice(&frame[codec::HEADER_LEN..name_at]);
    out.put_slice(server_name.as_bytes());
    out.put_slice(&frame[name_end..]);
    codec::finish(&mut out, at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parse_gets_its_own_server_name_and_shares_the_text() {
        let registry = StatementRegistry::default();
        let plans = PlanCache::new(10);
        let a = registry.prepare(b"select $1\0\0\0", "select $1", &plans, 7);
        let b = registry.prepare(b"select $1\0\0\0", "select $1", &plans, 7);
        let c = registry.prepare(b"select $1\0\0\0", "select $1", &plans, 8);
        assert_ne!(a.server_name, b.server_name);
        assert!(a.server_name.starts_with(&owner_prefix(7)));
        assert!(c.server_name.starts_with(&owner_prefix(8)));
        assert!(!c.server_name.starts_with(&owner_prefix(7)));
        assert_eq!(a.text_id, c.text_id);
        assert!(Arc::ptr_eq(&a.plan, &c.plan));
        assert_eq!(&a.parse_frame[..1], b"P");
        let len = i32::from_be_bytes([
            a.parse_frame[1],
            a.parse_frame[2],
            a.parse_frame[3],
            a.parse_frame[4],
        ]);
        assert_eq!(len as usize + 1, a.parse_frame.len());
    }

    #[test]
    fn finds_sql_prepare_and_the_view() {
        assert!(sql_prepares("PREPARE q AS select 1"));
        assert!(sql_prepares("select 1; prepare q(int) as select $1"));
        assert!(sql_prepares("prepare q(int) as select $1"));
        assert!(!sql_prepares("PREPARE TRANSACTION 'x'"));
        assert!(!sql_prepares("select 'prepare q as x'"));
        assert!(reads_prepared_statements(
            "select * from PG_Prepared_Statements"
        ));
        assert!(!reads_prepared_statements("select 1"));
    }

    #[test]
    fn rename_replaces_the_name_only() {
        // Bind: portal "" then statement "s1", then the rest.
        let mut frame = BytesMut::new();
        let at = codec::begin(&mut frame, b'B');
        frame.put_slice(b"\0s1\0rest");
        codec::finish(&mut frame, at);
        let renamed = rename(&frame, 6, 8, "pgscale_7");
        assert_eq!(&renamed[5..], b"\0pgscale_7\0rest");
        let len = i32::from_be_bytes([renamed[1], renamed[2], renamed[3], renamed[4]]);
        assert_eq!(len as usize + 1, renamed.len());
    }

    #[test]
    fn failed_parse_only_removes_its_own_statement() {
        let registry = StatementRegistry::default();
        let plans = PlanCache::new(10);
        let mut mine = ClientStatements::default();
        let a = registry.prepare(b"a\0\0\0", "a", &plans, 1);
        let b = registry.prepare(b"b\0\0\0", "b", &plans, 1);
        mine.insert(b"s", b.clone());
        mine.remove_if(b"s", &a);
        assert!(mine.get(b"s").is_some());
        mine.remove_if(b"s", &b);
        assert!(mine.get(b"s").is_none());
    }
}
