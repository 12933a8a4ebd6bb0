//! Named prepared statements under transaction pooling: a client's statement names map to server-side
//! names shared by every client that prepares the same text, so each server connection prepares a
//! statement once and no two clients' names clash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;

use crate::protocol::codec;
use crate::router::cache::PlanCache;
use crate::router::plan::Plan;
use crate::router::session_ops::{session_ops, SessionOp};

/// Past this many distinct statements the registry starts afresh (clients keep theirs alive).
const MAX_REGISTRY_ENTRIES: usize = 100_000;

/// One distinct statement (text + parameter types), as the servers know it.
#[derive(Debug)]
pub struct PreparedStatement {
    /// `pgscale_<n>`: the name on every server connection.
    pub server_name: Arc<str>,
    /// A complete `Parse` frame under `server_name`, ready to send.
    pub parse_frame: Bytes,
    /// Session changes the statement makes when executed (`SET` prepared by a driver).
    pub ops: Vec<SessionOp>,
    /// Where it may run (classified once, at its first `Parse`, reused at every `Bind`).
    pub plan: Arc<Plan>,
    /// The text, for shard keys written as literals (read at each `Bind`).
    pub sql: Arc<str>,
}

/// All statements prepared through this proxy, keyed by text and parameter types.
#[derive(Default)]
pub struct StatementRegistry {
    by_body: DashMap<Bytes, Arc<PreparedStatement>>,
    next_id: AtomicU64,
}

impl StatementRegistry {
    /// The shared statement for a `Parse` body whose name has been stripped (`rest` = query + types).
    pub fn intern(&self, rest: &[u8], query: &str, plans: &PlanCache) -> Arc<PreparedStatement> {
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
                let server_name: Arc<str> = Arc::from(format!("pgscale_{id}"));
                let mut frame = BytesMut::with_capacity(rest.len() + server_name.len() + 6);
                let at = codec::begin(&mut frame, b'P');
                codec::put_cstr(&mut frame, server_name.as_bytes());
                frame.put_slice(rest);
                codec::finish(&mut frame, at);
                Arc::new(PreparedStatement {
                    server_name,
                    parse_frame: frame.freeze(),
                    ops: session_ops(query),
                    plan: plans.plan(query),
                    sql: Arc::from(query),
                })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.by_body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_body.is_empty()
    }
}

/// A client's own statement names.
#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, Arc<PreparedStatement>>,
}

impl ClientStatements {
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
    fn same_text_shares_one_server_name() {
        let registry = StatementRegistry::default();
        let plans = PlanCache::new(10);
        let a = registry.intern(b"select $1\0\0\0", "select $1", &plans);
        let b = registry.intern(b"select $1\0\0\0", "select $1", &plans);
        let c = registry.intern(b"select 2\0\0\0", "select 2", &plans);
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.server_name, c.server_name);
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
        let a = registry.intern(b"a\0\0\0", "a", &plans);
        let b = registry.intern(b"b\0\0\0", "b", &plans);
        mine.insert(b"s", b.clone());
        mine.remove_if(b"s", &a);
        assert!(mine.get(b"s").is_some());
        mine.remove_if(b"s", &b);
        assert!(mine.get(b"s").is_none());
    }
}
