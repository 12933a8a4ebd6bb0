//! Key values in expressions: which literal (by its position among the text's literals) or which
//! parameter an expression is, and whether a cast on the way keeps the value as written.

use std::ops::Range;

use sqlparser::ast::{
    ArrayElemTypeDef, CastKind, DataType, Expr, UnaryOperator, Value, ValueWithSpan,
};
use sqlparser::tokenizer::{Location, Span};

use crate::router::fingerprint::literal_spans;
use crate::sharding::key::KeyType;
use crate::sharding::plan::{KeyRef, Keys};

/// Maps sqlparser spans (line and column, 1-based, columns counting chars) to the lexer's literal
/// numbering. Built lazily: most statements never name a key by literal.
pub(super) struct Literals<'s> {
    sql: &'s str,
    spans: Option<Vec<Range<usize>>>,
    line_starts: Option<Vec<usize>>,
}

impl<'s> Literals<'s> {
    pub(super) fn new(sql: &'s str) -> Literals<'s> {
        Literals {
            sql,
            spans: None,
            line_starts: None,
        }
    }

    /// The number of the literal covering exactly `span`. Exactly: a value the lexer sees as two
    /// literals, or as something else, is no key (never a guess).
    pub(super) fn index(&mut self, span: Span) -> Option<u32> {
        let start = self.offset(span.start)?;
        let end = self.offset(span.end)?;
        let sql = self.sql;
        let spans = self.spans.get_or_insert_with(|| literal_spans(sql));
        let i = spans.binary_search_by_key(&start, |r| r.start).ok()?;
        if spans.get(i)?.end != end {
            return None;
        }
        u32::try_from(i).ok()
    }

    /// The byte offset of a location; the location just past the text's end is its length.
    fn offset(&mut self, at: Location) -> Option<usize> {
        let line = usize::try_from(at.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let sql = self.sql;
        let starts = self.line_starts.get_or_insert_with(|| {
            std::iter::once(0)
                .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line_start = *starts.get(line)?;
        let rest = sql.get(line_start..)?;
        match rest.char_indices().nth(column) {
            Some((i, _)) => Some(line_start + i),
            None => (rest.chars().count() == column).then_some(sql.len()),
        }
    }
}

/// The key value `expr` denotes, if it is a literal or a parameter as such: `5`, `-5`, `'5'`, `$1`,
/// through parentheses and casts to a type of the key's family (`$1::bigint`, `'5'::int8`,
/// `int8 '5'`). A cast that could change the value (`::numeric`, `::char(2)`, `COLLATE`) is no key.
pub(super) fn key_ref(expr: &Expr, key_type: KeyType, literals: &mut Literals) -> Option<KeyRef> {
    match expr {
        Expr::Nested(inner) => key_ref(inner, key_type, literals),
        Expr::Value(value) => value_ref(value, literals),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } if keeps_value(data_type, key_type) => key_ref(expr, key_type, literals),
        Expr::TypedString(typed) if keeps_value(&typed.data_type, key_type) => {
            match typed.value.value {
                Value::Placeholder(_) | Value::Null => None,
                _ => literals.index(typed.value.span).map(KeyRef::Literal),
            }
        }
        Expr::UnaryOp { op, expr } => {
            // Any literal, not only numbers: the plan must not depend on a literal's type, which
            // the fingerprint does not keep (`-'5'` shares `-5`'s plan, and fails to resolve).
            let Expr::Value(value) = expr.as_ref() else {
                return None;
            };
            if matches!(
                value.value,
                Value::Placeholder(_) | Value::Null | Value::Boolean(_)
            ) {
                return None;
            }
            let n = literals.index(value.span)?;
            match op {
                UnaryOperator::Minus => Some(KeyRef::NegLiteral(n)),
                UnaryOperator::Plus => Some(KeyRef::Literal(n)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A bare value: `$n`, or any literal but NULL and booleans (a key of the wrong type is the
/// resolver's to reject, with a message, at execution).
fn value_ref(value: &ValueWithSpan, literals: &mut Literals) -> Option<KeyRef> {
    match &value.value {
        Value::Placeholder(p) => {
            let n: u16 = p.strip_prefix('$')?.parse().ok()?;
            (n >= 1).then_some(KeyRef::Param(n))
        }
        Value::Null | Value::Boolean(_) => None,
        _ => literals.index(value.span).map(KeyRef::Literal),
    }
}

/// The array parameter of `key = ANY($n)` / `ANY($n::bigint[])`.
pub(super) fn array_param(expr: &Expr, key_type: KeyType) -> Option<u16> {
    match expr {
        Expr::Nested(inner) => array_param(inner, key_type),
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) => p.strip_prefix('$')?.parse().ok().filter(|n| *n >= 1),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type: DataType::Array(ArrayElemTypeDef::SquareBracket(element, _)),
            format: None,
        } if keeps_value(element, key_type) => array_param(expr, key_type),
        _ => None,
    }
}

/// Whether a cast to `data_type` leaves a key of `key_type` as written: the integer types for
/// integer keys (an out-of-range value errors in Postgres, it is never changed), unbounded text
/// types for text, `uuid` for uuids.
fn keeps_value(data_type: &DataType, key_type: KeyType) -> bool {
    match key_type {
        KeyType::BigInt | KeyType::Integer => matches!(
            data_type,
            DataType::Int(None)
                | DataType::Integer(None)
                | DataType::BigInt(None)
                | DataType::SmallInt(None)
                | DataType::Int2(None)
                | DataType::Int4(None)
                | DataType::Int8(None)
        ),
        KeyType::Text => matches!(
            data_type,
            DataType::Text | DataType::Varchar(None) | DataType::CharacterVarying(None)
        ),
        KeyType::Uuid => matches!(data_type, DataType::Uuid),
    }
}

/// Rows matching either of two restrictions of one table: the keys of both (`id = 1 OR id = 2`).
/// An array parameter combines with nothing but itself.
pub(super) fn either(a: &Keys, b: &Keys) -> Option<Keys> {
    if a == b {
        return Some(a.clone());
    }
    let refs = |k: &Keys| -> Option<Vec<KeyRef>> {
        match k {
            Keys::One(r) => Some(vec![*r]),
            Keys::AnyOf(refs) => Some(refs.to_vec()),
            Keys::ArrayParam(_) => None,
        }
    };
    let mut all = refs(a)?;
    for r in refs(b)? {
        if !all.contains(&r) {
            all.push(r);
        }
    }
    Some(Keys::AnyOf(all.into_boxed_slice()))
}
