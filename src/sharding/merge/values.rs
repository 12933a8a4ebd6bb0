//! The few value types a merge decodes, by type OID and format: to order rows and pick min/max
//! ([`SortValue`]), to tell GROUP BY keys apart ([`KeyPart`]), and to add up aggregate partials.
//! Anything else stays bytes and goes to the client exactly as a shard sent it.

use std::cmp::Ordering;

use bytes::Bytes;

use super::error::MergeError;
use super::numeric::Numeric;
use super::wire::{Column, Format};
use super::{datetime, float};

/// Type OIDs (pg_type.dat).
pub(super) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
}

/// A value that orders as Postgres orders its type. Values of one column share a variant.
#[derive(Debug, Clone)]
pub(super) enum SortValue {
    /// Integers, booleans, dates and times (as days or microseconds).
    Int(i128),
    Float(f64),
    Numeric(Numeric),
    /// Text in C order, `name`, `bytea`, `uuid`: compared byte by byte.
    Bytes(Bytes),
}

impl SortValue {
    pub(super) fn cmp(&self, other: &SortValue) -> Ordering {
        use SortValue::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => float::cmp(*a, *b),
            (Numeric(a), Numeric(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

/// Decodes `value` of column `col` for ordering. `bytewise_text` says whether text types may be
/// compared byte by byte (the C collation); `what` names the use in errors.
pub(super) fn sort_value(
    col: &Column,
    value: &Bytes,
    bytewise_text: bool,
    what: &'static str,
) -> Result<SortValue, MergeError> {
    use SortValue::*;
    let text = col.format == Format::Text;
    Ok(match col.type_oid {
        oid::BOOL => Int(match (text, value.as_ref()) {
            (true, b"t") | (false, [1]) => 1,
            (true, b"f") | (false, [0]) => 0,
            _ => return Err(MergeError::Malformed("boolean value")),
        }),
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => Int(integer(col, value)?.into()),
        oid::FLOAT4 | oid::FLOAT8 => Float(float_value(col, value)?),
        oid::NUMERIC => Numeric(numeric(col, value)?),
        oid::TEXT | oid::VARCHAR if bytewise_text => Bytes(value.clone()),
        oid::BPCHAR if bytewise_text => Bytes(trim_spaces(value)),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR => return Err(MergeError::CollatedText),
        // `name` always sorts in C order.
        oid::NAME | oid::UUID => Bytes(value.clone()),
        oid::BYTEA if text && !value.starts_with(b"\\x") => return Err(MergeError::ByteaOutput),
        // Lowercase hex keeps the bytes' order.
        oid::BYTEA => Bytes(value.clone()),
        oid::DATE if text => Int(datetime::date(value)?),
        oid::DATE => Int(be_i32(value)?.into()),
        oid::TIME if text => Int(datetime::time(value)?),
        oid::TIMESTAMP if text => Int(datetime::timestamp(value)?),
        oid::TIMESTAMPTZ if text => Int(datetime::timestamptz(value)?),
        oid::TIME | oid::TIMESTAMP | oid::TIMESTAMPTZ => Int(be_i64(value)?.into()),
        type_oid => return Err(MergeError::UnsupportedType { what, type_oid }),
    })
}

/// One value of a GROUP BY key, such that two values are equal exactly when Postgres' `=` says so
/// (deterministic collations assumed for text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum KeyPart {
    Null,
    Bytes(Bytes),
    Int(i128),
    /// [`float::canonical_bits`].
    Float(u64),
    /// [`Numeric::normalized`].
    Numeric(Numeric),
}

pub(super) fn key_part(col: &Column, value: Option<&Bytes>) -> Result<KeyPart, MergeError> {
    let Some(value) = value else {
        return Ok(KeyPart::Null);
    };
    Ok(match col.type_oid {
        // One value, one text and one binary form: the bytes are the key.
        oid::BOOL
        | oid::BYTEA
        | oid::CHAR
        | oid::NAME
        | oid::INT2
        | oid::INT4
        | oid::INT8
        | oid::OID
        | oid::TEXT
        | oid::VARCHAR
        | oid::DATE
        | oid::TIME
        | oid::TIMESTAMP
        | oid::UUID => KeyPart::Bytes(value.clone()),
        // The same instant prints differently under different TimeZone settings.
        oid::TIMESTAMPTZ if col.format == Format::Text => {
            KeyPart::Int(datetime::timestamptz(value)?)
        }
        oid::TIMESTAMPTZ => KeyPart::Bytes(value.clone()),
        // 'a' = 'a  ' for character(n).
        oid::BPCHAR => KeyPart::Bytes(trim_spaces(value)),
        oid::FLOAT4 | oid::FLOAT8 => {
            KeyPart::Float(float::canonical_bits(float_value(col, value)?))
        }
        oid::NUMERIC => KeyPart::Numeric(numeric(col, value)?.normalized()),
        type_oid => {
            return Err(MergeError::UnsupportedType {
                what: "group by",
                type_oid,
            })
        }
    })
}

fn trim_spaces(value: &Bytes) -> Bytes {
    let len = value.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    value.slice(..len)
}

fn be_i16(value: &[u8]) -> Result<i16, MergeError> {
    let bytes = value
        .try_into()
        .map_err(|_| MergeError::Malformed("int2"))?;
    Ok(i16::from_be_bytes(bytes))
}

fn be_i32(value: &[u8]) -> Result<i32, MergeError> {
    let bytes = value
        .try_into()
        .map_err(|_| MergeError::Malformed("4-byte value"))?;
    Ok(i32::from_be_bytes(bytes))
}

fn be_i64(value: &[u8]) -> Result<i64, MergeError> {
    let bytes = value
        .try_into()
        .map_err(|_| MergeError::Malformed("8-byte value"))?;
    Ok(i64::from_be_bytes(bytes))
}

/// An int2, int4, int8 or oid value.
pub(super) fn integer(col: &Column, value: &[u8]) -> Result<i64, MergeError> {
    if col.format == Format::Text {
        let s = std::str::from_utf8(value).map_err(|_| MergeError::Malformed("integer"))?;
        return s.parse().map_err(|_| MergeError::Malformed("integer"));
    }
    match col.type_oid {
        oid::INT2 => be_i16(value).map(i64::from),
        oid::INT4 => be_i32(value).map(i64::from),
        oid::OID => be_i32(value).map(|v| i64::from(v as u32)),
        _ => be_i64(value),
    }
}

/// A float4 or float8 value (float4 widened exactly).
pub(super) fn float_value(col: &Column, value: &[u8]) -> Result<f64, MergeError> {
    match (col.format, col.type_oid) {
        (Format::Text, _) => float::parse(value),
        (Format::Binary, oid::FLOAT4) => {
            let bytes = value
                .try_into()
                .map_err(|_| MergeError::Malformed("float4"))?;
            Ok(f64::from(f32::from_be_bytes(bytes)))
        }
        (Format::Binary, _) => Ok(f64::from_bits(be_i64(value)? as u64)),
    }
}

pub(super) fn numeric(col: &Column, value: &[u8]) -> Result<Numeric, MergeError> {
    match col.format {
        Format::Text => Numeric::parse_text(value),
        Format::Binary => Numeric::decode_binary(value),
    }
}

/// An int8 as `int8out` or `int8send` writes it.
pub(super) fn encode_int8(v: i64, format: Format) -> Vec<u8> {
    match format {
        Format::Text => v.to_string().into_bytes(),
        Format::Binary => v.to_be_bytes().to_vec(),
    }
}

pub(super) fn encode_numeric(v: &Numeric, format: Format) -> Vec<u8> {
    match format {
        Format::Text => v.to_text().into_bytes(),
        Format::Binary => v.to_binary(),
    }
}

/// A float8 (or float4 when `real`) as Postgres writes it; text needs extra_float_digits >= 1.
pub(super) fn encode_float(
    v: f64,
    real: bool,
    format: Format,
    shortest: bool,
) -> Result<Vec<u8>, MergeError> {
    Ok(match (format, real) {
        (Format::Text, _) if !shortest => return Err(MergeError::FloatDigits),
        (Format::Text, true) => float::format_f32(v as f32).into_bytes(),
        (Format::Text, false) => float::format_f64(v).into_bytes(),
        (Format::Binary, true) => (v as f32).to_be_bytes().to_vec(),
        (Format::Binary, false) => v.to_be_bytes().to_vec(),
    })
}
