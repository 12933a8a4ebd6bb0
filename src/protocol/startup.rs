//! The untyped first packet of a connection: SSL/GSS requests, cancel requests and v3 startup messages.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use crate::tls::ClientStream;

use super::codec::BodyReader;

/// Postgres refuses startup packets above this size; so do we.
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// What a client asked for in its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    Startup(StartupMessage),
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// An SSLRequest while TLS is offered: the caller answers `S` and does the handshake.
    SslRequest,
}

/// A v3 startup message: the protocol version and the parameters, in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

/// Longest user or database name Postgres keeps (`NAMEDATALEN - 1`); it cuts longer ones.
pub const MAX_NAME_BYTES: usize = 63;

/// `name` cut to [`MAX_NAME_BYTES`] on a character boundary, as Postgres cuts the user and database
/// names of a startup packet: they are echoed in errors and logs, which must not carry kilobytes.
pub fn clip_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl StartupMessage {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why the first packet was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("connection closed during startup")]
    Closed,
    #[error("i/o error during startup: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid length of startup packet: {0}")]
    BadLength(i32),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("startup timed out")]
    Timeout,
    #[error("received unencrypted data after SSL request")]
    UnencryptedAfterSslRequest,
    #[error("SSL or GSS encryption requested again after TLS was established")]
    NegotiationAfterTls,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Reads packets until a startup or cancel request arrives, answering `N` to GSS encryption requests
/// and to SSL requests unless `offer_tls` (then [`FirstPacket::SslRequest`] is returned). Over TLS,
/// another encryption request is a protocol violation.
pub async fn read_first_packet(
    stream: &mut ClientStream,
    timeout: Duration,
    offer_tls: bool,
) -> Result<FirstPacket, StartupError> {
    tokio::time::timeout(timeout, async {
        loop {
            let body = read_untyped(stream).await?;
            let mut reader = BodyReader::new(&body);
            let code = reader
                .i32()
                .map_err(|_| StartupError::Malformed("no code"))?;
            match code {
                SSL_REQUEST | GSSENC_REQUEST if stream.is_tls() => {
                    return Err(StartupError::NegotiationAfterTls)
                }
                SSL_REQUEST if offer_tls => return Ok(FirstPacket::SslRequest),
                SSL_REQUEST | GSSENC_REQUEST => stream.write_all(b"N").await?,
                CANCEL_REQUEST => {
                    let pid = reader
                        .i32()
                        .map_err(|_| StartupError::Malformed("cancel"))?;
                    let secret = reader
                        .i32()
                        .map_err(|_| StartupError::Malformed("cancel"))?;
                    return Ok(FirstPacket::Cancel { pid, secret });
                }
                _ => return parse_startup(code, &body[4..]).map(FirstPacket::Startup),
            }
        }
    })
    .await
    .map_err(|_| StartupError::Timeout)?
}

async fn read_untyped(stream: &mut ClientStream) -> Result<BytesMut, StartupError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(StartupError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    stream.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StartupError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(body)
}

/// Parses the parameters of a startup message whose version code was `code`.
pub fn parse_startup(code: i32, params: &[u8]) -> Result<StartupMessage, StartupError> {
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        return Err(StartupError::UnsupportedProtocol { major, minor });
    }
    let mut reader = BodyReader::new(params);
    let mut out = Vec::new();
    loop {
        let name = reader
            .cstr_utf8()
            .map_err(|_| StartupError::Malformed("parameter name"))?;
        if name.is_empty() {
            break;
        }
        let value = reader
            .cstr_utf8()
            .map_err(|_| StartupError::Malformed("parameter value"))?;
        out.push((name.to_string(), value.to_string()));
    }
    if !reader.remaining().is_empty() {
        return Err(StartupError::Malformed("bytes after the terminator"));
    }
    let message = StartupMessage {
        minor_version: minor,
        params: out,
    };
    match message.get("user") {
        Some(u) if !u.is_empty() => Ok(message),
        _ => Err(StartupError::NoUser),
    }
}

/// Splits a startup `options` value into `name=value` settings (`-c name=value` and `--name=value`),
/// honouring backslash escapes as Postgres does.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next().ok_or("-c needs name=value")?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(format!(
                "invalid command-line argument for server process: {w}"
            ));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("-c {setting} requires a value"))?;
        out.push((
            name.replace('-', "_").to_ascii_lowercase(),
            value.to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_clipped_like_postgres_on_a_char_boundary() {
        assert_eq!(clip_name("app"), "app");
        let long = "u".repeat(100);
        assert_eq!(clip_name(&long), &long[..63]);
        let wide = "é".repeat(40);
        assert_eq!(clip_name(&wide), "é".repeat(31));
        assert_eq!(clip_name(&"x".repeat(63)).len(), 63);
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in pairs {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out.push(0);
        out
    }

    #[test]
    fn parses_v3_startup() {
        let m = parse_startup(196_608, &params(&[("user", "u"), ("database", "d")])).expect("ok");
        assert_eq!(m.get("user"), Some("u"));
        assert_eq!(m.get("database"), Some("d"));
    }

    #[test]
    fn rejects_bad_startups() {
        assert!(matches!(
            parse_startup(2 << 16, &params(&[("user", "u")])),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(matches!(
            parse_startup(196_608, &params(&[("database", "d")])),
            Err(StartupError::NoUser)
        ));
        assert!(parse_startup(196_608, b"user\0u").is_err());
        assert!(parse_startup(196_608, b"user\0u\0\0junk").is_err());
    }

    #[test]
    fn options_follow_postgres_rules() {
        let o = parse_options(
            "-c search_path=a,b --statement-timeout=5s -cwork_mem=4MB -c x=with\\ space",
        )
        .expect("ok");
        assert_eq!(
            o,
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into()),
                ("x".into(), "with space".into()),
            ]
        );
        assert!(parse_options("-c").is_err());
        assert!(parse_options("bogus").is_err());
        assert!(parse_options("-c novalue").is_err());
    }
}
