//! TLS from the proxy to the Postgres servers: `sslmode` and `sslrootcert` with libpq's meanings,
//! resolved per server from the shard's keys, a replica's table and the URL's query, and turned into
//! a rustls client config once, when the config is read (never per connection).
//!
//! Most specific wins: the URL's `?sslmode=…&sslrootcert=…`, then a replica table's keys, then the
//! shard's keys (which apply to its primary and every replica), then the default `prefer`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::validate::Problem;
use super::{BackendAddr, ReplicaConfig, ShardConfig};

/// libpq's `sslmode`, minus `allow` (plaintext first makes no sense for a proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// No `SSLRequest`: plaintext only.
    Disable,
    /// TLS when the server offers it, else plaintext; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked, unless `sslrootcert` is set (then as
    /// `verify-ca`, as libpq does).
    Require,
    /// TLS, and the certificate chain must verify against `sslrootcert`; the host name is not checked.
    VerifyCa,
    /// `verify-ca`, and the certificate must name the host (DNS name or IP address).
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection must be TLS (a server answering `N` is an error).
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// How the proxy talks TLS to one server. Equal when mode, CA path and the CA file's certificates
/// are equal, so a reload that changes any of them replaces the backend.
#[derive(Clone)]
pub struct ServerTls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    roots: Arc<[CertificateDer<'static>]>,
    /// None for `disable`.
    client: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.root_cert == other.root_cert && self.roots == other.roots
    }
}
impl Eq for ServerTls {}

impl std::hash::Hash for ServerTls {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.mode.hash(state);
        self.root_cert.hash(state);
    }
}

impl Default for ServerTls {
    /// `prefer` without a CA: what a server gets when nothing is configured.
    fn default() -> Self {
        ServerTls {
            mode: SslMode::Prefer,
            root_cert: None,
            roots: Arc::from(Vec::new()),
            client: unverified_config().ok(),
        }
    }
}

impl ServerTls {
    /// Plaintext only (`sslmode = "disable"`).
    pub fn disabled() -> ServerTls {
        ServerTls {
            mode: SslMode::Disable,
            root_cert: None,
            roots: Arc::from(Vec::new()),
            client: None,
        }
    }

    /// The settings for `mode` and an optional CA file, which is read and checked here.
    pub fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<ServerTls, String> {
        let roots: Vec<CertificateDer<'static>> = match root_cert {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        let verify = match mode {
            SslMode::Disable => {
                return Ok(ServerTls {
                    root_cert: root_cert.map(Path::to_path_buf),
                    ..ServerTls::disabled()
                })
            }
            SslMode::Prefer => Verify::Nothing,
            // libpq: "if a root CA file exists, sslmode=require behaves like verify-ca".
            SslMode::Require if root_cert.is_some() => Verify::Chain,
            SslMode::Require => Verify::Nothing,
            SslMode::VerifyCa | SslMode::VerifyFull if root_cert.is_none() => {
                return Err(format!(
                    "sslmode {} needs sslrootcert (the CA file to verify the server against)",
                    mode.as_str()
                ))
            }
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::ChainAndName,
        };
        let client = match verify {
            Verify::Nothing => unverified_config()?,
            Verify::Chain | Verify::ChainAndName => {
                let mut store = RootCertStore::empty();
                for cert in &roots {
                    store.add(cert.clone()).map_err(|e| {
                        format!(
                            "sslrootcert {}: not a usable CA certificate: {e}",
                            shown(root_cert)
                        )
                    })?;
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| format!("sslrootcert {}: {e}", shown(root_cert)))?;
                let verifier: Arc<dyn ServerCertVerifier> = match verify {
                    Verify::Chain => Arc::new(ChainOnly(webpki)),
                    _ => webpki,
                };
                build_config(verifier)?
            }
        };
        Ok(ServerTls {
            mode,
            root_cert: root_cert.map(Path::to_path_buf),
            roots: Arc::from(roots),
            client: Some(client),
        })
    }

    /// The rustls config for this server's TLS connections; None when TLS is disabled (or, for the
    /// default settings only, if rustls could not be set up, which the ring provider never fails).
    pub fn client_config(&self) -> Option<&Arc<ClientConfig>> {
        self.client.as_ref()
    }

    /// The name the certificate must carry under `verify-full`: `host` as a DNS name or IP address.
    /// Other modes do not check it, so any host gets a name (SNI is only sent for DNS names).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        match ServerName::try_from(host.to_string()) {
            Ok(name) => Ok(name),
            Err(_) if self.mode != SslMode::VerifyFull => Ok(ServerName::IpAddress(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
            )),
            Err(e) => Err(format!(
                "host `{host}` cannot be checked against a certificate: {e}"
            )),
        }
    }
}

enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

