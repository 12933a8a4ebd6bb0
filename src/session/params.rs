//! Session settings a client expects (its startup parameters plus the `SET`s it made), what a server
//! connection currently has, and the SQL that brings a server in line with a client.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::router::session_ops::SessionOp;

/// One setting's value, in the form it must be replayed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamValue {
    /// A startup parameter: a string parsed as in the startup packet (`set_config`).
    Startup(Arc<str>),
    /// A `SET` statement, replayed verbatim.
    Sql(Arc<str>),
}

/// What a client wants its session to look like.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    startup: BTreeMap<String, ParamValue>,
    sets: BTreeMap<String, ParamValue>,
    fingerprint: u64,
    /// [`ClientParams::default_read_only`], worked out when the settings change.
    read_only_default: bool,
    /// [`ClientParams::serializable_default`], worked out when the settings change.
    serializable_default: bool,
}

/// What the proxy has applied to a server connection (beyond the server's own defaults).
#[derive(Debug, Clone, Default)]
pub struct AppliedParams {
    values: BTreeMap<String, ParamValue>,
    fingerprint: u64,
}

/// Settings `RESET ALL` leaves as they are.
const NOT_RESET_BY_ALL: &[&str] = &["role", "session_authorization"];

/// A new (or reset) session authorization also resets the role, on the server and for the client.
fn forget_role_if_authorization(
    name: &str,
    client: &mut ClientParams,
    applied: &mut AppliedParams,
) {
    if name == "session_authorization" {
        client.sets.remove("role");
        applied.values.remove("role");
    }
}

/// Startup packet keys that are not session settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

impl ClientParams {
    /// From the startup packet's parameters and the settings in its `options`.
    pub fn from_startup(params: &[(String, String)], options: &[(String, String)]) -> ClientParams {
        let mut startup = BTreeMap::new();
        let settings = params
            .iter()
            .filter(|(n, _)| !NOT_SETTINGS.contains(&n.as_str()) && !n.starts_with("_pq_."))
            .chain(options.iter());
        for (name, value) in settings {
            startup.insert(
                name.to_ascii_lowercase(),
                ParamValue::Startup(Arc::from(value.as_str())),
            );
        }
        let mut out = ClientParams {
            startup,
            sets: BTreeMap::new(),
            fingerprint: 0,
            read_only_default: false,
            serializable_default: false,
        };
        out.refresh();
        out
    }

