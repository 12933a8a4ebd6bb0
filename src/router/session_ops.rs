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
    /// `ROLLBACK`/`ABORT` (also `ROLLBACK TO SAVEPOINT`): some `SET`s of the transaction may be undone.
    Rollback,
    /// Settings may have changed in a way the lexer cannot follow (`set_config(…)`): read them back
    /// from the server once the request is over. `custom` is a dotted (extension or application)
    /// setting name given as a literal: those are not listed by `pg_settings`, so they are asked for.
    Verify { custom: Option<String> },
    /// State that lives on the server connection and cannot be replayed elsewhere (`LISTEN`, SQL
    /// `PREPARE`, temp tables, `WITH HOLD` cursors, session advisory locks, `LOAD`): the client keeps
    /// its server connection; the name says which.
    Pin(&'static str),
}

/// The session-changing statements in `sql`, in order. Empty (and allocation-free) for ordinary queries.
pub fn session_ops(sql: &str) -> Vec<SessionOp> {
    let mut ops = Vec::new();
    for statement in split_statements(sql) {
        if let Some(op) = classify(statement) {
            ops.push(op);
        }
        scan_calls(statement, &mut ops);
    }
    if sql.contains(char::REPLACEMENT_CHARACTER) {
        // Text that was not UTF-8 (read lossily): a `SET` replayed from it would carry mangled
        // bytes, so the client keeps the server that has the real value.
        for op in &mut ops {
            if matches!(op, SessionOp::Set { .. }) {
                *op = SessionOp::Pin("SET in non-UTF-8 text");
            }
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
        let mut w = words(statement).skip(1);
        let name = w.next()?;
        if name.eq_ignore_ascii_case("all") {
            Some(SessionOp::ResetAll)
        } else {
            Some(SessionOp::Reset {
                name: setting_name(name, w.next()),
            })
        }
    } else if first.eq_ignore_ascii_case("rollback") || first.eq_ignore_ascii_case("abort") {
        let prepared = words(statement)
            .nth(1)
            .is_some_and(|w| w.eq_ignore_ascii_case("prepared"));
        (!prepared).then_some(SessionOp::Rollback)
    } else if first.eq_ignore_ascii_case("listen") {
        Some(SessionOp::Pin("LISTEN"))
    } else if first.eq_ignore_ascii_case("load") {
        Some(SessionOp::Pin("LOAD"))
    } else if first.eq_ignore_ascii_case("prepare") {
        let transaction = words(statement)
            .nth(1)
            .is_some_and(|w| w.eq_ignore_ascii_case("transaction"));
        (!transaction).then_some(SessionOp::Pin("PREPARE"))
    } else if first.eq_ignore_ascii_case("declare") {
        // DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH HOLD] FOR …
        let mut before_for = words(statement).take_while(|w| !w.eq_ignore_ascii_case("for"));
        before_for
            .any(|w| w.eq_ignore_ascii_case("hold"))
            .then_some(SessionOp::Pin("DECLARE … WITH HOLD"))
    } else if first.eq_ignore_ascii_case("create") {
        // CREATE [GLOBAL|LOCAL] {TEMP|TEMPORARY} [UNLOGGED] {TABLE|VIEW|SEQUENCE} …
        let is_temp =
            |w: &str| w.eq_ignore_ascii_case("temp") || w.eq_ignore_ascii_case("temporary");
        let mut w = words(statement).skip(1);
        let mut second = w.next()?;
        if second.eq_ignore_ascii_case("global") || second.eq_ignore_ascii_case("local") {
            second = w.next()?;
        }
        let in_pg_temp = words(statement)
            .take(8)
            .any(|w| w.len() >= 8 && w[..8].eq_ignore_ascii_case("pg_temp."));
        (is_temp(second) || in_pg_temp).then_some(SessionOp::Pin("CREATE TEMP"))
    } else if first.eq_ignore_ascii_case("do") {
        // A DO block can change anything (SET, temp tables, LISTEN) where the lexer cannot see it.
        Some(SessionOp::Pin("DO"))
    } else if (first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with"))
        && selects_into_temp(statement)
    {
        Some(SessionOp::Pin("SELECT INTO TEMP"))
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

/// `SELECT … INTO [TEMP|TEMPORARY] name`: creates a temp table (checked only when both words occur).
fn selects_into_temp(statement: &str) -> bool {
    let mut previous_into = false;
    for w in words(statement) {
        if previous_into && (w.eq_ignore_ascii_case("temp") || w.eq_ignore_ascii_case("temporary"))
        {
            return true;
        }
        previous_into = w.eq_ignore_ascii_case("into");
    }
    false
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
            let name = "session_authorization".to_string();
            return match w.next() {
                Some(v) if v.eq_ignore_ascii_case("default") => Some(SessionOp::Reset { name }),
                _ => Some(set_op(&name, statement)),
            };
        }
        name = next;
    }
    let second = w.next();
    let first_word = name;
    let name = setting_name(first_word, second);
    // Two-word names (`TIME ZONE`, `XML OPTION`): the value comes after the second word.
    let two_words = (name == "timezone" && first_word.eq_ignore_ascii_case("time"))
        || (name == "xmloption" && first_word.eq_ignore_ascii_case("xml"));
    let mut value = if two_words { w.next() } else { second };
    if value.is_some_and(|v| v.eq_ignore_ascii_case("to")) {
        value = w.next();
    }
    let resets = value.is_some_and(|v| {
        v.eq_ignore_ascii_case("default")
            || (name == "timezone" && v.eq_ignore_ascii_case("local"))
            || (name == "role" && v.eq_ignore_ascii_case("none"))
    });
    if resets {
        return Some(SessionOp::Reset { name });
    }
    Some(set_op(&name, statement))
}

/// The GUC behind a `SET`/`RESET` name, including the SQL-standard spellings (`TIME ZONE`,
/// `XML OPTION`, `SESSION AUTHORIZATION`, `NAMES`, `SCHEMA`); `second` is the word after it.
fn setting_name(name: &str, second: Option<&str>) -> String {
    let second_is = |word: &str| second.is_some_and(|s| s.eq_ignore_ascii_case(word));
    if name.eq_ignore_ascii_case("time") && second_is("zone") {
        "timezone".to_string()
    } else if name.eq_ignore_ascii_case("xml") && second_is("option") {
        "xmloption".to_string()
    } else if name.eq_ignore_ascii_case("session") && second_is("authorization") {
        "session_authorization".to_string()
    } else if name.eq_ignore_ascii_case("names") {
        "client_encoding".to_string()
    } else if name.eq_ignore_ascii_case("schema") {
        "search_path".to_string()
    } else {
        normalize_name(name)
    }
}

/// Function calls that change session state anywhere in a statement: `set_config` (settings the
/// lexer cannot read: verified against the server, unless transaction-local by a literal `true`) and
/// session-level advisory locks (pin). Looks only around underscores, so ordinary text costs one
/// byte scan; a false hit (the name inside a string) only costs a check.
fn scan_calls(statement: &str, ops: &mut Vec<SessionOp>) {
    let bytes = statement.as_bytes();
    let at = |start: usize, word: &[u8]| {
        bytes
            .get(start..start + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    let ident = |at: usize| {
        bytes
            .get(at)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    let mut pinned = false;
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'_') {
        if i >= 3 && at(i - 3, b"set_config") && (i == 3 || !ident(i - 4)) && !ident(i + 7) {
            if let Some(op) = set_config_call(bytes, i + 7) {
                ops.push(op);
            }
        } else if !pinned
            && i >= 8
            && at(i - 8, b"advisory_lock")
            && ((i >= 11 && at(i - 11, b"pg_")) || (i >= 15 && at(i - 15, b"pg_try_")))
        {
            pinned = true;
            ops.push(SessionOp::Pin("advisory lock"));
        }
    }
}

/// The arguments of a `set_config` call whose name ends just before `from`: nothing when its last
/// argument is a literal `true` (transaction-local), else a `Verify` naming a literal dotted setting.
fn set_config_call(bytes: &[u8], from: usize) -> Option<SessionOp> {
    let mut i = from;
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if bytes.get(i) != Some(&b'(') {
        return Some(SessionOp::Verify { custom: None });
    }
    let open = i + 1;
    let mut first_end = None;
    let mut last_arg = open;
    let mut depth = 0usize;
    i = open;
    let close = loop {
        match bytes.get(i) {
            None => break None,
            Some(b'\'') => i = skip_quoted(bytes, i, b'\'', false),
            Some(b'"') => i = skip_quoted(bytes, i, b'"', false),
            Some(b'(') => {
                depth += 1;
                i += 1;
            }
            Some(b')') if depth == 0 => break Some(i),
            Some(b')') => {
                depth -= 1;
                i += 1;
            }
            Some(b',') if depth == 0 => {
                first_end.get_or_insert(i);
                last_arg = i + 1;
                i += 1;
            }
            Some(_) => i += 1,
        }
    };
    let text = |a: usize, b: usize| {
        std::str::from_utf8(bytes.get(a..b).unwrap_or_default())
            .unwrap_or_default()
            .trim()
    };
    if let Some(close) = close {
        let last = text(last_arg, close);
        if last_arg > open
            && (last.eq_ignore_ascii_case("true") || last.eq_ignore_ascii_case("'t'"))
        {
            return None;
        }
    }
    let first = text(open, first_end.unwrap_or(open));
    let custom = first
        .strip_prefix('\'')
        .and_then(|f| f.strip_suffix('\''))
        .filter(|name| name.contains('.') && !name.contains('\''))
        .map(str::to_ascii_lowercase);
    Some(SessionOp::Verify { custom })
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
mod tests;
