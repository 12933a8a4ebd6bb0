//! A client connection that is plain TCP or TLS. An enum rather than a boxed trait object: the
//! plaintext hot path stays a direct call on the `TcpStream`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Most plaintext bytes taken from a TLS stream per [`ClientStream::try_read_buf`].
const TLS_READ_CHUNK: usize = 16 * 1024;

pub enum ClientStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and most connections are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Waits until [`ClientStream::try_read_buf`] may make progress. Over TLS, decrypted bytes
    /// rustls still holds count as readable even when the socket is not.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.readable().await,
            ClientStream::Tls(s) => {
                let (tcp, conn) = s.get_ref();
                if !conn.wants_read() {
                    return Ok(());
                }
                tcp.readable().await
            }
        }
    }

    /// Reads what is available without waiting: `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read_buf(buf),
            ClientStream::Tls(s) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(TLS_READ_CHUNK);
                }
                let spare = buf.spare_capacity_mut();
                let want = spare.len().min(TLS_READ_CHUNK);
                // Uninitialised spare capacity: zeroing 16 kB per read would cost more than it saves.
                let mut read = ReadBuf::uninit(&mut spare[..want]);
                let start = read.filled().as_ptr();
                // A no-op waker: readiness is awaited by `readable`, this only polls once.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let polled = Pin::new(&mut **s).poll_read(&mut cx, &mut read);
                let n = read.filled().len();
                if read.filled().as_ptr() != start {
                    return Err(io::Error::other("TLS reader replaced the read buffer"));
                }
                match polled {
                    Poll::Ready(Ok(())) => {
                        // SAFETY: `ReadBuf` vouches that its first `n` bytes, which are the first
                        // `n` bytes of `buf`'s spare capacity (same pointer, checked above), were
                        // initialised by the reader.
                        unsafe { buf.set_len(buf.len() + n) };
                        Ok(n)
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes all of `buf`; over TLS also flushes, so nothing waits in rustls' buffer.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// Ends the connection (over TLS, with a close_notify first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
