//! Client TLS in tests: generated certificates, a proxy that offers TLS, and TLS clients (tokio-postgres
//! with rustls, and a raw TLS socket for protocol-level checks).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgscale::config::{Config, PoolMode};
use pgscale::tls::TlsMode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Env;

pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
pub const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 48];

/// A generated CA and server certificate (for localhost and 127.0.0.1) on disk.
pub struct CertFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

impl CertFiles {
    pub fn generate() -> CertFiles {
        let dir = std::env::temp_dir().join(format!("pgscale-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let certs = pgscale::tls::certs::generate(&["localhost", "127.0.0.1"]).expect("certs");
        let [ca, cert, key] = pgscale::tls::certs::write_to(&certs, &dir).expect("write certs");
        CertFiles {
            dir,
            ca,
            cert,
            key,
            ca_pem: certs.ca_pem,
        }
    }

    /// Sets `[listen]` to serve TLS in `mode` with these files.
    pub fn apply(&self, config: &mut Config, mode: TlsMode) {
        config.listen.tls_mode = mode;
        config.listen.tls_cert = Some(self.cert.display().to_string());
        config.listen.tls_key = Some(self.key.display().to_string());
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An env whose proxy serves TLS in `mode` (transaction pooling), and its certificates.
pub async fn start_tls(mode: TlsMode, tweak: impl FnOnce(&mut Config)) -> (Env, CertFiles) {
    let files = CertFiles::generate();
    let env = Env::start_with(
        |c| {
            files.apply(c, mode);
            tweak(c);
        },
        PoolMode::Transaction,
        4,
    )
    .await;
    (env, files)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config that encrypts without verifying (`sslmode=require`): pgscale's own, the one it
/// uses towards servers in that mode.
pub fn require_config() -> ClientConfig {
    let tls = pgscale::config::ServerTls::new(pgscale::config::SslMode::Require, None)
        .expect("require needs no files");
    tls.client_config()
        .map(|c| ClientConfig::clone(c))
        .expect("require has a TLS config")
}

/// A client config that verifies the server against `ca_pem` (`sslmode=verify-full`).
pub fn verify_full_config(ca_pem: &str) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Connects with tokio-postgres over TLS (`conn_str` should say `sslmode=require`).
pub async fn try_connect_tls(
    conn_str: &str,
    config: ClientConfig,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(conn_str, MakeRustlsConnect::new(config)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `app` through the proxy with `sslmode=require`.
pub async fn app_tls(env: &Env) -> Client {
    let conn = format!(
        "{} sslmode=require",
        env.conn_str(super::APP_USER, super::APP_PASSWORD, super::APP_USER)
    );
    super::within("TLS connect", try_connect_tls(&conn, require_config()))
        .await
        .expect("TLS connect")
}

/// Sends SSLRequest on a new socket and returns the socket and the one-byte answer.
pub async fn ssl_request(port: u16) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(&SSL_REQUEST).await.expect("write");
    let mut answer = [0u8; 1];
    super::within("SSLRequest answer", stream.read_exact(&mut answer))
        .await
        .expect("answer");
    (stream, answer[0])
}

/// A TLS session to the proxy after SSLRequest, not yet logged in.
pub async fn raw_tls(port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (stream, answer) = ssl_request(port).await;
    assert_eq!(answer, b'S', "TLS offered");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(require_config()));
    let name = ServerName::try_from("localhost").expect("name");
    super::within("TLS handshake", connector.connect(name, stream))
        .await
        .expect("handshake")
}

/// Reads one message from any stream, or `None` on EOF, error or 10 s of silence.
pub async fn read_msg<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.ok()?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.checked_sub(4)?];
        stream.read_exact(&mut body).await.ok()?;
        Some((header[0], body))
    })
    .await
    .ok()
    .flatten()
}

/// Whether the peer closes `stream` (EOF or reset) within 10 s, ignoring what it sends first.
pub async fn closes<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// The text of an ErrorResponse's message field.
pub fn error_message(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}
