//! `COPY sharded_table FROM STDIN`: the client's stream of rows (text or CSV format) cut into whole
//! rows, each sent to the shard that owns its key column's value. Rows are never decoded beyond
//! finding that one field; the bytes of each row go to its shard unchanged.

use thiserror::Error;

use super::key::{KeyType, ShardKey};
use super::ring::Ring;

/// The COPY data format, as the statement's options say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    /// Postgres' text format: rows end at a newline, fields split by `delimiter` (tab by default),
    /// backslash escapes, `\N` for NULL.
    Text { delimiter: u8 },
    /// CSV: fields split by `delimiter` (comma), quoted with `quote` (`"`), a quote inside a quoted
    /// field doubled or preceded by `escape`; `header` means the first line names the columns.
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
        header: bool,
    },
}

/// Why a row could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CopySplitError {
    #[error("COPY row {row} has no column {column} (the shard key)")]
    MissingKey { row: u64, column: usize },
    #[error("COPY row {row} has a NULL shard key; every row of a sharded table needs one")]
    NullKey { row: u64 },
    #[error("COPY row {row}: the shard key is not valid: {reason}")]
    BadKey { row: u64, reason: String },
}

/// Where a piece of the stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The CSV header line: every shard's COPY expects it.
    AllShards,
    Shard(usize),
}

/// Cuts a COPY stream into rows and places each by its key.
#[derive(Debug)]
pub struct RowSplitter {
    format: RowFormat,
    key_column: usize,
    key_type: KeyType,
    /// The start of a row whose end has not arrived yet.
    partial: Vec<u8>,
    header_pending: bool,
    rows: u64,
    /// Text format's end-of-data marker `\.` was seen: nothing after it is data.
    ended: bool,
}

impl RowSplitter {
    /// `key_column` is the key's 0-based position among the COPY's columns.
    pub fn new(format: RowFormat, key_column: usize, key_type: KeyType) -> RowSplitter {
        RowSplitter {
            header_pending: matches!(format, RowFormat::Csv { header: true, .. }),
            format,
            key_column,
            key_type,
            partial: Vec::new(),
            rows: 0,
            ended: false,
        }
    }

    /// Data rows placed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Feeds a chunk of the stream; calls `emit` with each complete row (newline included).
    pub fn push(
        &mut self,
        mut data: &[u8],
        ring: &Ring,
        emit: &mut impl FnMut(Destination, &[u8]),
    ) -> Result<(), CopySplitError> {
        while !data.is_empty() && !self.ended {
            let scan_from = self.partial.len();
            match self.row_end(data, scan_from) {
                Some(end) => {
                    let (row_part, rest) = data.split_at(end);
                    data = rest;
                    let row = if self.partial.is_empty() {
                        row_part.to_vec()
                    } else {
                        let mut row = std::mem::take(&mut self.partial);
                        row.extend_from_slice(row_part);
                        row
                    };
                    self.place(&row, ring, emit)?;
                }
                None => {
                    self.partial.extend_from_slice(data);
                    break;
                }
            }
        }
        Ok(())
    }

    /// The stream ended (CopyDone): a last row without a newline is still a row.
    pub fn finish(
        &mut self,
        ring: &Ring,
        emit: &mut impl FnMut(Destination, &[u8]),
    ) -> Result<(), CopySplitError> {
        if self.partial.is_empty() || self.ended {
            return Ok(());
        }
        let mut row = std::mem::take(&mut self.partial);
        row.push(b'\n');
        self.place(&row, ring, emit)
    }

    /// The length of `data`'s part that completes the current row, if the row ends in it.
    /// `scanned` bytes of the row are already in `partial` (CSV needs its quote state).
    fn row_end(&self, data: &[u8], _scanned: usize) -> Option<usize> {
        match self.format {
            RowFormat::Text { .. } => data.iter().position(|&b| b == b'\n').map(|p| p + 1),
            RowFormat::Csv { quote, escape, .. } => {
                // Quote state of the partial row, then continue through `data`.
                let mut in_quotes = false;
                let mut skip = false;
                let all = self.partial.iter().chain(data.iter()).enumerate();
                for (i, &b) in all {
                    if skip {
                        skip = false;
                        continue;
                    }
                    if in_quotes {
                        if b == escape && escape != quote {
                            skip = true;
                        } else if b == quote {
                            in_quotes = false;
                        }
                    } else if b == quote {
                        in_quotes = true;
                    } else if b == b'\n' && i >= self.partial.len() {
                        return Some(i - self.partial.len() + 1);
                    }
                }
                None
            }
        }
    }

    fn place(
        &mut self,
        row: &[u8],
        ring: &Ring,
        emit: &mut impl FnMut(Destination, &[u8]),
    ) -> Result<(), CopySplitError> {
        if self.header_pending {
            self.header_pending = false;
            emit(Destination::AllShards, row);
            return Ok(());
        }
        let line = row.strip_suffix(b"\n").unwrap_or(row);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(self.format, RowFormat::Text { .. }) && line == b"\\." {
            self.ended = true;
            return Ok(());
        }
        self.rows += 1;
        let row_number = self.rows;
        let key = match self.format {
            RowFormat::Text { delimiter } => text_field(line, delimiter, self.key_column),
            RowFormat::Csv {
                delimiter,
                quote,
                escape,
                ..
            } => csv_field(line, delimiter, quote, escape, self.key_column),
        };
        let value = match key {
            Field::Missing => {
                return Err(CopySplitError::MissingKey {
                    row: row_number,
                    column: self.key_column + 1,
                })
            }
            Field::Null => return Err(CopySplitError::NullKey { row: row_number }),
            Field::Value(value) => value,
        };
        let key =
            ShardKey::from_text(self.key_type, &value).map_err(|e| CopySplitError::BadKey {
                row: row_number,
                reason: e.to_string(),
            })?;
        emit(Destination::Shard(ring.shard_of(&key)), row);
        Ok(())
    }
}

