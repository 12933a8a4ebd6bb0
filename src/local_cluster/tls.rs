//! TLS for throwaway servers: a generated CA, a server certificate it signs (for `127.0.0.1` and
//! `localhost` unless told otherwise), `ssl = on`, and optionally a `pg_hba.conf` that only lets
//! TCP clients in over TLS (`hostssl`), so a test can prove plaintext is refused.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

use super::os::give_to_server_user;
use super::{ClusterError, LocalPostgres};

/// A certificate authority made for one test run; keep it to sign more servers (replicas) or to
/// write its certificate where clients read their `sslrootcert`.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

fn certs_error(e: rcgen::Error) -> ClusterError {
    ClusterError::Certs(e.to_string())
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Arc<TestCa>, ClusterError> {
        let key = KeyPair::generate().map_err(certs_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(certs_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).map_err(certs_error)?;
        Ok(Arc::new(TestCa { cert, key }))
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `path` (readable by anyone: it is public).
    pub fn write_pem(&self, path: &Path) -> Result<(), ClusterError> {
        std::fs::write(path, self.pem())?;
        Ok(())
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA: (cert PEM,
    /// key PEM).
    pub fn server_cert(&self, names: &[String]) -> Result<(String, String), ClusterError> {
        let key = KeyPair::generate().map_err(certs_error)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(certs_error)?;
        let common_name = names.first().map_or("server", String::as_str);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(certs_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// How a server's TLS is set up ([`super::ClusterOptions::tls`]).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Signs the server's certificate (and its replicas').
    pub ca: Arc<TestCa>,
    /// The names the server's certificate is valid for.
    pub names: Vec<String>,
    /// TCP logins only over TLS (`hostssl` lines; plain `host` has no entry, so Postgres refuses
    /// it with `28000`). The Unix socket stays trusted.
    pub hostssl_only: bool,
}

impl TlsOptions {
    /// A fresh CA, a certificate for `127.0.0.1` and `localhost`, plaintext TCP still allowed.
    pub fn generated() -> Result<TlsOptions, ClusterError> {
        Ok(TlsOptions {
            ca: TestCa::new("pgscale test CA")?,
            names: vec!["127.0.0.1".into(), "localhost".into()],
            hostssl_only: false,
        })
    }
}

impl LocalPostgres {
    /// The CA file that signed this server's certificate, when it runs with TLS (`sslrootcert`).
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, path)| path.as_path())
    }

    /// Sets up TLS in this not yet started server's directories (see [`install`]).
    pub(super) fn install_tls(
        &mut self,
        tls: &TlsOptions,
        write_hba: bool,
    ) -> Result<(), ClusterError> {
        let ca = install(&self.dir, &self.data, tls, write_hba)?;
        self.tls = Some((tls.clone(), ca));
        Ok(())
    }
}

/// Writes `server.crt`, `server.key` (0600) and `root.crt` (the CA) into the server's private
/// directory `dir`, owned by the server user, and the `postgresql.conf` lines that use them.
/// Returns the CA file's path.
pub(crate) fn install(
    dir: &Path,
    data: &Path,
    tls: &TlsOptions,
    write_hba: bool,
) -> Result<PathBuf, ClusterError> {
    let (cert, key) = tls.ca.server_cert(&tls.names)?;
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    let ca_path = dir.join("root.crt");
    std::fs::write(&cert_path, cert)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)?;
    file.write_all(key.as_bytes())?;
    drop(file);
    tls.ca.write_pem(&ca_path)?;
    for path in [&cert_path, &key_path, &ca_path] {
        give_to_server_user(path)?;
    }
    let settings = [
        ("ssl".to_string(), "on".to_string()),
        ("ssl_cert_file".into(), cert_path.display().to_string()),
        ("ssl_key_file".into(), key_path.display().to_string()),
    ];
    super::setup::write_conf_lines(data, &settings)?;
    if write_hba && tls.hostssl_only {
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             local replication all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl replication all 127.0.0.1/32 scram-sha-256\n",
        )?;
    }
    Ok(ca_path)
}