    /// Identifies this set of settings (equal settings, equal fingerprint).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn has_startup_settings(&self) -> bool {
        !self.startup.is_empty()
    }

    fn desired(&self) -> BTreeMap<&String, &ParamValue> {
        let mut out: BTreeMap<&String, &ParamValue> = self.startup.iter().collect();
        out.extend(self.sets.iter());
        out
    }

    fn refresh(&mut self) {
        self.fingerprint = fingerprint(self.desired().into_iter());
        self.read_only_default = self.compute_default_read_only();
        self.serializable_default = self.compute_serializable_default();
    }

    /// Whether `applied` already matches this client (the cheap check done at every checkout).
    pub fn matches(&self, applied: &AppliedParams) -> bool {
        self.fingerprint == applied.fingerprint
    }

    /// Records committed session changes for the client and for the server that ran them. Returns true
    /// when the server now differs from what the client expects (a `RESET` went back to the server's
    /// default, not the client's startup value), so a resync is due.
    pub fn commit(&mut self, ops: &[SessionOp], applied: &mut AppliedParams) -> bool {
        for op in ops {
            match op {
                SessionOp::Set { name, statement } => {
                    forget_role_if_authorization(name, self, applied);
                    let value = ParamValue::Sql(statement.clone());
                    self.sets.insert(name.clone(), value.clone());
                    applied.values.insert(name.clone(), value);
                }
                SessionOp::Reset { name } => {
                    forget_role_if_authorization(name, self, applied);
                    self.sets.remove(name);
                    applied.values.remove(name);
                }
                SessionOp::ResetAll => {
                    // RESET ALL leaves the role and session authorization alone.
                    self.sets
                        .retain(|name, _| NOT_RESET_BY_ALL.contains(&name.as_str()));
                    applied
                        .values
                        .retain(|name, _| NOT_RESET_BY_ALL.contains(&name.as_str()));
                }
                SessionOp::DiscardAll => {
                    self.sets.clear();
                    applied.values.clear();
                }
                SessionOp::DeallocateAll
                | SessionOp::Rollback
                | SessionOp::Verify { .. }
                | SessionOp::Pin(_) => {}
            }
        }
        self.refresh();
        applied.refresh();
        !self.matches(applied)
    }

    /// Takes the server's actual session-level settings (read back after a request whose effect the
    /// lexer could not be sure of: a rollback, an error, `set_config`) as this client's: `server` is
    /// every setting the session changed on the server, as (name, value) pairs. Returns true when
    /// the server differs from what the client expects (a startup value was `RESET`), so a resync
    /// is due.
    pub fn adopt(&mut self, server: Vec<(String, String)>, applied: &mut AppliedParams) -> bool {
        applied.values.clear();
        self.sets.clear();
        for (name, value) in server {
            // pg_settings spells some names in mixed case (`TimeZone`); the lexer lowercases.
            let name = name.to_ascii_lowercase();
            let value = ParamValue::Startup(Arc::from(value.as_str()));
            if self.startup.get(&name) != Some(&value) {
                self.sets.insert(name.clone(), value.clone());
            }
            applied.values.insert(name, value);
        }
        self.refresh();
        applied.refresh();
        !self.matches(applied)
    }

    /// The dotted (extension or application) settings this client or `applied` has: `pg_settings`
    /// does not list them, so reading settings back asks for each.
    pub fn custom_names(&self, applied: &AppliedParams) -> Vec<String> {
        self.startup
            .keys()
            .chain(self.sets.keys())
            .chain(applied.values.keys())
            .filter(|name| name.contains('.'))
            .cloned()
            .collect()
    }

    /// SQL that turns `applied` into this client's settings, or `None` when nothing differs. Call
    /// [`ClientParams::mark_applied`] once it has run.
    pub fn sync_sql(&self, applied: &AppliedParams) -> Option<String> {
        if self.matches(applied) {
            return None;
        }
        let desired = self.desired();
        let mut sql = String::new();
        for name in applied.values.keys() {
            if !desired.contains_key(name) {
                sql.push_str(&reset_sql(name));
            }
        }
        // A new session authorization resets the role: it goes first, and the role again after it.
        let authorization = "session_authorization".to_string();
        let authorization_changes =
            desired.get(&authorization).copied() != applied.values.get(&authorization);
        let ordered = desired
            .get_key_value(&authorization)
            .into_iter()
            .chain(desired.iter().filter(|(name, _)| ***name != authorization));
        for (name, value) in ordered {
            let role_again = authorization_changes && name.as_str() == "role";
            if applied.values.get(*name) == Some(*value) && !role_again {
                continue;
            }
            match value {
                ParamValue::Startup(v) => sql.push_str(&format!(
                    "SELECT pg_catalog.set_config({}, {}, false);",
                    quote_literal(name),
                    quote_literal(v)
                )),
                ParamValue::Sql(statement) => {
                    sql.push_str(statement);
                    sql.push(';');
                }
            }
        }
        Some(sql)
    }

    /// Whether the client made its transactions read-only by default (`default_transaction_read_only`
    /// at startup or by `SET`, or `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`), so a plain
    /// `BEGIN` may go to a replica.
    pub fn default_read_only(&self) -> bool {
        self.read_only_default
    }

    /// Whether the client's transactions are SERIALIZABLE by default: hot standbys refuse that
    /// isolation level, so such a client's reads stay on the primary.
    pub fn serializable_default(&self) -> bool {
        self.serializable_default
    }

    /// The client's `extra_float_digits` (Postgres' default 1 when it set none): merged float
    /// aggregates are printed the way the server would print them for this client.
    pub fn extra_float_digits(&self) -> i32 {
        match self.desired().get(&"extra_float_digits".to_string()) {
            Some(ParamValue::Startup(v)) => v.trim().parse().unwrap_or(1),
            Some(ParamValue::Sql(statement)) => statement
                .split(|c: char| c.is_ascii_whitespace() || c == '=' || c == '\'')
                .rfind(|w| !w.is_empty())
                .and_then(|w| w.trim_end_matches(';').parse().ok())
                .unwrap_or(1),
            None => 1,
        }
    }

    fn compute_serializable_default(&self) -> bool {
        ["session_characteristics", "default_transaction_isolation"]
            .iter()
            .any(|name| match self.desired().get(&name.to_string()) {
                Some(ParamValue::Startup(v) | ParamValue::Sql(v)) => {
                    v.to_ascii_lowercase().contains("serializable")
                }
                None => false,
            })
    }

    fn compute_default_read_only(&self) -> bool {
        let desired = self.desired();
        if let Some(ParamValue::Sql(statement)) = desired
            .iter()
            .find(|(name, _)| name.as_str() == "session_characteristics")
            .map(|(_, v)| *v)
        {
            let upper = statement.to_ascii_uppercase();
            let words: Vec<&str> = upper.split_ascii_whitespace().collect();
            if let Some(at) = words.windows(2).rposition(|w| w[0] == "READ") {
                return words[at + 1].starts_with("ONLY");
            }
        }
        match desired
            .iter()
            .find(|(name, _)| name.as_str() == "default_transaction_read_only")
            .map(|(_, v)| *v)
        {
            Some(ParamValue::Startup(value)) => parse_bool(value),
            Some(ParamValue::Sql(statement)) => statement
                .split(|c: char| c.is_ascii_whitespace() || c == '=')
                .rfind(|w| !w.is_empty())
                .is_some_and(parse_bool),
            None => false,
        }
    }

    /// Records that `sync_sql` ran on the server with `applied`.
    pub fn mark_applied(&self, applied: &mut AppliedParams) {
        applied.values = self
            .desired()
            .into_iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        applied.fingerprint = self.fingerprint;
    }
}

