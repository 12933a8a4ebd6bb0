//! The socket to a Postgres server: plain TCP or TLS over it, negotiated with an `SSLRequest` as the
//! backend's `sslmode` says. An enum rather than a boxed trait object, so the plaintext data path
//! stays a direct call into the `TcpStream`.
//!
//! The session's run loop waits for the socket to be readable, then reads without waiting
//! ([`ServerStream::try_read_buf`]). With TLS, rustls may hold decrypted bytes the last read had no
//! room for, while the socket's readiness is already cleared (tokio clears it on a short read, which
//! rustls' own reads often are): [`ServerStream::readable`] is ready at once while rustls holds
//! plaintext, so those bytes never wait behind a socket that will not become readable again.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::server::ServerError;
use crate::config::{BackendAddr, SslMode};

/// `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// An open connection to a server, TLS or not.
pub enum ServerStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large, and the enum is moved with every `ServerConn`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    /// Connects over TCP and negotiates TLS as `addr.tls` says (see [`SslMode`]).
    pub async fn connect(addr: &BackendAddr) -> Result<ServerStream, ServerError> {
        let shown = addr.to_string();
        let io = |source| ServerError::Io {
            addr: shown.clone(),
            source,
        };
        let mut tcp = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let mode = addr.tls.mode;
        if mode == SslMode::Disable {
            return Ok(ServerStream::Plain(tcp));
        }
        let tls_error = |message: String| ServerError::Tls {
            addr: shown.clone(),
            sslmode: mode.as_str(),
            message,
        };
        let config = addr
            .tls
            .client_config()
            .ok_or_else(|| tls_error("TLS could not be set up in this process".into()))?
            .clone();
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        // One byte only: anything the server sent after it must go through the TLS handshake, not
        // be taken as if it came over the encrypted channel.
        let answer = match tcp.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ServerError::Closed { addr: shown })
            }
            Err(e) => return Err(io(e)),
        };
        match answer {
            b'S' => {}
            b'N' if mode.requires_tls() => {
                return Err(tls_error("the server does not support TLS".into()));
            }
            b'N' => return Ok(ServerStream::Plain(tcp)),
            other => {
                return Err(ServerError::Protocol {
                    addr: shown,
                    what: format!("answer {:?} to SSLRequest", other as char),
                })
            }
        }
        let name = addr.tls.server_name(&addr.host).map_err(tls_error)?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| tls_error(format!("TLS handshake failed: {e}")))?;
        Ok(ServerStream::Tls(Box::new(tls)))
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(tcp) => tcp,
            ServerStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Waits until the socket is readable, or rustls holds plaintext (then
    /// [`ServerStream::try_read_buf`] makes progress).
    pub async fn readable(&self) -> io::Result<()> {
        if let ServerStream::Tls(tls) = self {
            // False while plaintext waits (or after the peer's close_notify, which reads as EOF).
            if !tls.get_ref().1.wants_read() {
                return Ok(());
            }
        }
        self.tcp().readable().await
    }

    /// Reads what is there without waiting; `WouldBlock` once nothing is (which clears readiness).
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ServerStream::Plain(tcp) => tcp.try_read_buf(buf),
            ServerStream::Tls(tls) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match tokio_util::io::poll_read_buf(Pin::new(&mut **tls), &mut cx, buf) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes all of `bytes`; for TLS, also flushes what rustls buffered, so it reaches the server.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            ServerStream::Plain(tcp) => tcp.write_all(bytes).await,
            ServerStream::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
        }
    }

    /// Whether the idle connection is still usable (see [`super::server::ServerConn::looks_alive`]).
    pub fn looks_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let buffered = matches!(self, ServerStream::Tls(tls) if !tls.get_ref().1.wants_read());
        if !buffered && self.tcp().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        match self {
            ServerStream::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // TLS records the server sends unasked (session tickets) carry no plaintext: rustls
            // takes them and reports WouldBlock. Plaintext or EOF means the session is over.
            ServerStream::Tls(_) => {
                let mut probe = BytesMut::with_capacity(64);
                matches!(self.try_read_buf(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().local_addr()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ServerStream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

/// Sends a `CancelRequest` for a server connection on a fresh connection to `addr`, over TLS when
/// that connection was (as libpq does), and waits for the server to close it.
pub async fn send_cancel_to(addr: &BackendAddr, tls: bool, packet: &[u8]) -> io::Result<()> {
    let mut stream = if tls {
        // The connection being cancelled was TLS, so the server offers it: require it now.
        let mut required = addr.clone();
        if !required.tls.mode.requires_tls() {
            required.tls.mode = SslMode::Require;
        }
        ServerStream::connect(&required)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    } else {
        let tcp = TcpStream::connect((addr.host.as_str(), addr.port)).await?;
        ServerStream::Plain(tcp)
    };
    stream.write_all(packet).await?;
    // Postgres closes the socket once it has handled the request; until then it may still land.
    let mut sink = BytesMut::with_capacity(16);
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stream.read_buf(&mut sink),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the server did not close the cancel connection",
        )),
    }
}
