//! What to do with text sqlparser cannot parse: parse its statements one by one, patch the Postgres
//! syntax sqlparser lacks (`FOR NO KEY UPDATE`, `FOR KEY SHARE`, `TABLE t`), and classify the rest by
//! their leading keywords. Only keywords are looked at (quotes, comments and dollar quotes are
//! skipped), so the result never depends on a literal value.

use super::{classify_statement, parse, with_shard};
use crate::router::fingerprint::{literal_spans, opens_dollar_quote};
use crate::router::plan::{Kind, StatementPlan, WriteReason};
use crate::router::session_ops::{
    skip_block_comment, skip_dollar_quote, skip_quoted, split_statements,
};
use crate::sharding::extract::unparsable_plan;
use crate::sharding::Rules;

/// Plans for a text that did not parse as a whole.
pub(super) fn classify_pieces(sql: &str, rules: &Rules) -> Box<[StatementPlan]> {
    let pieces: Vec<&str> = split_statements(sql).collect();
    let mut plans = Vec::with_capacity(pieces.len().max(1));
    let mut shard = Shard::new(sql, rules);
    if let [only] = pieces.as_slice() {
        // The text itself: no point parsing it again.
        plans.push(piece_plan(only, &mut shard));
    } else {
        for piece in pieces {
            match parse(piece) {
                Some(parsed) => {
                    let before = shard.literals_before(piece);
                    plans.extend(
                        parsed
                            .iter()
                            .map(|s| with_shard(classify_statement(s), s, piece, rules, before)),
                    );
                }
                None => plans.push(piece_plan(piece, &mut shard)),
            }
        }
    }
    if plans.is_empty() {
        let mut plan = StatementPlan::of(Kind::Write(WriteReason::Unparsable));
        plan.shard = shard.unparsable(plan.kind, sql);
        plans.push(plan);
    }
    plans.into_boxed_slice()
}

/// What the sharding plans of pieces need: the rules, and where each piece's literals start among
/// the whole text's (a piece is parsed on its own, so its literals count from 0).
struct Shard<'a> {
    sql: &'a str,
    rules: &'a Rules,
    literal_starts: Option<Vec<usize>>,
}

impl<'a> Shard<'a> {
    fn new(sql: &'a str, rules: &'a Rules) -> Shard<'a> {
        Shard {
            sql,
            rules,
            literal_starts: None,
        }
    }

    /// How many literals of the whole text come before `piece` (a slice of it).
    fn literals_before(&mut self, piece: &str) -> u32 {
        if self.rules.is_empty() {
            return 0;
        }
        let at = (piece.as_ptr() as usize).wrapping_sub(self.sql.as_ptr() as usize);
        let sql = self.sql;
        let starts = self
            .literal_starts
            .get_or_insert_with(|| literal_spans(sql).into_iter().map(|r| r.start).collect());
        u32::try_from(starts.partition_point(|start| *start < at)).unwrap_or(u32::MAX)
    }

    /// The sharding plan of a statement nobody could parse: fine only if it merely steers the
    /// session or the transaction, or names no sharded or reference table at all (then it can
    /// only concern unsharded tables, on the default shard); function DDL goes to every shard.
    fn unparsable(&self, kind: Kind, piece: &str) -> crate::sharding::ShardPlan {
        if self.rules.is_empty() {
            return crate::sharding::ShardPlan::Unsharded;
        }
        match kind {
            Kind::Write(WriteReason::FunctionDdl) => crate::sharding::ShardPlan::Ddl,
            Kind::Write(_) | Kind::Read => unparsable_plan(!self.rules.mentioned_in(piece)),
            _ => unparsable_plan(true),
        }
    }
}

/// One statement that does not parse.
fn piece_plan(piece: &str, shard: &mut Shard) -> StatementPlan {
    let words = code_words(piece);
    let word = |i: usize| words.get(i).map_or("", |&(start, end)| &piece[start..end]);
    let is = |i: usize, keyword: &str| word(i).eq_ignore_ascii_case(keyword);

    let (patched, locking) = patch(piece, &words, is(0, "table"));
    if let Some(patched) = patched {
        if let Some([statement]) = parse(&patched).as_deref() {
            // Patching cuts keywords only: the literals are the piece's, in order.
            let before = shard.literals_before(piece);
            let plan = classify_statement(statement);
            return with_shard(plan, statement, &patched, shard.rules, before);
        }
    }
    let kind = piece_kind(piece, &words, locking);
    StatementPlan {
        shard: shard.unparsable(kind, piece),
        ..StatementPlan::of(kind)
    }
}