impl AppliedParams {
    fn refresh(&mut self) {
        self.fingerprint = fingerprint(self.values.iter());
    }

    /// The server forgot everything the proxy applied (`DISCARD ALL` on release).
    pub fn clear(&mut self) {
        self.values.clear();
        self.refresh();
    }
}

fn fingerprint<'a>(entries: impl Iterator<Item = (&'a String, &'a ParamValue)>) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut any = false;
    for (name, value) in entries {
        any = true;
        name.hash(&mut hasher);
        value.hash(&mut hasher);
    }
    if any {
        hasher.finish()
    } else {
        0
    }
}

/// Postgres' spellings of a true boolean setting (`on`, `true`, `yes`, `1`, quoted or not).
fn parse_bool(value: &str) -> bool {
    let v = value
        .trim()
        .trim_end_matches(';')
        .trim_matches(['\'', '"'])
        .to_ascii_lowercase();
    matches!(v.as_str(), "on" | "true" | "yes" | "1" | "t" | "y")
}

/// A string literal that is right whatever `standard_conforming_strings` says: dollar quoting.
pub fn quote_literal(value: &str) -> String {
    if !value.contains(['\'', '\\']) {
        return format!("'{value}'");
    }
    let mut tag = String::from("$q$");
    while value.contains(&tag) {
        tag.insert(2, 'q');
    }
    format!("{tag}{value}{tag}")
}

/// `RESET` for a setting name, including the pseudo-name used for `SET SESSION CHARACTERISTICS`.
fn reset_sql(name: &str) -> String {
    if name == "session_characteristics" {
        return "RESET default_transaction_isolation;RESET default_transaction_read_only;\
                RESET default_transaction_deferrable;"
            .to_string();
    }
    format!("RESET {};", quote_ident(name))
}

