//! Certificates made on the spot: a throwaway CA and a server certificate it signs, for
//! `pgscale demo --tls` and the tests (clients can verify the server against the CA).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

/// PEM texts of a generated CA and a server certificate signed by it.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    /// The CA certificate: what clients trust (`sslrootcert`).
    pub ca_pem: String,
    /// The server certificate (`tls_cert`).
    pub cert_pem: String,
    /// The server certificate's private key, PKCS#8 (`tls_key`).
    pub key_pem: String,
}

/// A new CA and a server certificate for `names` (DNS names or IP addresses, e.g. `localhost`,
/// `127.0.0.1`), ECDSA P-256, valid from now for rcgen's default span.
pub fn generate(names: &[&str]) -> Result<GeneratedCerts, TlsError> {
    let err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgscale generated CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;

    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).map_err(err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("pgscale", String::as_str),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    Ok(GeneratedCerts {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `certs` as `ca.crt`, `server.crt` and `server.key` (mode 0600) under `dir`; returns their
/// paths in that order.
pub fn write_to(
    certs: &GeneratedCerts,
    dir: &std::path::Path,
) -> std::io::Result<[std::path::PathBuf; 3]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let ca = dir.join("ca.crt");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&ca, &certs.ca_pem)?;
    std::fs::write(&cert, &certs.cert_pem)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)?;
    file.write_all(certs.key_pem.as_bytes())?;
    Ok([ca, cert, key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certs_load_into_an_acceptor_and_mismatched_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("pgscale-certs-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = generate(&["localhost", "127.0.0.1"]).expect("generate");
        let [_, cert, key] = write_to(&a, &dir).expect("write");
        assert!(crate::tls::load_acceptor(&cert, &key).is_ok());
        let b = generate(&["localhost"]).expect("generate");
        let other_key = dir.join("other.key");
        std::fs::write(&other_key, &b.key_pem).expect("write");
        let e = crate::tls::load_acceptor(&cert, &other_key)
            .err()
            .expect("mismatch");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let e = crate::tls::load_acceptor(&key, &key)
            .err()
            .expect("a key is no certificate");
        assert!(e.to_string().contains("listen.tls_cert"), "{e}");
        let e = crate::tls::load_acceptor(&cert, &cert)
            .err()
            .expect("a cert is no key");
        assert!(e.to_string().contains("listen.tls_key"), "{e}");
        let e = crate::tls::load_acceptor(&dir.join("missing"), &key)
            .err()
            .expect("missing");
        assert!(e.to_string().contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
