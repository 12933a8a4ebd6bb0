//! Session state the `SET` lexer cannot follow on its own, in transaction mode: settings changed by
//! `set_config`, undone by a rollback or lost to an error are read back from the server; state that
//! cannot be replayed on another connection (LISTEN, temp tables, …) keeps the client on its server
//! (pinned), or, where it cannot stay (a replica, a sharded session), gets the server closed rather
//! than handed to another client.

use super::Session;
use crate::pool::query::query_rows;
use crate::protocol::codec::BodyReader;
use crate::router::session_ops::SessionOp;
use crate::session::params::quote_literal;

/// Whether the settings a request left must be read back from the server rather than derived from
/// its statements: `set_config` (or a reported setting changed by something else), or settings
/// changed in a request that also rolled back or failed (which of them survived is the server's call).
pub(super) fn needs_verify(ops: &[SessionOp], failed: bool) -> bool {
    if ops.iter().any(|op| matches!(op, SessionOp::Verify { .. })) {
        return true;
    }
    let changes = ops.iter().any(|op| {
        matches!(
            op,
            SessionOp::Set { .. } | SessionOp::Reset { .. } | SessionOp::ResetAll
        )
    });
    changes && (failed || ops.iter().any(|op| matches!(op, SessionOp::Rollback)))
}

/// A `ParameterStatus` in a client's request that none of its statements explain (a function that
/// changed a reported setting, say `TimeZone`): the settings are read back at the end of the request.
pub(super) fn note_reported_change(body: &[u8], inflight: &mut Vec<SessionOp>) {
    let Ok(name) = BodyReader::new(body).cstr_utf8() else {
        return;
    };
    let explained = inflight.iter().any(|op| match op {
        SessionOp::Set { name: set, .. } | SessionOp::Reset { name: set } => {
            set.eq_ignore_ascii_case(name)
                || (name == "is_superuser" && (set == "role" || set == "session_authorization"))
                || (name == "default_transaction_read_only" && set == "session_characteristics")
        }
        SessionOp::ResetAll | SessionOp::DiscardAll | SessionOp::Verify { .. } => true,
        _ => false,
    });
    if !explained {
        inflight.push(SessionOp::Verify { custom: None });
    }
}

/// Every setting the session changed on the server: `pg_settings` with source `session`, plus the
/// role and session authorization and the dotted `custom` settings (which `pg_settings` does not
/// list). `login` is the server login. Operators are schema-qualified: the client may have put its
/// own `=` ahead of pg_catalog's on the search_path to make this read-back lie.
fn snapshot_sql(login: &str, custom: &[String]) -> String {
    let mut sql = format!(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session' \
         UNION ALL SELECT 'session_authorization', pg_catalog.current_setting('session_authorization') \
         WHERE pg_catalog.current_setting('session_authorization') OPERATOR(pg_catalog.<>) {} \
         UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
         WHERE pg_catalog.current_setting('role') OPERATOR(pg_catalog.<>) 'none'",
        quote_literal(login)
    );
    for name in custom {
        let name = quote_literal(name);
        sql.push_str(&format!(
            " UNION ALL SELECT {name}, pg_catalog.current_setting({name}, true) \
             WHERE COALESCE(pg_catalog.current_setting({name}, true), '') OPERATOR(pg_catalog.<>) ''"
        ));
    }
    sql
}

impl Session {
    /// Statements that left state only this server connection has: keep it (pin) or, where the
    /// client cannot stay on it, close it when it is given back.
    pub(super) fn note_untracked(&mut self, ops: &[SessionOp]) {
        if self.pinned || self.server_dirty || self.mode != crate::config::PoolMode::Transaction {
            return;
        }
        let Some(what) = ops.iter().find_map(|op| match op {
            SessionOp::Pin(what) => Some(*what),
            _ => None,
        }) else {
            return;
        };
        let Some(server) = self.server.as_ref() else {
            return;
        };
        // Only a session that always runs on the primary's pool can stay on one connection: a
        // replica would take its writes, a sharded session needs its other shards.
        let on_primary = std::sync::Arc::ptr_eq(server.pool(), &self.pool);
        if on_primary && self.shared.sharding.is_none() {
            tracing::debug!(
                client = self.meter.client_id(),
                what,
                "client pinned to its server connection"
            );
            self.pinned = true;
        } else {
            tracing::debug!(
                client = self.meter.client_id(),
                what,
                "server connection closed on release: state it cannot move"
            );
            self.server_dirty = true;
        }
    }

    /// Reads the server's session settings back and takes them as the client's. Returns true when a
    /// resync is due. A server that cannot tell is closed on release rather than handed on.
    pub(super) async fn verify_settings(&mut self, ops: &[SessionOp]) -> bool {
        let Some(server) = self.server.as_mut() else {
            return false;
        };
        let mut custom: Vec<String> = self.params.custom_names(&server.applied);
        for op in ops {
            if let SessionOp::Verify { custom: Some(name) } = op {
                custom.push(name.clone());
            }
        }
        custom.sort();
        custom.dedup();
        let sql = snapshot_sql(&server.pool().key.user, &custom);
        match query_rows(server, &sql).await {
            Ok(rows) => {
                let settings = rows
                    .into_iter()
                    .filter_map(|row| {
                        let mut row = row.into_iter();
                        Some((row.next()??, row.next()??))
                    })
                    .collect();
                self.params.adopt(settings, &mut server.applied)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read session settings back; the server connection will be closed");
                self.server_dirty = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::session_ops::session_ops;

    #[test]
    fn verify_only_when_sets_meet_a_rollback_an_error_or_set_config() {
        assert!(!needs_verify(&session_ops("SET a = 1"), false));
        assert!(!needs_verify(&session_ops("ROLLBACK"), true));
        assert!(needs_verify(&session_ops("SET a = 1; ROLLBACK"), false));
        assert!(needs_verify(&session_ops("SET a = 1"), true));
        assert!(needs_verify(
            &session_ops("SELECT set_config('a', 'b', false)"),
            false
        ));
    }

    #[test]
    fn reported_changes_the_statements_explain_need_no_verify() {
        let mut ops = session_ops("SET TIME ZONE 'UTC'");
        let mut body = b"TimeZone\0UTC\0".to_vec();
        note_reported_change(&body, &mut ops);
        assert!(!ops.contains(&SessionOp::Verify { custom: None }));
        body = b"DateStyle\0ISO\0".to_vec();
        note_reported_change(&body, &mut ops);
        assert!(ops.contains(&SessionOp::Verify { custom: None }));
    }
}
