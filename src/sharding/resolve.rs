//! Resolution, per execution: the key values a cached plan's [`KeyRef`]s point at, read from the
//! statement's text (literals) or its Bind message (parameters), and the shards that own them.
//!
//! NULL keys: `key = NULL` (or a NULL `$n`) matches no row, and an INSERT cannot place a row
//! without a key, so a single NULL key is an error ([`ResolveError::NullKey`]). In a list
//! (`IN (…)`, `= ANY($n)`) NULLs are skipped; a list with no key left (all NULL, or an empty array)
//! matches no row anywhere, and resolves to [`ShardSet::One`]`(0)`: any one shard gives the right,
//! empty, answer.

use std::ops::Range;

use thiserror::Error;

use super::key::{KeyError, KeyType, ShardKey};
use super::plan::{KeyRef, Keys};
use super::ring::Ring;
use crate::protocol::codec::{BodyReader, CodecError};
use crate::router::fingerprint::literal_spans;

mod array;
mod copy;

pub use copy::{copy_format, CopyFormat};

/// Why the shards of one execution cannot be known. Every message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    #[error("malformed Bind message: {0}")]
    Bind(#[from] CodecError),
    #[error("Bind message has {formats} parameter format codes for {params} parameters")]
    FormatCount { formats: usize, params: usize },
    #[error("Bind message uses unknown parameter format code {0}")]
    Format(i16),
    #[error("the shard key is parameter ${0}, but no parameters were bound")]
    NoParams(u16),
    #[error("the shard key is parameter ${n}, but only {bound} parameters were bound")]
    MissingParam { n: u16, bound: usize },
    #[error("the statement has fewer literals than its plan expects (literal {0})")]
    MissingLiteral(u32),
    #[error("a NULL shard key matches no row and cannot place one: give the shard key a value")]
    NullKey,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error(
        "shard key literals must be numbers, '…' strings or $$…$$ strings \
         (E'…' without escapes and N'…' also do)"
    )]
    LiteralForm,
    #[error("the array of shard keys is malformed ({0})")]
    Array(&'static str),
    #[error("the array of shard keys has elements of type oid {0}, not the shard key's type")]
    ArrayType(u32),
    #[error("the COPY options could not be read ({0})")]
    Copy(&'static str),
}

/// Which shards one execution touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSet {
    One(usize),
    /// Several, sorted, without duplicates (at least two, not all).
    Some(Vec<usize>),
    /// Every shard (also what a set of keys covering every shard becomes).
    All,
}

impl ShardSet {
    /// The set of `shards` (any order, duplicates allowed) among `total`; empty means the keys
    /// match no row, which any one shard answers (see the module doc).
    pub fn of(mut shards: Vec<usize>, total: usize) -> ShardSet {
        shards.sort_unstable();
        shards.dedup();
        match shards.as_slice() {
            [] => ShardSet::One(0),
            [one] => ShardSet::One(*one),
            _ if shards.len() >= total => ShardSet::All,
            _ => ShardSet::Some(shards),
        }
    }
}

/// One bound parameter: its format (0 text, 1 binary) and value (`None` is NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub binary: bool,
    pub value: Option<&'a [u8]>,
}

/// The parameters of a Bind message body (after the length), borrowed from it. Result formats are
/// not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParams<'a> {
    params: Vec<Param<'a>>,
}

