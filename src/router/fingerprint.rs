//! Statement fingerprints (the plan cache's key) and routing hints in leading comments.
//!
//! The fingerprint hashes a normalized copy of the text: literals become one placeholder byte,
//! comments and runs of whitespace become one space (none next to brackets, commas and semicolons),
//! unquoted words are lowercased (Postgres folds them). Identifiers, keywords, operators and `$n`
//! parameters are kept, so texts with the same fingerprint differ only in what can never change a
//! classification. Strings are lexed with `standard_conforming_strings` on (the default since
//! Postgres 9.1).

use std::cell::RefCell;
use std::ops::Range;

use xxhash_rust::xxh3::xxh3_128;

use super::plan::Hint;
use super::session_ops::{skip_block_comment, skip_dollar_quote, skip_quoted};

/// Placeholder for a literal: a number, or a string in any quoting and with any prefix.
/// Numbers and strings share it so that `aid = 1` and `aid = '1'` share a plan.
const LITERAL: u8 = 0x01;
/// Normalization buffers that grew past this are given back after use.
const KEEP_BUFFER: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// A 128-bit key (xxh3-128) of the statement text, the same for texts that differ only in literal
/// values (numbers, `'…'` strings including the `E''`/`B''`/`X''`/`N''`/`U&''` forms, `$tag$…$tag$`
/// dollar quotes), comments, runs of whitespace and the case of unquoted words. Allocation-free on the
/// common path (a thread-local buffer is reused); never panics.
pub fn fingerprint(sql: &str) -> u128 {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            normalize_into(sql.as_bytes(), &mut *buffer);
            let key = xxh3_128(&buffer);
            if buffer.capacity() > KEEP_BUFFER {
                *buffer = Vec::with_capacity(1024);
            }
            key
        }
        Err(_) => {
            let mut own = Vec::with_capacity(sql.len());
            normalize_into(sql.as_bytes(), &mut own);
            xxh3_128(&own)
        }
    })
}

/// Byte ranges of the literals of `sql`, in order: exactly the tokens [`fingerprint`] replaces by its
/// placeholder (numbers without their sign, `'…'` strings with any `E`/`B`/`X`/`N`/`U&` prefix,
/// dollar quotes), so that "the n-th literal" means the same text to a cached plan and to each
/// execution of it. Same lexer as the fingerprint, separate output: `fingerprint` stays as it was.
pub fn literal_spans(sql: &str) -> Vec<Range<usize>> {
    let mut spans = LiteralSpans::default();
    normalize_into(sql.as_bytes(), &mut spans);
    spans.spans
}

/// Where the lexer's output goes: the normalized text for fingerprints, or only literal positions.
/// Generic rather than dynamic so the fingerprint's copy is compiled exactly as before.
trait Emit {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// An unquoted word, lowercased on the way out.
    fn word(&mut self, word: &[u8]);
    /// A literal token at `range` of the input.
    fn literal(&mut self, range: Range<usize>);
    /// The last byte emitted: spacing and the `t.5` rule depend on it.
    fn last(&self) -> Option<u8>;
}

impl Emit for Vec<u8> {
    #[inline]
    fn push(&mut self, b: u8) {
        Vec::push(self, b);
    }
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
    #[inline]
    fn word(&mut self, word: &[u8]) {
        let at = self.len();
        Vec::extend_from_slice(self, word);
        self[at..].make_ascii_lowercase();
    }
    #[inline]
    fn literal(&mut self, _range: Range<usize>) {
        Vec::push(self, LITERAL);
    }
    #[inline]
    fn last(&self) -> Option<u8> {
        self.as_slice().last().copied()
    }
}

/// Literal positions, plus the one byte of normalized output the lexer looks back at.
#[derive(Default)]
struct LiteralSpans {
    spans: Vec<Range<usize>>,
    last: Option<u8>,
}

impl Emit for LiteralSpans {
    fn push(&mut self, b: u8) {
        self.last = Some(b);
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        if let Some(b) = bytes.last() {
            self.last = Some(*b);
        }
    }
    fn word(&mut self, word: &[u8]) {
        if let Some(b) = word.last() {
            self.last = Some(b.to_ascii_lowercase());
        }
    }
    fn literal(&mut self, range: Range<usize>) {
        self.spans.push(range);
        self.last = Some(LITERAL);
    }
    fn last(&self) -> Option<u8> {
        self.last
    }
}

