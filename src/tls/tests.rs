//! `[listen]` TLS keys as `pgscale check` sees them.

use crate::config::Config;

fn config(listen: &str) -> Config {
    let text = format!(
        "[listen]\n{listen}\n[[users]]\nname = \"app\"\npassword = \"x\"\n[[shards]]\nprimary = \"postgres://127.0.0.1:5432\"\n"
    );
    Config::from_toml(&text).expect("parses")
}

fn problems(config: &Config) -> Vec<(String, String)> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect(),
    }
}

struct Files {
    dir: std::path::PathBuf,
    cert: String,
    key: String,
    other_key: String,
}

fn files() -> Files {
    let dir = std::env::temp_dir().join(format!("pgscale-tlscfg-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let certs = super::certs::generate(&["localhost"]).expect("generate");
    let [_, cert, key] = super::certs::write_to(&certs, &dir).expect("write");
    let other = super::certs::generate(&["localhost"]).expect("generate");
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, other.key_pem).expect("write");
    let s = |p: &std::path::Path| p.display().to_string();
    Files {
        cert: s(&cert),
        key: s(&key),
        other_key: s(&other_key),
        dir,
    }
}

#[test]
fn tls_is_off_by_default_and_disable_needs_no_files() {
    let c = config("");
    assert_eq!(c.listen.tls_mode, super::TlsMode::Disable);
    assert!(problems(&c).is_empty());
    assert!(problems(&config(
        "tls_mode = \"disable\"\ntls_cert = \"/nonexistent\""
    ))
    .is_empty());
}

#[test]
fn allow_and_require_need_a_cert_and_a_key() {
    for mode in ["allow", "require"] {
        let p = problems(&config(&format!("tls_mode = \"{mode}\"")));
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["listen.tls_cert", "listen.tls_key"], "{p:?}");
        assert!(p[0].1.contains(mode), "{p:?}");
    }
    let p = problems(&config("tls_mode = \"require\"\ntls_cert = \"/x.crt\""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "listen.tls_key");
}

#[test]
fn unknown_modes_are_rejected_by_the_parser() {
    let text = "[listen]\ntls_mode = \"prefer\"\n";
    let e = Config::from_toml(text).expect_err("not a mode");
    assert!(e.to_string().contains("`prefer`"), "{e}");
}

#[test]
fn files_are_read_parsed_and_matched() {
    let f = files();
    let good = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        f.cert, f.key
    );
    assert!(problems(&config(&good)).is_empty());

    let missing = format!(
        "tls_mode = \"allow\"\ntls_cert = \"{}/nope.crt\"\ntls_key = \"{}\"",
        f.dir.display(),
        f.key
    );
    let p = problems(&config(&missing));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "listen.tls_cert");
    assert!(
        p[0].1.contains("cannot read") && p[0].1.contains("nope.crt"),
        "{p:?}"
    );

    let swapped = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        f.key, f.key
    );
    let p = problems(&config(&swapped));
    assert_eq!(p[0].0, "listen.tls_cert", "{p:?}");
    assert!(p[0].1.contains("no PEM certificate"), "{p:?}");

    let not_a_key = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        f.cert, f.cert
    );
    let p = problems(&config(&not_a_key));
    assert_eq!(p[0].0, "listen.tls_key", "{p:?}");
    assert!(p[0].1.contains("no PEM private key"), "{p:?}");

    let mismatch = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        f.cert, f.other_key
    );
    let p = problems(&config(&mismatch));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "listen.tls_key");
    assert!(p[0].1.contains("does not match"), "{p:?}");

    let garbage = f.dir.join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let bad = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        garbage.display(),
        f.key
    );
    let p = problems(&config(&bad));
    assert_eq!(p[0].0, "listen.tls_cert", "{p:?}");
    let _ = std::fs::remove_dir_all(&f.dir);
}
