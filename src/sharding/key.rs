//! Shard keys: parsing each key type from its three input forms into one value, and the canonical
//! bytes that value hashes as.
//!
//! Canonical encoding, byte for byte:
//! - `integer` (int2/int4) and `bigint` (int8): the value as a signed 64-bit integer, 8 bytes
//!   big-endian (two's complement). An int4 `42` and an int8 `42` are the same key, so widening a
//!   column or a client binding int8 for an int4 column never moves a row.
//! - `text`: the string's UTF-8 bytes exactly as given (no case folding, trimming or Unicode
//!   normalization), no length prefix or terminator.
//! - `uuid`: its 16 bytes in the order they are written (RFC 4122 / Postgres binary order).
//!
//! There is no type tag: keys of a table all have the same type, and leaving the tag out keeps the
//! function easy to reproduce (e.g. `bigint 1` hashes the bytes `00 00 00 00 00 00 00 01`).

use thiserror::Error;

/// The Postgres type of a table's shard key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `bigint` / `int8`.
    BigInt,
    /// `integer` / `int4` (also `smallint` columns: their values fit too).
    Integer,
    /// `text` / `varchar`.
    Text,
    /// `uuid`.
    Uuid,
}

/// A parsed shard key value. Integers of both widths share one variant, so they compare and hash
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ShardKey {
    /// An `integer` or `bigint` value.
    Int(i64),
    /// A `text` value.
    Text(String),
    /// A `uuid` value, its 16 bytes.
    Uuid([u8; 16]),
}

/// Why a value could not become a shard key. Each carries no client data beyond lengths, so it is
/// safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("shard key is not an integer")]
    NotAnInteger,
    #[error("shard key is out of range for {0:?}")]
    OutOfRange(KeyType),
    #[error("shard key is not a valid uuid")]
    BadUuid,
    #[error("shard key is not valid UTF-8")]
    NotUtf8,
    #[error("binary shard key of {len} bytes is the wrong length for {ty:?}")]
    WrongLength { ty: KeyType, len: usize },
    #[error("shard key literal is not a plain number or '...' string")]
    UnsupportedLiteral,
}

impl ShardKey {
    /// Parses a SQL literal token as written in a statement: a number (`42`, `-42`) or a standard
    /// single-quoted string (`'42'`, `'o''brien'`), whose content is then read as a text-format
    /// value. `E'…'`, dollar quotes and casts are not accepted: the caller falls back to not
    /// knowing the shard.
    pub fn from_literal(ty: KeyType, literal: &str) -> Result<ShardKey, KeyError> {
        let literal = literal.trim_matches(|c: char| c.is_ascii_whitespace());
        if let Some(quoted) = literal.strip_prefix('\'') {
            let body = quoted
                .strip_suffix('\'')
                .ok_or(KeyError::UnsupportedLiteral)?;
            // Inside, a quote only appears doubled.
            if body.replace("''", "").contains('\'') {
                return Err(KeyError::UnsupportedLiteral);
            }
            return ShardKey::from_text(ty, body.replace("''", "'").as_bytes());
        }
        match ty {
            KeyType::BigInt | KeyType::Integer => ShardKey::from_text(ty, literal.as_bytes()),
            // A bare number is not a text or uuid literal.
            KeyType::Text | KeyType::Uuid => Err(KeyError::UnsupportedLiteral),
        }
    }

    /// Parses a text-format bind parameter (or a literal's content). Integers: optional
    /// surrounding ASCII whitespace, an optional sign, decimal digits. Uuids: 32 hex digits in
    /// either case, optionally in `{}`, with a hyphen allowed after any group of four (as
    /// Postgres' `uuid_in`). Text: the bytes, which must be UTF-8.
    pub fn from_text(ty: KeyType, text: &[u8]) -> Result<ShardKey, KeyError> {
        let text = std::str::from_utf8(text).map_err(|_| KeyError::NotUtf8)?;
        match ty {
            KeyType::BigInt | KeyType::Integer => parse_int(ty, text),
            KeyType::Text => Ok(ShardKey::Text(text.to_owned())),
            KeyType::Uuid => parse_uuid(text).map(ShardKey::Uuid),
        }
    }

    /// Parses a binary-format bind parameter: integers big-endian in 2, 4 or 8 bytes (int2, int4,
    /// int8 — a client may bind any width), uuids as 16 bytes, text as its UTF-8 bytes.
    pub fn from_binary(ty: KeyType, bytes: &[u8]) -> Result<ShardKey, KeyError> {
        match ty {
            KeyType::BigInt | KeyType::Integer => {
                let value = match *bytes {
                    [a, b] => i64::from(i16::from_be_bytes([a, b])),
                    [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                    _ => {
                        return Err(KeyError::WrongLength {
                            ty,
                            len: bytes.len(),
                        })
                    }
                };
                check_range(ty, value)
            }
            KeyType::Text => std::str::from_utf8(bytes)
                .map(|s| ShardKey::Text(s.to_owned()))
                .map_err(|_| KeyError::NotUtf8),
            KeyType::Uuid => <[u8; 16]>::try_from(bytes)
                .map(ShardKey::Uuid)
                .map_err(|_| KeyError::WrongLength {
                    ty,
                    len: bytes.len(),
                }),
        }
    }

    /// Calls `f` with the key's canonical bytes (see the module doc), without allocating.
    pub fn with_canonical_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            ShardKey::Int(value) => f(&value.to_be_bytes()),
            ShardKey::Text(text) => f(text.as_bytes()),
            ShardKey::Uuid(bytes) => f(bytes),
        }
    }
}

/// Decimal integer with optional sign and surrounding whitespace, range-checked for `ty`.
fn parse_int(ty: KeyType, text: &str) -> Result<ShardKey, KeyError> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyError::NotAnInteger);
    }
    // All digits, so the only failure left is overflow.
    let value = text
        .strip_prefix('+')
        .unwrap_or(text)
        .parse::<i64>()
        .map_err(|_| KeyError::OutOfRange(ty))?;
    check_range(ty, value)
}

/// An `integer` key must fit in int4, as Postgres would refuse it otherwise.
fn check_range(ty: KeyType, value: i64) -> Result<ShardKey, KeyError> {
    if ty == KeyType::Integer && i32::try_from(value).is_err() {
        return Err(KeyError::OutOfRange(ty));
    }
    Ok(ShardKey::Int(value))
}

/// Postgres' `uuid_in` syntax: optional braces, 32 hex digits, a hyphen allowed after each group of
/// four digits (but not at the end).
fn parse_uuid(text: &str) -> Result<[u8; 16], KeyError> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}').ok_or(KeyError::BadUuid)?,
        None => text,
    };
    let mut out = [0u8; 16];
    let mut digits = 0usize;
    let mut bytes = inner.bytes().peekable();
    while let Some(b) = bytes.next() {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(KeyError::BadUuid),
        };
        let slot = out.get_mut(digits / 2).ok_or(KeyError::BadUuid)?;
        *slot = (*slot << 4) | nibble;
        digits += 1;
        if digits.is_multiple_of(4) && digits < 32 && bytes.peek() == Some(&b'-') {
            bytes.next();
        }
    }
    if digits == 32 {
        Ok(out)
    } else {
        Err(KeyError::BadUuid)
    }
}

#[cfg(test)]
mod tests;