fn quote_ident(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientParams {
        ClientParams::from_startup(
            &[
                ("user".into(), "u".into()),
                ("application_name".into(), "app's".into()),
            ],
            &[("search_path".into(), "a, b".into())],
        )
    }

    #[test]
    fn fresh_server_gets_startup_settings() {
        let c = client();
        let mut applied = AppliedParams::default();
        let sql = c.sync_sql(&applied).expect("differs");
        assert!(
            sql.contains("set_config('application_name', $q$app's$q$, false)"),
            "{sql}"
        );
        assert!(
            sql.contains("set_config('search_path', 'a, b', false)"),
            "{sql}"
        );
        assert!(!sql.contains("'user'"));
        c.mark_applied(&mut applied);
        assert!(c.matches(&applied));
        assert_eq!(c.sync_sql(&applied), None);
    }

    #[test]
    fn reset_returns_to_the_clients_startup_value() {
        let mut c = client();
        let mut applied = AppliedParams::default();
        c.mark_applied(&mut applied);
        let set = SessionOp::Set {
            name: "search_path".into(),
            statement: Arc::from("SET search_path TO x"),
        };
        assert!(!c.commit(&[set], &mut applied), "server ran the SET itself");
        let reset = SessionOp::Reset {
            name: "search_path".into(),
        };
        assert!(
            c.commit(&[reset], &mut applied),
            "server fell back to its own default"
        );
        let sql = c.sync_sql(&applied).expect("resync");
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('search_path', 'a, b', false);"
        );
    }

    #[test]
    fn adopting_the_servers_settings_keeps_startup_values_apart() {
        let mut c = client();
        let mut applied = AppliedParams::default();
        c.mark_applied(&mut applied);
        let server = vec![
            ("TimeZone".to_string(), "Asia/Tokyo".to_string()),
            ("application_name".to_string(), "app's".to_string()),
        ];
        // search_path (a startup value) is gone from the server: it must be set again.
        assert!(c.adopt(server, &mut applied));
        let sql = c.sync_sql(&applied).expect("resync");
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('search_path', 'a, b', false);"
        );
        c.mark_applied(&mut applied);
        let other = ClientParams::from_startup(&[], &[]);
        assert_eq!(
            other.sync_sql(&applied).as_deref(),
            Some("RESET application_name;RESET search_path;RESET timezone;")
        );
    }

    #[test]
    fn a_new_session_authorization_is_replayed_before_the_role() {
        let mut c = ClientParams::from_startup(&[], &[]);
        let mut applied = AppliedParams::default();
        let ops = crate::router::session_ops::session_ops;
        c.commit(
            &ops("SET SESSION AUTHORIZATION u; SET ROLE r"),
            &mut applied,
        );
        let fresh = AppliedParams::default();
        assert_eq!(
            c.sync_sql(&fresh).as_deref(),
            Some("SET SESSION AUTHORIZATION u;SET ROLE r;")
        );
        c.commit(&ops("RESET ALL"), &mut applied);
        assert!(c.sync_sql(&fresh).is_some(), "RESET ALL keeps both");
        c.commit(&ops("RESET SESSION AUTHORIZATION"), &mut applied);
        assert_eq!(c.sync_sql(&fresh), None, "the role went with it");
    }

    #[test]
    fn another_clients_settings_are_reset() {
        let other = ClientParams::from_startup(&[("statement_timeout".into(), "5s".into())], &[]);
        let mut applied = AppliedParams::default();
        other.mark_applied(&mut applied);
        let plain = ClientParams::from_startup(&[], &[]);
        assert_eq!(
            plain.sync_sql(&applied).as_deref(),
            Some("RESET statement_timeout;")
        );
    }

    #[test]
    fn default_read_only_from_startup_set_and_characteristics() {
        let plain = ClientParams::from_startup(&[], &[]);
        assert!(!plain.default_read_only());
        let startup = ClientParams::from_startup(
            &[],
            &[("default_transaction_read_only".into(), "on".into())],
        );
        assert!(startup.default_read_only());
        let mut c = ClientParams::from_startup(&[], &[]);
        let mut applied = AppliedParams::default();
        let set = |sql: &str| crate::router::session_ops::session_ops(sql);
        c.commit(
            &set("SET default_transaction_read_only TO 'true'"),
            &mut applied,
        );
        assert!(c.default_read_only());
        c.commit(
            &set("set default_transaction_read_only = off"),
            &mut applied,
        );
        assert!(!c.default_read_only());
        c.commit(
            &set("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            &mut applied,
        );
        assert!(c.default_read_only());
        c.commit(&set("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE"), &mut applied);
        assert!(!c.default_read_only());
        assert!(c.serializable_default());
        c.commit(&set("RESET ALL"), &mut applied);
        assert!(!c.serializable_default());
        c.commit(
            &set("SET default_transaction_isolation = 'serializable'"),
            &mut applied,
        );
        assert!(c.serializable_default());
    }
}