enum Field {
    Missing,
    Null,
    Value(Vec<u8>),
}

/// Field `n` of a text-format line, unescaped.
fn text_field(line: &[u8], delimiter: u8, n: usize) -> Field {
    let mut fields = split_unescaped(line, delimiter);
    let Some(raw) = fields.nth(n) else {
        return Field::Missing;
    };
    if raw == b"\\N" {
        return Field::Null;
    }
    Field::Value(unescape_text(raw))
}

/// Splits at `delimiter`s that are not escaped by a backslash.
fn split_unescaped(line: &[u8], delimiter: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < line.len() {
            match line[i] {
                b'\\' => i += 2,
                b if b == delimiter => {
                    let field = &line[start..i];
                    i += 1;
                    start = i;
                    return Some(field);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&line[start.min(line.len())..])
    })
}

/// Postgres' text-format escapes: `\b \f \n \r \t \v`, octal `\NNN`, hex `\xHH`, else the char.
fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                let mut digits = 1;
                while digits < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    value = value * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push((value & 0xff) as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    value = value * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// Field `n` of a CSV line: an unquoted empty field is NULL, a quoted one is its content.
fn csv_field(line: &[u8], delimiter: u8, quote: u8, escape: u8, n: usize) -> Field {
    let mut field = 0;
    let mut i = 0;
    loop {
        // At the start of field `field`.
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while i < line.len() {
            let b = line[i];
            if in_quotes {
                if b == escape && escape != quote && line.get(i + 1) == Some(&quote) {
                    value.push(quote);
                    i += 2;
                    continue;
                }
                if b == quote {
                    if escape == quote && line.get(i + 1) == Some(&quote) {
                        value.push(quote);
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                value.push(b);
                i += 1;
            } else if b == quote {
                quoted = true;
                in_quotes = true;
                i += 1;
            } else if b == delimiter {
                break;
            } else {
                value.push(b);
                i += 1;
            }
        }
        if field == n {
            return if value.is_empty() && !quoted {
                Field::Null
            } else {
                Field::Value(value)
            };
        }
        if i >= line.len() {
            return Field::Missing;
        }
        i += 1; // the delimiter
        field += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        Ring::new(&["s0", "s1", "s2"], 64).expect("ring")
    }

    fn split(format: RowFormat, key_column: usize, chunks: &[&[u8]]) -> Vec<(Destination, String)> {
        let ring = ring();
        let mut splitter = RowSplitter::new(format, key_column, KeyType::BigInt);
        let mut out = Vec::new();
        let mut emit =
            |d: Destination, row: &[u8]| out.push((d, String::from_utf8_lossy(row).into_owned()));
        for chunk in chunks {
            splitter.push(chunk, &ring, &mut emit).expect("push");
        }
        splitter.finish(&ring, &mut emit).expect("finish");
        out
    }

    fn shard(key: i64) -> Destination {
        Destination::Shard(ring().shard_of(&ShardKey::Int(key)))
    }

    const TEXT: RowFormat = RowFormat::Text { delimiter: b'\t' };
    const CSV: RowFormat = RowFormat::Csv {
        delimiter: b',',
        quote: b'"',
        escape: b'"',
        header: false,
    };

    #[test]
    fn text_rows_go_to_their_keys_shard_even_when_cut_across_chunks() {
        let rows = split(TEXT, 1, &[b"a\t1\tx\nb\t2", b"\ty\nc\t3\tz\\tq\n", b"d\t4"]);
        assert_eq!(
            rows,
            vec![
                (shard(1), "a\t1\tx\n".to_string()),
                (shard(2), "b\t2\ty\n".to_string()),
                (shard(3), "c\t3\tz\\tq\n".to_string()),
                (shard(4), "d\t4\n".to_string()),
            ]
        );
    }

    #[test]
    fn text_escapes_and_end_marker() {
        let rows = split(TEXT, 0, &[b"\\061\\0612\tx\n", b"\\.\n", b"9\tignored\n"]);
        assert_eq!(rows, vec![(shard(112), "\\061\\0612\tx\n".to_string())]);
        assert!(matches!(unescape_text(b"a\\x41\\\\"), v if v == b"aA\\"));
    }

    #[test]
    fn csv_quotes_may_hold_delimiters_and_newlines() {
        let rows = split(CSV, 1, &[b"\"a,\nb\",7,\"x\"\"y\"\n\"q\",\"8\"", b",z\n"]);
        assert_eq!(
            rows,
            vec![
                (shard(7), "\"a,\nb\",7,\"x\"\"y\"\n".to_string()),
                (shard(8), "\"q\",\"8\",z\n".to_string()),
            ]
        );
    }

    #[test]
    fn csv_header_goes_to_every_shard() {
        let format = RowFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            header: true,
        };
        let rows = split(format, 0, &[b"id,name\n5,x\n"]);
        assert_eq!(
            rows,
            vec![
                (Destination::AllShards, "id,name\n".to_string()),
                (shard(5), "5,x\n".to_string())
            ]
        );
    }

    #[test]
    fn rows_without_a_usable_key_are_errors() {
        let ring = ring();
        for (format, data, expected) in [
            (TEXT, &b"a\n"[..], "no column 2"),
            (TEXT, b"a\t\\N\n", "NULL shard key"),
            (TEXT, b"a\tnope\n", "not valid"),
            (CSV, b"a,\n", "NULL shard key"),
        ] {
            let mut splitter = RowSplitter::new(format, 1, KeyType::BigInt);
            let error = splitter
                .push(data, &ring, &mut |_, _| {})
                .expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
