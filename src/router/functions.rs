//! Which function names write: a built-in list, names from the config, and user-defined VOLATILE
//! functions learnt from the database. A read that calls one of them goes to the primary.
//!
//! Names only, without schema or argument types: a user function that shares its name with a writer
//! is treated as a writer too, which errs on the safe side (the primary can run anything).

use std::collections::HashSet;
use std::sync::Arc;

/// Built-in and well-known extension functions that write, take locks or hold state that lives on one
/// server. Every name is checked against the installed Postgres catalog by a test.
pub const BUILTIN_WRITERS: &[&str] = &[
    // Sequences: nextval/setval write; currval/lastval read the session's own nextval, made on the
    // primary.
    "nextval",
    "setval",
    "currval",
    "lastval",
    // Advisory locks: only meaningful where the other lockers are.
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    // Notifications and transaction ids (assigning an xid fails on a standby).
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
    "pg_export_snapshot",
    // Large objects: writers, and lo_open whose mode is a literal (so it cannot be told apart).
    "lo_creat",
    "lo_create",
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "lo_put",
    "lo_unlink",
    "lo_open",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    // WAL, replication slots and origins, backups.
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_xact_reset",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup", // Postgres <= 14
    "pg_stop_backup",  // Postgres <= 14
    // Server and session control: these act on the server that runs them, so never a random replica
    // (pg_promote and the replay controls would act on a standby).
    "set_config",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    // Index and catalog maintenance.
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
    "pg_import_system_collations",
    "pg_nextoid",
    // Functions that run SQL given as a string: what the string does cannot be known from the
    // statement's shape, so they count as writes.
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    // Extensions: dblink (remote SQL, named connections held by one server), adminpack (server
    // files), pg_stat_statements, pg_visibility.
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_disconnect",
    "dblink_open",
    "dblink_fetch",
    "dblink_close",
    "dblink_send_query",
    "dblink_get_result",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_stat_statements_reset",
    "pg_truncate_visibility_map",
];

/// SQL returning one column, one row per user-defined VOLATILE function name (functions, aggregates
/// and window functions; procedures are left out since `CALL` is a write anyway). VOLATILE is the
/// default for `CREATE FUNCTION`, so this errs towards the primary, as it should.
pub const LEARN_VOLATILE_SQL: &str = "SELECT DISTINCT p.proname::text \
     FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND p.prokind <> 'p' \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     ORDER BY 1";

/// Which function names write. Cheap to clone (two shared sets).
#[derive(Debug, Clone)]
pub struct FunctionCatalog {
    /// Built-ins and configured names.
    fixed: Arc<HashSet<Box<str>>>,
    /// Learnt from the database.
    learned: Arc<HashSet<Box<str>>>,
}

impl Default for FunctionCatalog {
    /// The built-in list alone.
    fn default() -> FunctionCatalog {
        FunctionCatalog::new(&[])
    }
}

impl FunctionCatalog {
    /// Built-ins plus configured names (`name` or `schema.name`; only the last part is kept, which
    /// may match same-named functions in other schemas: conservative). Unquoted names are folded to
    /// lowercase as Postgres does; `"Quoted"` ones keep their case.
    pub fn new(configured: &[String]) -> FunctionCatalog {
        let mut fixed: HashSet<Box<str>> = BUILTIN_WRITERS.iter().map(|n| Box::from(*n)).collect();
        fixed.extend(configured.iter().filter_map(|n| configured_name(n)));
        FunctionCatalog {
            fixed: Arc::new(fixed),
            learned: Arc::default(),
        }
    }

    /// A copy whose learnt names are replaced by `names` (as stored in `pg_proc.proname`).
    pub fn with_learned(&self, names: impl IntoIterator<Item = String>) -> FunctionCatalog {
        FunctionCatalog {
            fixed: Arc::clone(&self.fixed),
            learned: Arc::new(names.into_iter().map(String::into_boxed_str).collect()),
        }
    }

    /// Whether `name` (as in [`StatementPlan::functions`](super::plan::StatementPlan)) writes.
    pub fn is_write(&self, name: &str) -> bool {
        self.fixed.contains(name) || self.learned.contains(name)
    }

    /// How many names were learnt from the database.
    pub fn learned_len(&self) -> usize {
        self.learned.len()
    }
}

/// The last part of a configured `schema.name`, folded like an SQL identifier.
fn configured_name(name: &str) -> Option<Box<str>> {
    let name = name.trim();
    let last = if let Some(body) = name.strip_suffix('"') {
        // The last quoted part: scan back to its opening quote ("" is an escaped quote).
        let bytes = body.as_bytes();
        let mut i = bytes.len();
        loop {
            if i == 0 {
                return None;
            }
            i -= 1;
            if bytes[i] == b'"' {
                if i > 0 && bytes[i - 1] == b'"' {
                    i -= 1;
                    continue;
                }
                break;
            }
        }
        body[i + 1..].replace("\"\"", "\"")
    } else {
        let last = name.rsplit('.').next().unwrap_or(name).trim();
        last.to_ascii_lowercase()
    };
    (!last.is_empty()).then(|| last.into_boxed_str())
}

#[cfg(test)]
mod tests;
