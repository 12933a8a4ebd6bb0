//! TLS between clients and the proxy: the listener's certificate and key (`acceptor`), the client
//! stream that is either plain TCP or TLS (`stream`), the SSLRequest exchange at startup
//! (`negotiate`), and certificate generation for the demo and tests (`certs`).
//!
//! rustls with the ring provider, always passed explicitly: nothing relies on a process default.

pub mod acceptor;
pub mod certs;
pub mod negotiate;
pub mod stream;

pub use acceptor::{acceptor_for, load_acceptor, TlsMode};
pub use stream::ClientStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: {path} holds no PEM {what}")]
    NoPem {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("{key}: {path} is not valid PEM: {detail}")]
    BadPem {
        key: &'static str,
        path: String,
        detail: String,
    },
    #[error("listen.tls_key: the key in {key_path} does not match the certificate in {cert_path}")]
    KeyMismatch { cert_path: String, key_path: String },
    #[error("listen.tls_cert/tls_key: {0}")]
    Rustls(String),
    #[error("listen.tls_cert and listen.tls_key are required when listen.tls_mode is {0}")]
    Missing(&'static str),
    #[error("generating a certificate failed: {0}")]
    Generate(String),
}

impl TlsError {
    /// The config key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::NoPem { key, .. }
            | TlsError::BadPem { key, .. } => key,
            TlsError::KeyMismatch { .. } => "listen.tls_key",
            TlsError::Missing(_) | TlsError::Rustls(_) | TlsError::Generate(_) => "listen.tls_cert",
        }
    }
}

/// The problems of `[listen]`'s TLS keys, as (field, message): what `pgscale check` reports. Reads
/// and parses the files, and checks that the key matches the certificate.
pub fn config_problems(listen: &crate::config::ListenConfig) -> Vec<(String, String)> {
    if listen.tls_mode == TlsMode::Disable {
        return Vec::new();
    }
    let mode = listen.tls_mode.as_str();
    let mut problems = Vec::new();
    for (field, value) in [
        ("listen.tls_cert", &listen.tls_cert),
        ("listen.tls_key", &listen.tls_key),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            problems.push((
                field.to_string(),
                format!("a PEM file path is required when listen.tls_mode = \"{mode}\""),
            ));
        }
    }
    if problems.is_empty() {
        if let Err(e) = acceptor_for(listen) {
            let key = e.key();
            let text = e.to_string();
            let message = text
                .strip_prefix(&format!("{key}: "))
                .unwrap_or(&text)
                .to_string();
            problems.push((key.to_string(), message));
        }
    }
    problems
}

#[cfg(test)]
mod tests;