/// The CA certificates of a PEM file; an error says what is wrong with it.
fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("sslrootcert {}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {}: no CERTIFICATE in the file",
            path.display()
        ));
    }
    for cert in &certs {
        webpki::anchor_from_trusted_cert(cert).map_err(|e| {
            format!(
                "sslrootcert {}: not a valid certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// The ring provider, explicitly: the process default is never relied on.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn build_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Postgres 17 checks ALPN when a client sends it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// The config for `prefer` and `require` without a CA: shared by every such server.
fn unverified_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| build_config(Arc::new(NoCheck(provider()))))
        .clone()
}

/// `prefer` / `require`: any certificate is accepted (libpq's meaning); the handshake signatures are
/// still checked, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; a certificate for another name is accepted. The webpki
/// verifier checks the name only after the chain, so its name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One place the TLS keys can be written, with the field paths errors name.
struct Layer<'a> {
    mode_field: String,
    root_field: String,
    sslmode: Option<&'a str>,
    sslrootcert: Option<&'a str>,
}

/// `sslmode` / `sslrootcert` from a URL's query (libpq style); other parameters are ignored.
fn url_layer(url: &str, field: &str) -> (Option<String>, Option<String>, String, String) {
    let mut mode = None;
    let mut root = None;
    if let Ok(parsed) = url::Url::parse(url) {
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => mode = Some(value.into_owned()),
                "sslrootcert" => root = Some(value.into_owned()),
                _ => {}
            }
        }
    }
    (
        mode,
        root,
        format!("{field} (?sslmode)"),
        format!("{field} (?sslrootcert)"),
    )
}

/// The server's TLS settings from its layers, most specific first. The error names the field.
fn resolve(layers: &[Layer<'_>], server_field: &str) -> Result<ServerTls, Problem> {
    let problem = |field: &str, message: String| Problem {
        field: field.to_string(),
        message,
    };
    let mut mode = SslMode::Prefer;
    if let Some(layer) = layers.iter().find(|l| l.sslmode.is_some()) {
        let text = layer.sslmode.unwrap_or_default();
        mode = SslMode::parse(text).ok_or_else(|| {
            problem(
                &layer.mode_field,
                format!(
                    "unknown sslmode `{text}` (expected one of {})",
                    SslMode::NAMES
                ),
            )
        })?;
    }
    let root = layers.iter().find(|l| l.sslrootcert.is_some());
    let root_path = root.and_then(|l| l.sslrootcert).map(Path::new);
    if let Some(path) = root_path.filter(|p| p.as_os_str().is_empty()) {
        let field = root.map_or(server_field, |l| &l.root_field);
        return Err(problem(field, format!("sslrootcert is empty: {path:?}")));
    }
    ServerTls::new(mode, root_path).map_err(|message| {
        // A CA file problem belongs to the key that named the file; a missing CA to the server.
        let field = match root {
            Some(layer) if message.starts_with("sslrootcert") => layer.root_field.as_str(),
            _ => server_field,
        };
        problem(field, message)
    })
}

impl ShardConfig {
    /// The primary of shard `index`: its address and TLS settings (URL query, then the shard's keys).
    pub fn primary_addr(&self, index: usize) -> Result<BackendAddr, Problem> {
        let field = format!("shards[{index}].primary");
        self.server_addr(&self.primary, &field, None, index)
    }

    /// Replica `r` of shard `index`: URL query, then the replica table's keys, then the shard's.
    pub fn replica_addr(&self, index: usize, r: usize) -> Result<BackendAddr, Problem> {
        let field = format!("shards[{index}].replicas[{r}]");
        let replica = self.replicas.get(r).ok_or_else(|| Problem {
            field: field.clone(),
            message: "no such replica".into(),
        })?;
        self.server_addr(replica.url(), &field, Some(replica), index)
    }

    fn server_addr(
        &self,
        url: &str,
        field: &str,
        replica: Option<&ReplicaConfig>,
        index: usize,
    ) -> Result<BackendAddr, Problem> {
        let mut addr = BackendAddr::parse(url).map_err(|message| Problem {
            field: field.to_string(),
            message,
        })?;
        let (url_mode, url_root, url_mode_field, url_root_field) = url_layer(url, field);
        let mut layers = vec![Layer {
            mode_field: url_mode_field,
            root_field: url_root_field,
            sslmode: url_mode.as_deref(),
            sslrootcert: url_root.as_deref(),
        }];
        if let Some(ReplicaConfig::Detailed {
            sslmode,
            sslrootcert,
            ..
        }) = replica
        {
            layers.push(Layer {
                mode_field: format!("{field}.sslmode"),
                root_field: format!("{field}.sslrootcert"),
                sslmode: sslmode.as_deref(),
                sslrootcert: sslrootcert.as_deref(),
            });
        }
        layers.push(Layer {
            mode_field: format!("shards[{index}].sslmode"),
            root_field: format!("shards[{index}].sslrootcert"),
            sslmode: self.sslmode.as_deref(),
            sslrootcert: self.sslrootcert.as_deref(),
        });
        addr.tls = resolve(&layers, field)?;
        Ok(addr)
    }
}

#[cfg(test)]
#[path = "server_tls/tests.rs"]
mod tests;
