//! Wire frames of protocol v3: header peeking with a length cap, body readers, and message builders.
//!
//! The proxy moves frames, not values: it looks at a frame's tag and length and decodes a body only when
//! routing or bookkeeping needs it.

use bytes::{BufMut, BytesMut};

/// A tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// A frame header that cannot be right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("message length {0} is invalid")]
    BadLength(i32),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("message body is truncated or malformed ({0})")]
    Malformed(&'static str),
}

/// The tag and total size (header included) of the frame at the start of `buf`, once its header is there.
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, CodecError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(CodecError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(CodecError::TooLarge { len: total, max });
    }
    Ok(Some((buf[0], total)))
}

/// Reads fields out of a message body; every read checks bounds.
pub struct BodyReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BodyReader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(CodecError::Malformed("byte"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, CodecError> {
        let bytes = self.bytes(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, CodecError> {
        let bytes = self.bytes(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(CodecError::Malformed("field runs past the end"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], CodecError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(CodecError::Malformed("unterminated string"))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    pub fn cstr_utf8(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.cstr()?).map_err(|_| CodecError::Malformed("string is not UTF-8"))
    }

    /// A NUL-terminated SQL text, for reading only: a client whose `client_encoding` is not UTF-8
    /// sends bytes that are not UTF-8, which are replaced here (`Cow::Owned` then) while the
    /// original bytes are what goes to the server.
    pub fn cstr_text(&mut self) -> Result<std::borrow::Cow<'a, str>, CodecError> {
        Ok(String::from_utf8_lossy(self.cstr()?))
    }
}

/// Starts a frame with `tag`; returns the offset of its length field, to be patched by [`finish`].
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Writes the length of the frame begun at `at`.
pub fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// Appends a whole frame with the given body.
pub fn put_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_frame(out, b'Z', &[status]);
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let at = begin(out, b'S');
    put_cstr(out, name.as_bytes());
    put_cstr(out, value.as_bytes());
    finish(out, at);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_u8(b'K');
    out.put_i32(12);
    out.put_i32(pid);
    out.put_i32(secret);
}

/// `Authentication*` with a sub-code and payload.
pub fn authentication(out: &mut BytesMut, code: i32, payload: &[u8]) {
    out.put_u8(b'R');
    out.put_i32(8 + payload.len() as i32);
    out.put_i32(code);
    out.put_slice(payload);
}

/// `CommandComplete` with its tag (`SELECT 3`, `BEGIN`, …).
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    let at = begin(out, b'C');
    put_cstr(out, tag.as_bytes());
    finish(out, at);
}

/// A simple `Query` frame.
pub fn query(out: &mut BytesMut, sql: &str) {
    let at = begin(out, b'Q');
    put_cstr(out, sql.as_bytes());
    finish(out, at);
}

/// Fields of an `ErrorResponse` or `NoticeResponse`.
pub fn error_fields(
    out: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
) {
    let at = begin(out, tag);
    out.put_u8(b'S');
    put_cstr(out, severity.as_bytes());
    out.put_u8(b'V');
    put_cstr(out, severity.as_bytes());
    out.put_u8(b'C');
    put_cstr(out, code.as_bytes());
    out.put_u8(b'M');
    put_cstr(out, message.as_bytes());
    if let Some(detail) = detail {
        out.put_u8(b'D');
        put_cstr(out, detail.as_bytes());
    }
    out.put_u8(0);
    finish(out, at);
}

/// Pulls the SQLSTATE and message out of an `ErrorResponse`/`NoticeResponse` body (for logs and decisions).
pub fn parse_error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    let mut reader = BodyReader::new(body);
    while let Ok(field) = reader.u8() {
        if field == 0 {
            break;
        }
        let Ok(value) = reader.cstr() else { break };
        match field {
            b'C' => code = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Whether an `ErrorResponse` body ends the server's session (`FATAL` or `PANIC`).
pub fn error_is_fatal(body: &[u8]) -> bool {
    let mut reader = BodyReader::new(body);
    while let Ok(field) = reader.u8() {
        if field == 0 {
            break;
        }
        let Ok(value) = reader.cstr() else { break };
        if field == b'V' || field == b'S' {
            return value == b"FATAL" || value == b"PANIC";
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_read_lossily() {
        let mut reader = BodyReader::new(b"select '\xe9'\0select 1\0");
        let latin1 = reader.cstr_text().expect("terminated");
        assert!(matches!(latin1, std::borrow::Cow::Owned(_)));
        assert_eq!(latin1, "select '\u{fffd}'");
        let utf8 = reader.cstr_text().expect("terminated");
        assert!(matches!(utf8, std::borrow::Cow::Borrowed("select 1")));
    }

    #[test]
    fn header_needs_five_bytes_and_checks_length() {
        assert_eq!(peek_header(b"Q\0\0", 100), Ok(None));
        assert_eq!(peek_header(b"Q\0\0\0\x08abcd", 100), Ok(Some((b'Q', 9))));
        assert_eq!(
            peek_header(b"Q\0\0\0\x02", 100),
            Err(CodecError::BadLength(2))
        );
        assert_eq!(
            peek_header(b"Q\x7f\0\0\0", 100),
            Err(CodecError::TooLarge {
                len: 0x7f00_0001,
                max: 100
            })
        );
        assert_eq!(
            peek_header(b"Q\xff\xff\xff\xff", 100),
            Err(CodecError::BadLength(-1))
        );
    }

    #[test]
    fn body_reader_never_reads_past_the_end() {
        let mut r = BodyReader::new(b"ab\0\x00\x01");
        assert_eq!(r.cstr().ok(), Some(&b"ab"[..]));
        assert!(r.i32().is_err());
        assert_eq!(r.i16().ok(), Some(1));
        assert!(r.u8().is_err());
        assert!(BodyReader::new(b"abc").cstr().is_err());
    }

    #[test]
    fn error_frame_round_trips() {
        let mut out = BytesMut::new();
        error_fields(&mut out, b'E', "ERROR", "53300", "pool is full", Some("d"));
        let (tag, len) = peek_header(&out, 1000).ok().flatten().unwrap_or((0, 0));
        assert_eq!((tag, len), (b'E', out.len()));
        let (code, message) = parse_error_fields(&out[5..]);
        assert_eq!((code.as_str(), message.as_str()), ("53300", "pool is full"));
    }
}
