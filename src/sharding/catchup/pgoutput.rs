//! A decoder for the `pgoutput` logical replication messages, protocol version 1, as returned one
//! message per row by `pg_logical_slot_peek_binary_changes`. Pure: bytes in, a [`Message`] or a
//! [`DecodeError`] out (never a panic, whatever the bytes).

use thiserror::Error;

/// A bad or truncated message; the text says where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A transaction starts; `final_lsn` is its commit record's LSN.
    Begin {
        final_lsn: u64,
        xid: u32,
    },
    /// A transaction committed; `end_lsn` is the end of its commit record (where a slot that
    /// consumed it advances to).
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    /// The transaction came from another replication origin.
    Origin {
        name: String,
    },
    /// A relation's description, sent before the first change to it in a decoding session.
    Relation(Relation),
    /// A data type's name, sent before a relation using a non-built-in type.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the old key ('K') or whole old row ('O') when the replica identity changed or is
    /// FULL.
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    /// `old` is the old key ('K') or whole old row ('O').
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
        options: u8,
    },
    /// A `pg_logical_emit_message` message (only its prefix is kept).
    Message {
        prefix: String,
    },
}

/// A relation as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not modify, so it was not sent.
    UnchangedToast,
    /// The value in text format.
    Text(Vec<u8>),
}

/// A row's values, in the relation's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<Value>);

/// Decodes one message; trailing bytes after it are an error.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let kind = r.u8("message type")?;
    let message = match kind {
        b'B' => Message::Begin {
            final_lsn: r.u64("begin final LSN")?,
            xid: {
                let _commit_time = r.u64("begin timestamp")?;
                r.u32("begin xid")?
            },
        },
        b'C' => {
            let _flags = r.u8("commit flags")?;
            let commit_lsn = r.u64("commit LSN")?;
            let end_lsn = r.u64("commit end LSN")?;
            let _commit_time = r.u64("commit timestamp")?;
            Message::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        b'O' => {
            let _origin_lsn = r.u64("origin LSN")?;
            Message::Origin {
                name: r.string("origin name")?,
            }
        }
        b'R' => Message::Relation(relation(&mut r)?),
        b'Y' => Message::Type {
            oid: r.u32("type oid")?,
            namespace: r.string("type namespace")?,
            name: r.string("type name")?,
        },
        b'I' => {
            let relation = r.u32("insert relation")?;
            r.expect(b'N', "insert new tuple marker")?;
            Message::Insert {
                relation,
                new: tuple(&mut r)?,
            }
        }
        b'U' => {
            let relation = r.u32("update relation")?;
            let mut marker = r.u8("update tuple marker")?;
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some(tuple(&mut r)?);
                marker = r.u8("update new tuple marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError(format!(
                    "update: unexpected tuple marker 0x{marker:02x}"
                )));
            }
            Message::Update {
                relation,
                old,
                new: tuple(&mut r)?,
            }
        }
        b'D' => {
            let relation = r.u32("delete relation")?;
            let marker = r.u8("delete tuple marker")?;
            if marker != b'K' && marker != b'O' {
                return Err(DecodeError(format!(
                    "delete: unexpected tuple marker 0x{marker:02x}"
                )));
            }
            Message::Delete {
                relation,
                old: tuple(&mut r)?,
            }
        }
        b'T' => {
            let count = r.u32("truncate relation count")?;
            let options = r.u8("truncate options")?;
            // Each oid takes 4 bytes: a count beyond the buffer is rejected before allocating.
            if (count as usize).saturating_mul(4) > r.remaining() {
                return Err(DecodeError(format!(
                    "truncate: {count} relations do not fit in the message"
                )));
            }
            let relations = (0..count)
                .map(|_| r.u32("truncate relation"))
                .collect::<Result<_, _>>()?;
            Message::Truncate { relations, options }
        }
        b'M' => {
            let _flags = r.u8("message flags")?;
            let _lsn = r.u64("message LSN")?;
            let prefix = r.string("message prefix")?;
            let len = r.u32("message length")?;
            r.take(len as usize, "message content")?;
            Message::Message { prefix }
        }
        other => return Err(DecodeError(format!("unknown message type 0x{other:02x}"))),
    };
    if r.remaining() != 0 {
        return Err(DecodeError(format!(
            "{} unexpected trailing bytes after message '{}'",
            r.remaining(),
            kind as char
        )));
    }
    Ok(message)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("relation oid")?;
    let namespace = r.string("relation namespace")?;
    let name = r.string("relation name")?;
    let replica_identity = r.u8("relation replica identity")?;
    let count = r.u16("relation column count")?;
    let mut columns = Vec::with_capacity(usize::from(count).min(r.remaining()));
    for _ in 0..count {
        let flags = r.u8("column flags")?;
        columns.push(Column {
            key: flags & 1 == 1,
            name: r.string("column name")?,
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let count = r.u16("tuple column count")?;
    // Each value takes at least one byte: never reserve more than the buffer could hold.
    let mut values = Vec::with_capacity(usize::from(count).min(r.remaining()));
    for _ in 0..count {
        let value = match r.u8("tuple value kind")? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => {
                let len = r.u32("text value length")?;
                Value::Text(r.take(len as usize, "text value")?.to_vec())
            }
            other => {
                return Err(DecodeError(format!(
                    "unexpected tuple value kind 0x{other:02x} (protocol version 1 sends n, u or t)"
                )))
            }
        };
        values.push(value);
    }
    Ok(Tuple(values))
}

/// A bounds-checked cursor over a message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError(format!(
                "truncated message: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), DecodeError> {
        match self.u8(what)? {
            b if b == byte => Ok(()),
            other => Err(DecodeError(format!(
                "{what}: expected '{}', got 0x{other:02x}",
                byte as char
            ))),
        }
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated string, which must be UTF-8.
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError(format!("truncated message: {what} has no terminator")))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| DecodeError(format!("{what} is not UTF-8")))?
            .to_owned();
        self.pos += end + 1;
        Ok(text)
    }
}

#[cfg(test)]
#[path = "pgoutput_tests.rs"]
mod tests;
