//! Finds the statements in a SQL string that change session state (`SET`, `RESET`, `DISCARD`,
//! `DEALLOCATE`), so transaction pooling can carry that state from one server connection to the next.
//!
//! A hand-written lexer, not a parser: it runs on every simple query, so it only splits the text at
//! top-level semicolons (respecting quotes, comments and dollar quotes) and looks at leading keywords.

use std::sync::Arc;

/// A change to session state made by one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// `SET name …`; `statement` is the statement text, replayed verbatim on other connections.
    Set { name: String, statement: Arc<str> },
    /// `RESET name` or `SET name TO DEFAULT`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: settings reset and every prepared statement dropped.
    DiscardAll,
    /// `DEALLOCATE ALL`: every prepared statement dropped.
    DeallocateAll,
}

/// The session-changing statements in `sql`, in order. Empty (and allocation-free) for ordinary queries.
pub fn session_ops(sql: &str) -> Vec<SessionOp> {
    let mut ops = Vec::new();
    for statement in split_statements(sql) {
        if let Some(op) = classify(statement) {
            ops.push(op);
        }
    }
    ops
}

/// Splits at top-level `;`, yielding trimmed non-empty statements with leading comments removed.
pub fn split_statements(sql: &str) -> impl Iterator<Item = &str> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                i = skip_quoted(
                    bytes,
                    i,
                    b'\'',
                    i > 0 && matches!(bytes[i - 1], b'E' | b'e'),
                )
            }
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' => i = skip_dollar_quote(bytes, i),
            b';' => {
                pieces.push(&sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    pieces.push(&sql[start..]);
    pieces
        .into_iter()
        .map(strip_leading_comments)
        .filter(|s| !s.is_empty())
}

pub(crate) fn skip_quoted(bytes: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if backslash_escapes && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

pub(crate) fn skip_block_comment(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i + 1 < bytes.len() {
        if bytes[i] == b'/' && bytes[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// `$tag$ … $tag$`; a `$` that does not open a dollar quote (e.g. `$1`) is skipped alone.
pub(crate) fn skip_dollar_quote(bytes: &[u8], open: usize) -> usize {
    let tag_end = bytes[open + 1..]
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .map(|p| open + 1 + p);
    let Some(tag_end) = tag_end else {
        return bytes.len();
    };
    if bytes[tag_end] != b'$' || bytes.get(open + 1).is_some_and(|b| b.is_ascii_digit()) {
        return open + 1;
    }
    let tag = &bytes[open..=tag_end];
    let body = tag_end + 1;
    bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |p| body + p + tag.len())
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if s.starts_with("/*") {
            let end = skip_block_comment(s.as_bytes(), 0);
            s = &s[end.min(s.len())..];
        } else {
            return s.trim_end();
        }
    }
}

/// Case-insensitive word iterator over the start of a statement (stops caring after a few words).
fn words(statement: &str) -> impl Iterator<Item = &str> {
    statement
        .split(|c: char| c.is_ascii_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
}

fn classify(statement: &str) -> Option<SessionOp> {
    let first = statement.get(
        ..statement
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(statement.len()),
    )?;
    if first.eq_ignore_ascii_case("set") {
        classify_set(statement)
    } else if first.eq_ignore_ascii_case("reset") {
        let name = words(statement).nth(1)?;
        if name.eq_ignore_ascii_case("all") {
            Some(SessionOp::ResetAll)
        } else {
            Some(SessionOp::Reset {
                name: normalize_name(name),
            })
        }
    } else if first.eq_ignore_ascii_case("discard") {
        let what = words(statement).nth(1)?;
        what.eq_ignore_ascii_case("all")
            .then_some(SessionOp::DiscardAll)
    } else if first.eq_ignore_ascii_case("deallocate") {
        let mut w = words(statement).skip(1);
        let mut target = w.next()?;
        if target.eq_ignore_ascii_case("prepare") {
            target = w.next()?;
        }
        target
            .eq_ignore_ascii_case("all")
            .then_some(SessionOp::DeallocateAll)
    } else {
        None
    }
}

fn classify_set(statement: &str) -> Option<SessionOp> {
    let mut w = words(statement).skip(1);
    let mut name = w.next()?;
    if name.eq_ignore_ascii_case("local")
        || name.eq_ignore_ascii_case("transaction")
        || name.eq_ignore_ascii_case("constraints")
    {
        return None; // transaction-scoped: nothing outlives the transaction
    }
    if name.eq_ignore_ascii_case("session") {
        let next = w.next()?;
        if next.eq_ignore_ascii_case("characteristics") {
            return Some(set_op("session_characteristics", statement));
        }
        if next.eq_ignore_ascii_case("authorization") {
            return Some(set_op("session_authorization", statement));
        }
        name = next;
    }
    let name = if name.eq_ignore_ascii_case("time") {
        "timezone".to_string()
    } else if name.eq_ignore_ascii_case("names") {
        "client_encoding".to_string()
    } else if name.eq_ignore_ascii_case("schema") {
        "search_path".to_string()
    } else if name.eq_ignore_ascii_case("role") {
        "role".to_string()
    } else {
        normalize_name(name)
    };
    let mut value = w.next();
    if value.is_some_and(|v| v.eq_ignore_ascii_case("to")) {
        value = w.next();
    }
    if value.is_some_and(|v| v.eq_ignore_ascii_case("default")) {
        return Some(SessionOp::Reset { name });
    }
    Some(set_op(&name, statement))
}

fn set_op(name: &str, statement: &str) -> SessionOp {
    SessionOp::Set {
        name: name.to_string(),
        statement: Arc::from(statement),
    }
}

/// GUC names are case-insensitive unless double-quoted.
fn normalize_name(name: &str) -> String {
    let name = name.trim_end_matches(';');
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => name.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, statement: &str) -> SessionOp {
        SessionOp::Set {
            name: name.into(),
            statement: Arc::from(statement),
        }
    }

    #[test]
    fn ordinary_queries_have_no_ops() {
        assert!(session_ops("SELECT 1").is_empty());
        assert!(session_ops("select 'set x = 1; reset all'").is_empty());
        assert!(session_ops("select $$;set x=1;$$, $1 -- ; set y=2\n").is_empty());
        assert!(session_ops("/* set a=1; */ select 1").is_empty());
        assert!(session_ops("insert into settings values ('x')").is_empty());
    }

    #[test]
    fn finds_set_reset_discard() {
        assert_eq!(
            session_ops("SET search_path TO a, b; select 1; RESET statement_timeout"),
            vec![
                set("search_path", "SET search_path TO a, b"),
                SessionOp::Reset {
                    name: "statement_timeout".into()
                }
            ]
        );
        assert_eq!(
            session_ops("set SESSION TimeZone='UTC'"),
            vec![set("timezone", "set SESSION TimeZone='UTC'")]
        );
        assert_eq!(
            session_ops("SET TIME ZONE 'Europe/Paris'"),
            vec![set("timezone", "SET TIME ZONE 'Europe/Paris'")]
        );
        assert_eq!(
            session_ops("set application_name = default"),
            vec![SessionOp::Reset {
                name: "application_name".into()
            }]
        );
        assert_eq!(
            session_ops("  -- hello\n reset ALL ;"),
            vec![SessionOp::ResetAll]
        );
        assert_eq!(session_ops("DISCARD ALL"), vec![SessionOp::DiscardAll]);
        assert!(session_ops("DISCARD PLANS").is_empty());
        assert_eq!(
            session_ops("deallocate prepare all"),
            vec![SessionOp::DeallocateAll]
        );
        assert!(session_ops("deallocate foo").is_empty());
    }

    #[test]
    fn transaction_scoped_sets_are_ignored() {
        assert!(session_ops("SET LOCAL search_path = x").is_empty());
        assert!(session_ops("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
        assert!(session_ops("set constraints all deferred").is_empty());
    }

    #[test]
    fn lexer_survives_unterminated_input() {
        for text in [
            "'",
            "\"",
            "/*",
            "$a$",
            "$",
            "e'\\",
            "--",
            "set",
            "reset",
            "SET \"Quoted\" = 1",
        ] {
            let _ = session_ops(text);
        }
        assert_eq!(
            session_ops("SET \"Quoted\" = 1"),
            vec![set("Quoted", "SET \"Quoted\" = 1")]
        );
    }
}
