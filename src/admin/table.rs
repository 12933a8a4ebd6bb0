//! Result sets of admin commands and their wire form (`RowDescription`, `DataRow`), in text or, for
//! extended-protocol clients that ask for it, binary format.

use bytes::{BufMut, BytesMut};

use crate::protocol::codec;

/// `int8` and `text` type OIDs.
const INT8_OID: i32 = 20;
const TEXT_OID: i32 = 25;

/// A column's type: numbers are `int8` (so drivers read them as integers), the rest `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
}

/// A result set: column names and kinds, and rows of optional (NULL) text values.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<(&'static str, Kind)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Kind)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// `RowDescription`; `binary` per the client's result format codes.
    pub fn write_description(&self, out: &mut BytesMut, formats: &[i16]) {
        let at = codec::begin(out, b'T');
        out.put_i16(self.columns.len() as i16);
        for (i, (name, kind)) in self.columns.iter().enumerate() {
            codec::put_cstr(out, name.as_bytes());
            out.put_i32(0); // table oid
            out.put_i16(0); // column number
            let (oid, size) = match kind {
                Kind::Int => (INT8_OID, 8),
                Kind::Text => (TEXT_OID, -1),
            };
            out.put_i32(oid);
            out.put_i16(size);
            out.put_i32(-1); // type modifier
            out.put_i16(format_of(formats, i));
        }
        codec::finish(out, at);
    }

    /// One `DataRow` per row.
    pub fn write_rows(&self, out: &mut BytesMut, formats: &[i16]) {
        for row in &self.rows {
            let at = codec::begin(out, b'D');
            out.put_i16(row.len() as i16);
            for (i, value) in row.iter().enumerate() {
                let binary_int = format_of(formats, i) == 1
                    && self.columns.get(i).map(|c| c.1) == Some(Kind::Int);
                match value {
                    None => out.put_i32(-1),
                    Some(v) if binary_int => {
                        out.put_i32(8);
                        out.put_i64(v.parse().unwrap_or(0));
                    }
                    Some(v) => {
                        out.put_i32(v.len() as i32);
                        out.put_slice(v.as_bytes());
                    }
                }
            }
            codec::finish(out, at);
        }
    }
}

/// The format code for column `i`: none given means text, one applies to all.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

/// Shorthands for building rows.
pub fn text(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

pub fn int(v: impl Into<i128>) -> Option<String> {
    Some(v.into().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_go_binary_when_asked_and_text_otherwise() {
        let mut table = Table::new(&[("n", Kind::Int), ("s", Kind::Text)]);
        table.push(vec![int(7), text("x")]);
        let mut text_rows = BytesMut::new();
        table.write_rows(&mut text_rows, &[]);
        assert_eq!(&text_rows[..], b"D\0\0\0\x10\0\x02\0\0\0\x017\0\0\0\x01x");
        let mut binary_rows = BytesMut::new();
        table.write_rows(&mut binary_rows, &[1]);
        assert_eq!(
            &binary_rows[..],
            b"D\0\0\0\x17\0\x02\0\0\0\x08\0\0\0\0\0\0\0\x07\0\0\0\x01x"
        );
    }
}