/// Writes the normalized form of `sql` into `out`.
fn normalize_into(sql: &[u8], out: &mut impl Emit) {
    let mut space = false;
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        let start = i;
        // Comments and whitespace only set `space`; everything else emits a token.
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                space = true;
                i += 1;
                continue;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                space = true;
                i = sql[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(sql.len(), |p| i + p + 1);
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                space = true;
                i = skip_block_comment(sql, i);
                continue;
            }
            _ => {}
        }
        if space
            && !out
                .last()
                .is_none_or(|last| is_self_delimiting(last) || is_self_delimiting(b))
        {
            out.push(b' ');
        }
        space = false;
        match b {
            b'\'' => {
                i = skip_quoted(sql, i, b'\'', false);
                out.literal(start..i);
            }
            b'"' => {
                i = skip_quoted(sql, i, b'"', false);
                out.extend_from_slice(&sql[start..i]);
            }
            b'$' if opens_dollar_quote(sql, i) => {
                i = skip_dollar_quote(sql, i);
                out.literal(start..i);
            }
            b'$' => {
                // `$1` (a parameter, kept) or a stray `$`.
                i = word_end(sql, i + 1);
                out.extend_from_slice(&sql[start..i]);
            }
            b'0'..=b'9' => {
                i = number_end(sql, i);
                out.literal(start..i);
            }
            b'.' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) && !after_word(out.last()) => {
                i = number_end(sql, i);
                out.literal(start..i);
            }
            _ if is_word_start(b) => {
                i = word_end(sql, i);
                let word = &sql[start..i];
                match string_prefix(word, &sql[i..]) {
                    Some(prefix_len) => {
                        // E'…' (backslash escapes), B'…', X'…', N'…', U&'…': a literal like any other.
                        let escapes = word.eq_ignore_ascii_case(b"e");
                        i = skip_quoted(sql, i + prefix_len, b'\'', escapes);
                        out.literal(start..i);
                    }
                    None => out.word(word),
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Whether the `$` at `i` opens a `$tag$` dollar quote (the tag is optional and does not start with
/// a digit: `$1` is a parameter). Tags are ASCII, as [`skip_dollar_quote`] expects.
pub(crate) fn opens_dollar_quote(sql: &[u8], i: usize) -> bool {
    let tag = &sql[i + 1..];
    let tag_len = tag
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(tag.len());
    tag.get(tag_len) == Some(&b'$') && !tag.first().is_some_and(u8::is_ascii_digit)
}

/// Punctuation that is always a token of its own, so spacing around it means nothing: `a (b)` and
/// `a(b)` lex alike. (Operator characters are not: `+ -` is two tokens, `+-` one.)
fn is_self_delimiting(b: u8) -> bool {
    matches!(b, b'(' | b')' | b',' | b';' | b'[' | b']')
}

/// Whether `b` starts an unquoted identifier or keyword (non-ASCII bytes are letters to Postgres).
fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// End of the identifier-like run starting at `i` (letters, digits, `_`, `$`, non-ASCII).
fn word_end(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && (is_word_start(sql[i]) || sql[i].is_ascii_digit() || sql[i] == b'$') {
        i += 1;
    }
    i
}

/// Whether the output so far ends in a word or a closing bracket, so that a following `.` is a
/// qualifier (`t.5` is not `t` then `.5`).
fn after_word(last: Option<u8>) -> bool {
    last.is_some_and(|b| is_word_start(b) || b.is_ascii_digit() || matches!(b, b'"' | b')' | b']'))
}

/// End of a numeric literal starting at `i`: digits and `_`, one fraction, an exponent, or a
/// `0x`/`0o`/`0b` radix prefix with its digits. Letters that follow start a new word, so a keyword
/// glued to a number (`1for`) is never swallowed.
fn number_end(sql: &[u8], start: usize) -> usize {
    let digits = |mut i: usize, ok: fn(&u8) -> bool| {
        while i < sql.len() && (ok(&sql[i]) || sql[i] == b'_') {
            i += 1;
        }
        i
    };
    if sql[start] == b'0'
        && matches!(
            sql.get(start + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
        && sql.get(start + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        return digits(start + 2, u8::is_ascii_hexdigit);
    }
    let mut i = digits(start, u8::is_ascii_digit);
    if sql.get(i) == Some(&b'.') && sql.get(i + 1) != Some(&b'.') {
        i = digits(i + 1, u8::is_ascii_digit);
    }
    if matches!(sql.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(sql.get(i + 1), Some(b'+' | b'-')));
        if sql.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1 + sign, u8::is_ascii_digit);
        }
    }
    i
}

/// If `word` is a string-literal prefix immediately followed by its quote, the number of bytes
/// between the word and the quote (0 for `E'`, 1 for the `&` of `U&'`).
fn string_prefix(word: &[u8], rest: &[u8]) -> Option<usize> {
    let [letter] = word else { return None };
    match (letter.to_ascii_lowercase(), rest) {
        (b'e' | b'b' | b'x' | b'n', [b'\'', ..]) => Some(0),
        (b'u', [b'&', b'\'', ..]) => Some(1),
        _ => None,
    }
}

/// The hint in the leading comment(s) of `sql`, if any: the first leading comment that is exactly
/// `pgscale: primary` or `pgscale: replica` (any case, any spacing). Cheap when the text does not
/// start with a comment.
pub fn leading_hint(sql: &str) -> Option<Hint> {
    let mut rest = sql.trim_start();
    loop {
        let body;
        if let Some(after) = rest.strip_prefix("--") {
            let (line, next) = after.split_once('\n').unwrap_or((after, ""));
            body = line;
            rest = next;
        } else if rest.starts_with("/*") {
            let end = skip_block_comment(rest.as_bytes(), 0).min(rest.len());
            let comment = &rest[..end];
            body = comment
                .strip_prefix("/*")
                .and_then(|c| c.strip_suffix("*/"))
                .unwrap_or("");
            rest = &rest[end..];
        } else {
            return None;
        }
        if let Some(hint) = parse_hint(body) {
            return Some(hint);
        }
        rest = rest.trim_start();
    }
}

/// `pgscale: primary` / `pgscale: replica`, whitespace-tolerant, case-insensitive.
fn parse_hint(body: &str) -> Option<Hint> {
    let body = body.trim();
    let prefix = body.get(..7)?;
    if !prefix.eq_ignore_ascii_case("pgscale") {
        return None;
    }
    let value = body[7..].trim_start().strip_prefix(':')?.trim();
    if value.eq_ignore_ascii_case("primary") {
        Some(Hint::Primary)
    } else if value.eq_ignore_ascii_case("replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