/// The kind of a statement that does not parse, from its leading keywords.
fn piece_kind(piece: &str, words: &[(usize, usize)], locking: bool) -> Kind {
    let word = |i: usize| words.get(i).map_or("", |&(start, end)| &piece[start..end]);
    let is = |i: usize, keyword: &str| word(i).eq_ignore_ascii_case(keyword);
    if locking {
        return Kind::Write(WriteReason::Locking);
    }
    let read_only = || access_mode(words, piece);
    match word(0).to_ascii_lowercase().as_str() {
        "begin" => Kind::Begin {
            read_only: read_only(),
        },
        "start" if is(1, "transaction") => Kind::Begin {
            read_only: read_only(),
        },
        "set" if is(1, "transaction") => Kind::SetTransaction {
            read_only: read_only(),
        },
        "set" | "reset" | "discard" | "deallocate" => Kind::Session,
        "move" => Kind::Cursor,
        "prepare" if is(1, "transaction") => Kind::TxEnd,
        "commit" | "rollback" if is(1, "prepared") => Kind::Write(WriteReason::Statement),
        "create" | "alter" | "drop" if is_function_ddl(&word) => {
            Kind::Write(WriteReason::FunctionDdl)
        }
        // Utility statements sqlparser does not model (or not all their options): writes, and not
        // worth counting as unparsable.
        "do" | "vacuum" | "analyze" | "checkpoint" | "reindex" | "cluster" | "refresh"
        | "security" | "import" | "reassign" | "load" | "create" | "alter" | "drop" | "grant"
        | "revoke" | "comment" | "truncate" => Kind::Write(WriteReason::Statement),
        _ => Kind::Write(WriteReason::Unparsable),
    }
}

/// CREATE [OR REPLACE] FUNCTION/PROCEDURE/AGGREGATE/EXTENSION, ALTER/DROP of those or of a ROUTINE.
fn is_function_ddl<'a>(word: &impl Fn(usize) -> &'a str) -> bool {
    let object = if word(1).eq_ignore_ascii_case("or") {
        word(3)
    } else {
        word(1)
    };
    ["function", "procedure", "routine", "aggregate", "extension"]
        .iter()
        .any(|o| object.eq_ignore_ascii_case(o))
}

/// The piece with sqlparser-unfriendly syntax replaced by its equivalent (`FOR NO KEY UPDATE` →
/// `FOR UPDATE`, `FOR KEY SHARE` → `FOR SHARE`, a leading `TABLE t` → `SELECT * FROM t`), if any was
/// found; and whether a locking clause was.
fn patch(piece: &str, words: &[(usize, usize)], table: bool) -> (Option<String>, bool) {
    let is = |i: usize, keyword: &str| {
        words
            .get(i)
            .is_some_and(|&(start, end)| piece[start..end].eq_ignore_ascii_case(keyword))
    };
    let mut cuts = Vec::new(); // byte ranges to drop
    let mut locking = false;
    for i in 0..words.len() {
        if !is(i, "for") {
            continue;
        }
        if is(i + 1, "no") && is(i + 2, "key") && is(i + 3, "update") {
            cuts.push((words[i + 1].0, words[i + 3].0));
            locking = true;
        } else if is(i + 1, "key") && is(i + 2, "share") {
            cuts.push((words[i + 1].0, words[i + 2].0));
            locking = true;
        } else if is(i + 1, "update") || is(i + 1, "share") {
            locking = true;
        }
    }
    if cuts.is_empty() && !table {
        return (None, locking);
    }
    let mut out = String::with_capacity(piece.len() + 16);
    let mut at = 0;
    if let (true, Some(&(_, end))) = (table, words.first()) {
        out.push_str("SELECT * FROM");
        at = end;
    }
    for (start, end) in cuts {
        if start >= at {
            out.push_str(&piece[at..start]);
            at = end;
        }
    }
    out.push_str(&piece[at..]);
    (Some(out), locking)
}

/// READ ONLY / READ WRITE among the words (the last one said wins).
fn access_mode(words: &[(usize, usize)], piece: &str) -> Option<bool> {
    let text = |i: usize| words.get(i).map_or("", |&(start, end)| &piece[start..end]);
    // SERIALIZABLE cannot run on a hot standby: read-write for routing, whatever it says.
    if (0..words.len()).any(|i| text(i).eq_ignore_ascii_case("serializable")) {
        return Some(false);
    }
    (0..words.len()).rev().find_map(|i| {
        if !text(i).eq_ignore_ascii_case("read") {
            return None;
        }
        let next = text(i + 1);
        if next.eq_ignore_ascii_case("only") {
            Some(true)
        } else if next.eq_ignore_ascii_case("write") {
            Some(false)
        } else {
            None
        }
    })
}

/// Byte ranges of the unquoted words (keywords and identifiers) of `piece`, skipping string
/// literals, quoted identifiers, dollar quotes, comments, numbers and parameters.
fn code_words(piece: &str) -> Vec<(usize, usize)> {
    let bytes = piece.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i = match b {
            b'\'' => skip_quoted(bytes, i, b'\'', false),
            b'"' => skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => bytes[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(bytes.len(), |p| i + p + 1),
            b'/' if bytes.get(i + 1) == Some(&b'*') => skip_block_comment(bytes, i),
            b'$' if opens_dollar_quote(bytes, i) => skip_dollar_quote(bytes, i),
            _ if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| {
                        !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$') || *c >= 0x80)
                    })
                    .map_or(bytes.len(), |p| i + p);
                if bytes.get(end) == Some(&b'\'') && matches!(&bytes[i..end], [b'e' | b'E']) {
                    skip_quoted(bytes, end, b'\'', true) // E'…' with backslash escapes
                } else {
                    words.push((i, end));
                    end
                }
            }
            // Numbers, `$1`, operators and punctuation: digits after `$` or in a number are not
            // words, and a word never starts with a digit.
            b'0'..=b'9' | b'$' => bytes[i..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'$')))
                .map_or(bytes.len(), |p| i + p),
            _ => i + 1,
        };
    }
    words
}
