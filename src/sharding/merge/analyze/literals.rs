//! Numbers whose text sqlparser reads unlike Postgres 16+: `0x1F`, `0o17`, `0b101` are integers
//! there, but sqlparser reads `0x1F` as the bit string `X'1F'` and `0b101` as `0 AS b101`, so the
//! shard query printed from its tree would compute something else. Such a number is found by its
//! source text: a hex string not written `X'…'`, or a number with a letter right after it.

use std::ops::ControlFlow;

use sqlparser::ast::{Query, Value, ValueWithSpan, Visit, Visitor};
use sqlparser::tokenizer::Location;

use crate::sharding::merge::error::Unmergeable;

/// Refuses `query` if a number in `sql` (its text) is glued to a name.
pub(super) fn check(sql: &str, query: &Query) -> Result<(), Unmergeable> {
    let lines = LineIndex::new(sql);
    let mut check = Check { sql, lines };
    match query.visit(&mut check) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(refusal) => Err(refusal),
    }
}

struct Check<'a> {
    sql: &'a str,
    lines: LineIndex,
}

impl Visitor for Check<'_> {
    type Break = Unmergeable;

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<Unmergeable> {
        let start = self.lines.offset(self.sql, value.span.start);
        let end = self.lines.offset(self.sql, value.span.end);
        let (Some(start), Some(end)) = (start, end) else {
            return ControlFlow::Continue(());
        };
        let bytes = self.sql.as_bytes();
        let glued = match &value.value {
            Value::HexStringLiteral(_) => !matches!(bytes.get(start), Some(b'x' | b'X')),
            Value::Number(..) => bytes
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_'),
            _ => false,
        };
        match glued {
            true => ControlFlow::Break(Unmergeable::GluedNumber),
            false => ControlFlow::Continue(()),
        }
    }
}

/// Byte offsets of line starts, to turn sqlparser's (line, column in chars) into byte offsets.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(sql: &str) -> LineIndex {
        let newlines = sql.match_indices('\n').map(|(i, _)| i + 1);
        LineIndex {
            starts: std::iter::once(0).chain(newlines).collect(),
        }
    }

    /// `None` for the empty location (line 0) or one outside the text.
    fn offset(&self, sql: &str, at: Location) -> Option<usize> {
        let line_start = *self
            .starts
            .get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let line = sql.get(line_start..)?;
        match line.char_indices().nth(column) {
            Some((i, _)) => Some(line_start + i),
            None if line.chars().count() == column => Some(sql.len()),
            None => None,
        }
    }
}
