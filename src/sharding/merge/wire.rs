//! The wire messages a merge reads and writes: RowDescription bodies in and out, DataRow bodies in,
//! complete DataRow frames out. Every length read from a shard is checked.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::MergeError;

/// How a column's values are encoded on the wire (the format code of Bind and RowDescription).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Code 0: the type's output function text.
    Text,
    /// Code 1: the type's send function bytes.
    Binary,
}

impl Format {
    /// The format code on the wire.
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }

    fn from_code(code: i16) -> Result<Format, MergeError> {
        match code {
            0 => Ok(Format::Text),
            1 => Ok(Format::Binary),
            other => Err(MergeError::UnknownFormat(other)),
        }
    }
}

/// One field of a RowDescription. The name is kept as bytes: it is in the client's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: Vec<u8>,
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    pub format: Format,
}

/// Reads big-endian integers off a message body, failing (not panicking) when it runs short.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MergeError> {
        if self.rest.len() < n {
            return Err(MergeError::Malformed(self.what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MergeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, MergeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, MergeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, MergeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn cstring(&mut self) -> Result<&'a [u8], MergeError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(MergeError::Malformed(self.what))?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }

    /// A field count: a non-negative int16.
    fn count(&mut self) -> Result<usize, MergeError> {
        usize::try_from(self.i16()?).map_err(|_| MergeError::Malformed(self.what))
    }
}

/// Parses a RowDescription body (after the type byte and length).
pub fn parse_row_description(body: &[u8]) -> Result<Vec<Column>, MergeError> {
    let mut r = Reader {
        rest: body,
        what: "RowDescription",
    };
    let n = r.count()?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(Column {
            name: r.cstring()?.to_vec(),
            table_oid: r.u32()?,
            attnum: r.i16()?,
            type_oid: r.u32()?,
            type_len: r.i16()?,
            type_mod: r.i32()?,
            format: Format::from_code(r.i16()?)?,
        });
    }
    if !r.rest.is_empty() {
        return Err(MergeError::Malformed("RowDescription"));
    }
    Ok(columns)
}

/// A complete RowDescription frame (`'T'`, length, body) for `columns`.
pub fn row_description_frame(columns: &[Column]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i16(columns.len() as i16);
    for c in columns {
        body.put_slice(&c.name);
        body.put_u8(0);
        body.put_u32(c.table_oid);
        body.put_i16(c.attnum);
        body.put_u32(c.type_oid);
        body.put_i16(c.type_len);
        body.put_i32(c.type_mod);
        body.put_i16(c.format.code());
    }
    frame(b'T', &body)
}

/// The CommandComplete tag of a SELECT that returned `rows` rows.
pub fn command_tag(rows: u64) -> String {
    format!("SELECT {rows}")
}

fn frame(kind: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(kind);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

/// A DataRow body split into its values (`None` = NULL), sharing the body's memory.
pub(super) fn fields(body: &Bytes) -> Result<Vec<Option<Bytes>>, MergeError> {
    let mut r = Reader {
        rest: body,
        what: "DataRow",
    };
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            out.push(None);
            continue;
        }
        let start = body.len() - r.rest.len();
        r.take(len as usize)?;
        out.push(Some(body.slice(start..start + len as usize)));
    }
    if !r.rest.is_empty() {
        return Err(MergeError::Malformed("DataRow"));
    }
    Ok(out)
}

/// Appends a DataRow frame of the first `keep` values of a DataRow body: the hidden trailing
/// columns are cut off without decoding anything.
pub(super) fn put_prefix_frame(
    out: &mut BytesMut,
    body: &[u8],
    keep: usize,
) -> Result<(), MergeError> {
    let mut r = Reader {
        rest: body,
        what: "DataRow",
    };
    let n = r.count()?;
    if keep > n {
        return Err(MergeError::Malformed("DataRow"));
    }
    for _ in 0..keep {
        let len = r.i32()?;
        if len > 0 {
            r.take(len as usize)?;
        }
    }
    let end = body.len() - r.rest.len();
    out.reserve(end + 5);
    out.put_u8(b'D');
    out.put_i32(end as i32 + 4);
    out.put_i16(keep as i16);
    out.put_slice(&body[2..end]);
    Ok(())
}

/// A DataRow frame of `values` (`None` = NULL).
pub(super) fn data_row_frame<'a>(
    values: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => body.put_i32(-1),
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v);
            }
        }
    }
    frame(b'D', &body)
}
