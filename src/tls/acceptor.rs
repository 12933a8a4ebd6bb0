//! The listener's TLS setup: `[listen] tls_mode`, `tls_cert`, `tls_key` turned into a
//! [`TlsAcceptor`], with errors that name the config key at fault.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use super::TlsError;
use crate::config::ListenConfig;

/// Whether clients may or must use TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// SSLRequest is answered `N`: plaintext only.
    #[default]
    Disable,
    /// TLS when the client asks for it; plaintext logins still accepted.
    Allow,
    /// Plaintext logins are refused with `28000` (cancel requests are still accepted, as Postgres
    /// accepts them before its pg_hba check).
    Require,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Require => "require",
        }
    }
}

/// The acceptor `listen` asks for: `None` when TLS is disabled.
pub fn acceptor_for(listen: &ListenConfig) -> Result<Option<Arc<TlsAcceptor>>, TlsError> {
    if listen.tls_mode == TlsMode::Disable {
        return Ok(None);
    }
    match (&listen.tls_cert, &listen.tls_key) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => Ok(Some(Arc::new(
            load_acceptor(Path::new(cert), Path::new(key))?,
        ))),
        _ => Err(TlsError::Missing(listen.tls_mode.as_str())),
    }
}

/// Reads a PEM certificate chain and its private key (PKCS#8, PKCS#1 or SEC1) and builds a server
/// acceptor; checks that the key belongs to the first certificate. Blocking file reads: call it at
/// start or from `spawn_blocking`.
pub fn load_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_name = cert_path.display().to_string();
    let key_name = key_path.display().to_string();
    let read = |key: &'static str, path: &Path, name: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: name.to_string(),
            source,
        })
    };
    let cert_pem = read("listen.tls_cert", cert_path, &cert_name)?;
    let key_pem = read("listen.tls_key", key_path, &key_name)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            key: "listen.tls_cert",
            path: cert_name.clone(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoPem {
            key: "listen.tls_cert",
            path: cert_name,
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            key: "listen.tls_key",
            path: key_name.clone(),
            what: "private key",
        },
        other => TlsError::BadPem {
            key: "listen.tls_key",
            path: key_name.clone(),
            detail: other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert_path: cert_name.clone(),
                key_path: key_name.clone(),
            },
            other => TlsError::Rustls(other.to_string()),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
