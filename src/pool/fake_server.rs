//! A scripted stand-in for a Postgres server in unit tests: trusts every login, then answers each simple
//! query with what the test's function says, including playing a hung or vanishing server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::BackendAddr;
use crate::protocol::codec;

/// How the fake server answers one query.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A result set (text values, None = NULL).
    Rows(Vec<Vec<Option<String>>>),
    /// An `ErrorResponse` with this SQLSTATE and message, then `ReadyForQuery`.
    Error(&'static str, &'static str),
    /// Never answers (a hung server).
    Hang,
    /// Closes the connection.
    Close,
}

/// A running fake server; it stops when dropped.
pub struct FakeServer {
    pub addr: Arc<BackendAddr>,
    /// Logins accepted so far.
    pub logins: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A row of text values.
pub fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

impl FakeServer {
    /// Listens on a free port of 127.0.0.1; `answer` gets each query's SQL.
    pub async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> FakeServer {
        Self::start_with(None, answer).await
    }

    /// A server that answers every login with this `ErrorResponse` (SQLSTATE, message).
    pub async fn refusing_logins(code: &'static str, message: &'static str) -> FakeServer {
        Self::start_with(Some((code, message)), |_| Reply::Close).await
    }

    async fn start_with(
        login_error: Option<(&'static str, &'static str)>,
        answer: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let answer = Arc::new(answer);
        let logins = Arc::new(AtomicUsize::new(0));
        let counter = logins.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, login_error, answer.as_ref(), &counter).await;
                });
            }
        });
        FakeServer {
            addr: Arc::new(BackendAddr {
                host: "127.0.0.1".into(),
                port,
                tls: Default::default(),
            }),
            logins,
            task,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    login_error: Option<(&'static str, &'static str)>,
    answer: &(dyn Fn(&str) -> Reply + Send + Sync),
    logins: &AtomicUsize,
) -> std::io::Result<()> {
    let mut len = stream.read_i32().await?;
    let mut startup = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
    stream.read_exact(&mut startup).await?;
    if len == 8 && startup == [0x04, 0xd2, 0x16, 0x2f] {
        // SSLRequest (the default sslmode is prefer): no TLS here, then the real startup.
        stream.write_all(b"N").await?;
        len = stream.read_i32().await?;
        startup = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
        stream.read_exact(&mut startup).await?;
    }
    let mut out = BytesMut::new();
    if let Some((code, message)) = login_error {
        codec::error_fields(&mut out, b'E', "FATAL", code, message, None);
        return stream.write_all(&out).await;
    }
    codec::authentication(&mut out, 0, &[]);
    codec::backend_key_data(&mut out, 42, 7);
    codec::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    logins.fetch_add(1, Ordering::Relaxed);
    loop {
        let tag = stream.read_u8().await?;
        let len = stream.read_i32().await?;
        let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
        stream.read_exact(&mut body).await?;
        if tag == b'X' {
            return Ok(());
        }
        let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
        let mut out = BytesMut::new();
        match answer(&sql) {
            Reply::Rows(rows) => {
                for values in &rows {
                    let at = codec::begin(&mut out, b'D');
                    out.put_i16(values.len() as i16);
                    for value in values {
                        match value {
                            None => out.put_i32(-1),
                            Some(text) => {
                                out.put_i32(text.len() as i32);
                                out.put_slice(text.as_bytes());
                            }
                        }
                    }
                    codec::finish(&mut out, at);
                }
                let tag = format!("SELECT {}", rows.len());
                let at = codec::begin(&mut out, b'C');
                codec::put_cstr(&mut out, tag.as_bytes());
                codec::finish(&mut out, at);
            }
            Reply::Error(code, message) => {
                codec::error_fields(&mut out, b'E', "ERROR", code, message, None);
            }
            Reply::Hang => {
                // Keep the socket open, answering nothing, until the client goes away.
                let mut sink = [0u8; 256];
                while stream.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            Reply::Close => return Ok(()),
        }
        codec::ready_for_query(&mut out, b'I');
        stream.write_all(&out).await?;
    }
}
