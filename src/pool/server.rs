//! One connection to a Postgres server: opening and authenticating it, and what the proxy knows of its
//! state (process key, prepared statements, session settings applied).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncReadExt;

use super::backend::ConnRegistration;
use super::query::{parse_data_row, Row};
use super::server_stream::{send_cancel_to, ServerStream};
use crate::config::BackendAddr;
use crate::protocol::codec::{self, BodyReader};
use crate::session::params::AppliedParams;

/// Server frames larger than this are refused while the proxy reads them whole (startup, replays).
const MAX_CONTROL_FRAME: usize = 1 << 20;

/// Why a server connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("server {addr} closed the connection")]
    Closed { addr: String },
    /// The server sent an `ErrorResponse`; `frame` is the whole message, forwardable as is.
    #[error("server {addr} refused: {code} {message}")]
    Refused {
        addr: String,
        code: String,
        message: String,
        frame: BytesMut,
    },
    #[error("server {addr} asked for a password, but none is configured for user {user}")]
    NoPassword { addr: String, user: String },
    #[error("server {addr} sent an unexpected message: {what}")]
    Protocol { addr: String, what: String },
    /// TLS could not be set up as `sslmode` demands (no TLS offered, bad certificate, handshake).
    #[error("TLS to server {addr} failed (sslmode {sslmode}): {message}")]
    Tls {
        addr: String,
        sslmode: &'static str,
        message: String,
    },
}

impl ServerError {
    /// The server's own `ErrorResponse`, when it sent one, to pass to the client unchanged.
    pub fn server_frame(&self) -> Option<&BytesMut> {
        match self {
            ServerError::Refused { frame, .. } => Some(frame),
            _ => None,
        }
    }
}

/// Where a server's cancel requests go.
#[derive(Debug, Clone)]
pub struct CancelKey {
    pub addr: Arc<BackendAddr>,
    pub pid: i32,
    pub secret: i32,
    /// The connection was TLS, so the cancel request is too (as libpq does).
    pub tls: bool,
}

/// An open, authenticated server connection.
pub struct ServerConn {
    /// Keeps the socket in its backend's registry (so a failed backend can sever it). Fields drop in
    /// declaration order: this must stay before `stream`, so the fd is unregistered before it closes.
    pub registration: Option<ConnRegistration>,
    /// Lists the connection in its pool for `SHOW SERVERS` while it is open.
    pub tracker: Option<crate::stats::ServerTracker>,
    /// The pool's generation when it was opened: `RECONNECT` closes older ones once released.
    pub generation: u64,
    pub stream: ServerStream,
    pub addr: Arc<BackendAddr>,
    pub pid: i32,
    pub secret: i32,
    /// Current `ParameterStatus` values of this session, as the server last reported them.
    pub reported: Vec<(String, String)>,
    pub created: Instant,
    pub last_used: Instant,
    /// Server-side names of prepared statements that exist on this connection.
    pub prepared: HashSet<Arc<str>>,
    /// Session settings the proxy has applied here on behalf of clients.
    pub applied: AppliedParams,
}

/// Credentials and database for opening server connections.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub addr: Arc<BackendAddr>,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub timeout: Duration,
    /// Shown in `pg_stat_activity` for the proxy's own connections (health checks).
    pub application_name: Option<&'static str>,
}

impl ServerConn {
    /// Opens a connection, authenticates and waits for the first `ReadyForQuery`.
    pub async fn connect(spec: &ConnectSpec) -> Result<ServerConn, ServerError> {
        let addr_text = spec.addr.to_string();
        tokio::time::timeout(spec.timeout, Self::connect_inner(spec))
            .await
            .map_err(|_| ServerError::ConnectTimeout { addr: addr_text })?
    }