impl<'a> BindParams<'a> {
    /// Parses a Bind body: portal, statement, parameter formats, parameter values. Any
    /// inconsistency is an error, never a panic.
    pub fn parse(body: &'a [u8]) -> Result<BindParams<'a>, ResolveError> {
        let mut reader = BodyReader::new(body);
        reader.cstr()?; // portal
        reader.cstr()?; // statement
        let format_count = usize::from(reader.i16()? as u16);
        let mut formats = Vec::with_capacity(format_count.min(reader.remaining().len() / 2));
        for _ in 0..format_count {
            formats.push(match reader.i16()? {
                0 => false,
                1 => true,
                other => return Err(ResolveError::Format(other)),
            });
        }
        let count = usize::from(reader.i16()? as u16);
        if !(formats.len() <= 1 || formats.len() == count) {
            return Err(ResolveError::FormatCount {
                formats: formats.len(),
                params: count,
            });
        }
        let mut params = Vec::with_capacity(count.min(reader.remaining().len() / 4));
        for i in 0..count {
            let binary = match formats.as_slice() {
                [] => false,
                [all] => *all,
                each => each[i],
            };
            let value = match reader.i32()? {
                -1 => None,
                len => {
                    let len = usize::try_from(len)
                        .map_err(|_| CodecError::Malformed("negative parameter length"))?;
                    Some(reader.bytes(len)?)
                }
            };
            params.push(Param { binary, value });
        }
        Ok(BindParams { params })
    }

    /// From parts (tests, and callers that decoded Bind themselves).
    pub fn new(params: Vec<Param<'a>>) -> BindParams<'a> {
        BindParams { params }
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Parameter `$n` (1-based).
    pub fn get(&self, n: u16) -> Result<Param<'a>, ResolveError> {
        usize::from(n)
            .checked_sub(1)
            .and_then(|i| self.params.get(i))
            .copied()
            .ok_or(ResolveError::MissingParam {
                n,
                bound: self.params.len(),
            })
    }
}

/// The texts of the literals of `sql`, in the order [`KeyRef::Literal`] counts them.
pub fn literal_values(sql: &str) -> Vec<&str> {
    literal_spans(sql)
        .into_iter()
        .filter_map(|range| sql.get(range))
        .collect()
}

/// The shards a keyed statement touches in this execution: `sql` is the text as sent (literals),
/// `params` its Bind parameters (extended protocol).
pub fn resolve(
    keys: &Keys,
    key_type: KeyType,
    sql: &str,
    params: Option<&BindParams>,
    ring: &Ring,
) -> Result<ShardSet, ResolveError> {
    let mut source = Source::new(sql, params);
    let total = ring.shards().len();
    match keys {
        Keys::One(r) => {
            let key = source.key(*r, key_type)?.ok_or(ResolveError::NullKey)?;
            Ok(ShardSet::One(ring.shard_of(&key)))
        }
        Keys::AnyOf(refs) => {
            let mut shards = Vec::with_capacity(refs.len());
            for r in refs.iter() {
                if let Some(key) = source.key(*r, key_type)? {
                    shards.push(ring.shard_of(&key));
                }
            }
            Ok(ShardSet::of(shards, total))
        }
        Keys::ArrayParam(n) => {
            let param = source.param(*n)?;
            let Some(value) = param.value else {
                return Ok(ShardSet::of(Vec::new(), total)); // `= ANY(NULL)`: no row
            };
            let keys = match param.binary {
                true => array::binary(value, key_type)?,
                false => array::text(value, key_type)?,
            };
            let shards = keys.iter().flatten().map(|k| ring.shard_of(k)).collect();
            Ok(ShardSet::of(shards, total))
        }
    }
}

/// The shard of each row of a multi-row INSERT (`rows` from [`ShardPlan::InsertRows`]). A NULL
/// key is an error: the row belongs nowhere.
///
/// [`ShardPlan::InsertRows`]: super::plan::ShardPlan::InsertRows
pub fn resolve_insert_rows(
    rows: &[KeyRef],
    key_type: KeyType,
    sql: &str,
    params: Option<&BindParams>,
    ring: &Ring,
) -> Result<Vec<usize>, ResolveError> {
    let mut source = Source::new(sql, params);
    rows.iter()
        .map(|r| {
            let key = source.key(*r, key_type)?.ok_or(ResolveError::NullKey)?;
            Ok(ring.shard_of(&key))
        })
        .collect()
}

/// Where key values come from in one execution; the text's literals are lexed on first use.
struct Source<'s, 'p> {
    sql: &'s str,
    spans: Option<Vec<Range<usize>>>,
    params: Option<&'p BindParams<'p>>,
}

impl<'s, 'p> Source<'s, 'p> {
    fn new(sql: &'s str, params: Option<&'p BindParams<'p>>) -> Source<'s, 'p> {
        Source {
            sql,
            spans: None,
            params,
        }
    }

    fn param(&self, n: u16) -> Result<Param<'p>, ResolveError> {
        self.params.ok_or(ResolveError::NoParams(n))?.get(n)
    }

    /// The key at `r`; `None` for NULL.
    fn key(&mut self, r: KeyRef, key_type: KeyType) -> Result<Option<ShardKey>, ResolveError> {
        let (n, negative) = match r {
            KeyRef::Param(n) => {
                let param = self.param(n)?;
                let Some(value) = param.value else {
                    return Ok(None);
                };
                return Ok(Some(match param.binary {
                    true => ShardKey::from_binary(key_type, value)?,
                    false => ShardKey::from_text(key_type, value)?,
                }));
            }
            KeyRef::Literal(n) => (n, false),
            KeyRef::NegLiteral(n) => (n, true),
        };
        let sql = self.sql;
        let spans = self.spans.get_or_insert_with(|| literal_spans(sql));
        let text = usize::try_from(n)
            .ok()
            .and_then(|i| spans.get(i))
            .and_then(|range| sql.get(range.clone()))
            .ok_or(ResolveError::MissingLiteral(n))?;
        literal_key(text, negative, key_type).map(Some)
    }
}

/// A literal's key: numbers and `'…'` as [`ShardKey::from_literal`] reads them, `N'…'` and `E'…'`
/// without backslashes like `'…'`, dollar quotes by their body.
fn literal_key(text: &str, negative: bool, key_type: KeyType) -> Result<ShardKey, ResolveError> {
    let bytes = text.as_bytes();
    if negative {
        if !bytes.first().is_some_and(u8::is_ascii_digit) {
            return Err(ResolveError::LiteralForm);
        }
        return Ok(ShardKey::from_literal(key_type, &format!("-{text}"))?);
    }
    match bytes {
        [b'0'..=b'9' | b'.', ..] | [b'\'', ..] => Ok(ShardKey::from_literal(key_type, text)?),
        [b'n' | b'N', b'\'', ..] => Ok(ShardKey::from_literal(key_type, &text[1..])?),
        [b'e' | b'E', b'\'', ..] if !text.contains('\\') => {
            Ok(ShardKey::from_literal(key_type, &text[1..])?)
        }
        [b'$', ..] => {
            let tag_end = text[1..].find('$').ok_or(ResolveError::LiteralForm)? + 2;
            let tag = &text[..tag_end];
            let body = text
                .strip_prefix(tag)
                .and_then(|rest| rest.strip_suffix(tag))
                .filter(|_| text.len() >= 2 * tag_end)
                .ok_or(ResolveError::LiteralForm)?;
            Ok(ShardKey::from_text(key_type, body.as_bytes())?)
        }
        _ => Err(ResolveError::LiteralForm),
    }
}

#[cfg(test)]
mod tests;
