//! The first packets of a connection when TLS is offered: SSLRequest answered `S`, the handshake,
//! then the startup packet read again over TLS.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ClientStream;
use crate::protocol::startup::{read_first_packet, FirstPacket, StartupError};

/// A refused first exchange: the stream when something can still be said on it (`None` after a
/// failed or timed-out handshake: the connection is just closed).
pub struct Refused {
    pub stream: Option<ClientStream>,
    pub error: StartupError,
}

/// Reads the first packet, upgrading to TLS on SSLRequest when `tls` is set, all within `timeout`.
pub async fn first_packet(
    tcp: TcpStream,
    tls: Option<Arc<TlsAcceptor>>,
    timeout: Duration,
) -> Result<(ClientStream, FirstPacket), Refused> {
    let deadline = Instant::now() + timeout;
    let mut stream = ClientStream::Plain(tcp);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let offer = tls.is_some() && !stream.is_tls();
        let packet = match read_first_packet(&mut stream, remaining, offer).await {
            Ok(packet) => packet,
            Err(error) => {
                return Err(Refused {
                    stream: Some(stream),
                    error,
                })
            }
        };
        let acceptor = match (&packet, &tls) {
            (FirstPacket::SslRequest, Some(acceptor)) => acceptor.clone(),
            _ => return Ok((stream, packet)),
        };
        let mut tcp = match stream {
            ClientStream::Plain(tcp) => tcp,
            // Not reached: TLS is offered only on a plain stream.
            tls_stream => {
                return Err(Refused {
                    stream: Some(tls_stream),
                    error: StartupError::NegotiationAfterTls,
                })
            }
        };
        // What the client sent after its SSLRequest but before our answer was not encrypted:
        // refuse it (as Postgres does) rather than let the handshake or the session read it.
        if has_unread_bytes(&tcp) {
            return Err(Refused {
                stream: Some(ClientStream::Plain(tcp)),
                error: StartupError::UnencryptedAfterSslRequest,
            });
        }
        if let Err(e) = tcp.write_all(b"S").await {
            return Err(Refused {
                stream: None,
                error: StartupError::Io(e),
            });
        }
        let accept = acceptor.accept(tcp).into_fallible();
        match tokio::time::timeout_at(deadline, accept).await {
            Ok(Ok(tls_stream)) => stream = ClientStream::Tls(Box::new(tls_stream)),
            Ok(Err((e, _tcp))) => {
                return Err(Refused {
                    stream: None,
                    error: StartupError::Tls(e.to_string()),
                })
            }
            Err(_) => {
                return Err(Refused {
                    stream: None,
                    error: StartupError::Tls(format!(
                        "not finished within startup_timeout_ms ({} ms)",
                        timeout.as_millis()
                    )),
                })
            }
        }
    }
}

/// Whether bytes are already waiting on the socket (peeked, not consumed).
fn has_unread_bytes(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(tcp.poll_peek(&mut cx, &mut buf), Poll::Ready(Ok(n)) if n > 0)
}