    async fn connect_inner(spec: &ConnectSpec) -> Result<ServerConn, ServerError> {
        let addr = spec.addr.to_string();
        let io = |source| ServerError::Io {
            addr: addr.clone(),
            source,
        };
        let stream = ServerStream::connect(&spec.addr).await?;
        let mut conn = ServerConn {
            registration: None,
            tracker: None,
            generation: 0,
            stream,
            addr: spec.addr.clone(),
            pid: 0,
            secret: 0,
            reported: Vec::new(),
            created: Instant::now(),
            last_used: Instant::now(),
            prepared: HashSet::new(),
            applied: AppliedParams::default(),
        };
        let mut out = BytesMut::new();
        let mut params = vec![
            ("user", spec.user.as_str()),
            ("database", spec.database.as_str()),
        ];
        if let Some(name) = spec.application_name {
            params.push(("application_name", name));
        }
        postgres_protocol::message::frontend::startup_message(params, &mut out).map_err(io)?;
        conn.stream.write_all(&out).await.map_err(io)?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = conn.read_frame(&mut buf).await?;
            match tag {
                b'R' => conn.authenticate(spec, &body, &mut scram).await?,
                b'S' => conn.note_parameter_status(&body),
                b'K' => {
                    let mut r = BodyReader::new(&body);
                    conn.pid = r.i32().map_err(|_| conn.protocol("short BackendKeyData"))?;
                    conn.secret = r.i32().map_err(|_| conn.protocol("short BackendKeyData"))?;
                }
                b'Z' => return Ok(conn),
                b'E' => return Err(conn.refused(tag, &body)),
                b'N' | b'v' => {}
                other => {
                    return Err(
                        conn.protocol(&format!("message {:?} during startup", other as char))
                    )
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        spec: &ConnectSpec,
        body: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), ServerError> {
        let mut r = BodyReader::new(body);
        let code = r.i32().map_err(|_| self.protocol("short Authentication"))?;
        let password = || {
            spec.password
                .as_deref()
                .ok_or_else(|| ServerError::NoPassword {
                    addr: spec.addr.to_string(),
                    user: spec.user.clone(),
                })
        };
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(()),
            3 => {
                let at = codec::begin(&mut out, b'p');
                codec::put_cstr(&mut out, password()?.as_bytes());
                codec::finish(&mut out, at);
            }
            5 => {
                let salt = r.bytes(4).map_err(|_| self.protocol("short md5 salt"))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    spec.user.as_bytes(),
                    password()?.as_bytes(),
                    [salt[0], salt[1], salt[2], salt[3]],
                );
                let at = codec::begin(&mut out, b'p');
                codec::put_cstr(&mut out, hash.as_bytes());
                codec::finish(&mut out, at);
            }
            10 => {
                let mechanisms = r.remaining();
                if !mechanisms.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256") {
                    return Err(self.protocol("server offers no SCRAM-SHA-256"));
                }
                let client =
                    ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                let at = codec::begin(&mut out, b'p');
                codec::put_cstr(&mut out, b"SCRAM-SHA-256");
                let first = client.message();
                out.extend_from_slice(&(first.len() as i32).to_be_bytes());
                out.extend_from_slice(first);
                codec::finish(&mut out, at);
                *scram = Some(client);
            }
            11 => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| self.protocol("SASLContinue first"))?;
                client
                    .update(r.remaining())
                    .map_err(|e| self.protocol(&format!("SCRAM: {e}")))?;
                codec::put_frame(&mut out, b'p', client.message());
            }
            12 => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| self.protocol("SASLFinal first"))?;
                client
                    .finish(r.remaining())
                    .map_err(|e| self.protocol(&format!("SCRAM: {e}")))?;
                return Ok(());
            }
            other => {
                return Err(self.protocol(&format!("unsupported authentication request {other}")))
            }
        }
        self.send(&out).await
    }

    fn protocol(&self, what: &str) -> ServerError {
        ServerError::Protocol {
            addr: self.addr.to_string(),
            what: what.to_string(),
        }
    }

    fn refused(&self, tag: u8, body: &[u8]) -> ServerError {
        let (code, message) = codec::parse_error_fields(body);
        let mut frame = BytesMut::new();
        codec::put_frame(&mut frame, tag, body);
        ServerError::Refused {
            addr: self.addr.to_string(),
            code,
            message,
            frame,
        }
    }

    pub fn io_error(&self, source: std::io::Error) -> ServerError {
        ServerError::Io {
            addr: self.addr.to_string(),
            source,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| self.io_error(e))
    }

    /// Reads one whole frame (for control exchanges, not the data path).
    pub async fn read_frame(&mut self, buf: &mut BytesMut) -> Result<(u8, BytesMut), ServerError> {
        self.read_frame_up_to(buf, MAX_CONTROL_FRAME).await
    }

    /// [`ServerConn::read_frame`] for frames up to `max` bytes (rows of a result the proxy merges).
    pub async fn read_frame_up_to(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<(u8, BytesMut), ServerError> {
        loop {
            match codec::peek_header(buf, max) {
                Ok(Some((tag, total))) if buf.len() >= total => {
                    let mut frame = buf.split_to(total);
                    frame.advance(codec::HEADER_LEN);
                    return Ok((tag, frame));
                }
                Ok(_) => {}
                Err(e) => return Err(self.protocol(&e.to_string())),
            }
            let n = self
                .stream
                .read_buf(buf)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(ServerError::Closed {
                    addr: self.addr.to_string(),
                });
            }
        }
    }

    /// Runs a simple query whose results nobody sees. Returns the `ParameterStatus` frames it caused and
    /// the final transaction status; an `ErrorResponse` becomes `Refused`.
    pub async fn run_hidden(&mut self, sql: &str) -> Result<HiddenResult, ServerError> {
        self.run_simple(sql, false).await
    }

    /// Runs a simple query the client never sees; keeps its rows as text when `keep_rows` (small
    /// results only). The first `ErrorResponse` becomes `Refused`, once `ReadyForQuery` was read, so
    /// the connection stays usable; any other error leaves it in an unknown state.
    pub(super) async fn run_simple(
        &mut self,
        sql: &str,
        keep_rows: bool,
    ) -> Result<HiddenResult, ServerError> {
        let mut out = BytesMut::new();
        codec::query(&mut out, sql);
        self.send(&out).await?;
        let mut buf = BytesMut::with_capacity(512);
        let mut result = HiddenResult::default();
        let mut error = None;
        loop {
            let (tag, body) = self.read_frame(&mut buf).await?;
            match tag {
                b'D' if keep_rows => result
                    .rows
                    .push(parse_data_row(&body).map_err(|what| self.protocol(what))?),
                b'S' => {
                    self.note_parameter_status(&body);
                    codec::put_frame(&mut result.parameter_status, tag, &body);
                }
                // Several statements could each fail; the first error is the one that matters.
                b'E' if error.is_none() => error = Some(self.refused(tag, &body)),
                b'Z' => {
                    result.status = body.first().copied().unwrap_or(b'I');
                    if !buf.is_empty() {
                        return Err(self.protocol("data after ReadyForQuery"));
                    }
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(result),
                    };
                }
                // RowDescription, CommandComplete, EmptyQueryResponse, notices, later errors.
                _ => {}
            }
        }
    }

    /// Whether the idle connection is still usable: no EOF and no unsolicited message (a `FATAL` from
    /// `pg_terminate_backend` or a shutdown) waiting on the socket. The reactor already knows whether
    /// anything arrived, so the common case costs no system call; only a readable socket is probed.
    pub fn looks_alive(&mut self) -> bool {
        self.stream.looks_alive()
    }

    /// Records a `ParameterStatus` body, so a later client of this connection can be told its values.
    pub fn note_parameter_status(&mut self, body: &[u8]) {
        let mut r = BodyReader::new(body);
        let (Ok(name), Ok(value)) = (r.cstr_utf8(), r.cstr_utf8()) else {
            return;
        };
        match self.reported.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.reported.push((name.to_string(), value.to_string())),
        }
    }

    pub fn cancel_key(&self) -> CancelKey {
        CancelKey {
            addr: self.addr.clone(),
            pid: self.pid,
            secret: self.secret,
            tls: self.stream.is_tls(),
        }
    }
}

/// What a hidden query left behind.
#[derive(Debug, Default)]
pub struct HiddenResult {
    pub parameter_status: BytesMut,
    pub status: u8,
    /// The rows, when asked for ([`super::query::query_rows`]).
    pub rows: Vec<Row>,
}

/// Sends a `CancelRequest` for `key` on a fresh connection, as Postgres expects.
pub async fn send_cancel(key: &CancelKey) -> std::io::Result<()> {
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&key.pid.to_be_bytes());
    packet.extend_from_slice(&key.secret.to_be_bytes());
    send_cancel_to(&key.addr, key.tls, &packet).await
}
