//! Arrays of keys bound to `key = ANY($n)`: Postgres' text form (`{1,2,NULL}`, `{"a b","c"}`,
//! `[0:1]={1,2}`, nested braces) and its binary form (dimensions, element oid, elements). Elements
//! of any dimension count, as `ANY` flattens arrays. `None` elements are NULLs.

use super::ResolveError;
use crate::protocol::codec::BodyReader;
use crate::sharding::key::{KeyType, ShardKey};

/// At most this many elements are read: a key list longer than that is not a routing question.
const MAX_ELEMENTS: usize = 1 << 20;

/// The text form, as `array_in` reads it (with `,` as the delimiter, which every key type uses).
pub(super) fn text(value: &[u8], key_type: KeyType) -> Result<Vec<Option<ShardKey>>, ResolveError> {
    let bad = ResolveError::Array;
    let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    let mut rest = text.trim_start();
    if rest.starts_with('[') {
        // Dimension decoration: `[1:3]={…}`.
        let eq = rest.find('=').ok_or(bad("dimensions without '='"))?;
        rest = rest[eq + 1..].trim_start();
    }
    let bytes = rest.as_bytes();
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut expect_element = false;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                expect_element = true;
                i += 1;
            }
            b'}' => {
                depth = depth.checked_sub(1).ok_or(bad("unbalanced braces"))?;
                expect_element = false;
                i += 1;
                if depth == 0 {
                    return match rest[i..].trim().is_empty() {
                        true => Ok(keys),
                        false => Err(bad("text after the closing brace")),
                    };
                }
            }
            b',' => {
                expect_element = true;
                i += 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ if depth == 0 || !expect_element => return Err(bad("element outside braces")),
            b'"' => {
                let (element, end) = quoted(rest, i + 1)?;
                keys.push(Some(ShardKey::from_text(key_type, element.as_bytes())?));
                i = end;
                expect_element = false;
            }
            _ => {
                let end = rest[i..]
                    .find([',', '}', '{'])
                    .map_or(rest.len(), |p| i + p);
                let element = rest[i..end].trim_end();
                if element.contains('\\') {
                    return Err(bad("backslash in an unquoted element"));
                }
                keys.push(match element.eq_ignore_ascii_case("null") {
                    true => None,
                    false => Some(ShardKey::from_text(key_type, element.as_bytes())?),
                });
                i = end;
                expect_element = false;
            }
        }
        if keys.len() > MAX_ELEMENTS {
            return Err(bad("too many elements"));
        }
    }
    Err(bad("missing closing brace"))
}

/// A `"…"` element starting after its quote: its unescaped text and the index after the closing
/// quote.
fn quoted(text: &str, start: usize) -> Result<(String, usize), ResolveError> {
    let mut out = String::new();
    let mut chars = text[start..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + at + 1)),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(ResolveError::Array("unterminated quoted element"))
}

/// Element type oids whose binary form [`ShardKey::from_binary`] reads as `key_type`.
fn element_fits(oid: u32, key_type: KeyType) -> bool {
    match key_type {
        KeyType::BigInt | KeyType::Integer => matches!(oid, 20 | 21 | 23), // int8, int2, int4
        KeyType::Text => matches!(oid, 25 | 1043),                         // text, varchar
        KeyType::Uuid => oid == 2950,
    }
}

/// The binary form: ndim, has-nulls flag, element oid, (length, lower bound) per dimension, then
/// each element as a length (-1 for NULL) and its bytes.
pub(super) fn binary(
    value: &[u8],
    key_type: KeyType,
) -> Result<Vec<Option<ShardKey>>, ResolveError> {
    let bad = ResolveError::Array;
    let mut reader = BodyReader::new(value);
    let dimensions = reader.i32()?;
    let _has_nulls = reader.i32()?;
    let oid = reader.i32()? as u32;
    if !(0..=6).contains(&dimensions) {
        return Err(bad("bad number of dimensions"));
    }
    let mut count = usize::from(dimensions > 0);
    for _ in 0..dimensions {
        let len = usize::try_from(reader.i32()?).map_err(|_| bad("negative dimension"))?;
        reader.i32()?; // lower bound
        count = count.checked_mul(len).ok_or(bad("too many elements"))?;
    }
    if count > MAX_ELEMENTS {
        return Err(bad("too many elements"));
    }
    if count > 0 && !element_fits(oid, key_type) {
        return Err(ResolveError::ArrayType(oid));
    }
    let mut keys = Vec::with_capacity(count.min(reader.remaining().len() / 4));
    for _ in 0..count {
        keys.push(match reader.i32()? {
            -1 => None,
            len => {
                let len = usize::try_from(len).map_err(|_| bad("negative element length"))?;
                Some(ShardKey::from_binary(key_type, reader.bytes(len)?)?)
            }
        });
    }
    match reader.remaining().is_empty() {
        true => Ok(keys),
        false => Err(bad("bytes after the last element")),
    }
}
