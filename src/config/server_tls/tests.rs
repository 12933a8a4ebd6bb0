use std::path::PathBuf;

use super::*;
use crate::config::Config;
use crate::local_cluster::TestCa;

/// A scratch directory with a valid CA file, a non-PEM file and a PEM file without certificates.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!(
            "pgscale-server-tls-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TestCa::new("unit test CA")
            .expect("CA")
            .write_pem(&dir.join("ca.pem"))
            .expect("write CA");
        std::fs::write(dir.join("garbage.pem"), "not a certificate").expect("write");
        std::fs::write(
            dir.join("key-only.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(shards: &str) -> Config {
    Config::from_toml(shards).expect("config parses")
}

fn problems(config: &Config) -> Vec<String> {
    match config.validate() {
        Ok(()) => Vec::new(),
        // Only the servers' problems (these configs have no [[users]]).
        Err(e) => e
            .problems
            .iter()
            .map(ToString::to_string)
            .filter(|p| p.starts_with("shards"))
            .collect(),
    }
}

#[test]
fn sslmode_names_parse_like_libpq() {
    for mode in [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ] {
        assert_eq!(SslMode::parse(mode.as_str()), Some(mode));
    }
    assert_eq!(SslMode::parse("allow"), None);
    assert_eq!(SslMode::parse("REQUIRE"), None);
    assert!(!SslMode::Prefer.requires_tls());
    assert!(SslMode::Require.requires_tls());
}

#[test]
fn the_default_is_prefer_without_verification() {
    let c = config("[[shards]]\nprimary = \"postgres://db:5432\"\nreplicas = [\"postgres://r\"]");
    assert!(problems(&c).is_empty());
    let primary = c.shards[0].primary_addr(0).expect("primary");
    assert_eq!(primary.tls.mode, SslMode::Prefer);
    assert!(primary.tls.client_config().is_some());
    let replica = c.shards[0].replica_addr(0, 0).expect("replica");
    assert_eq!(replica.tls.mode, SslMode::Prefer);
}

#[test]
fn shard_keys_apply_to_replicas_and_the_most_specific_setting_wins() {
    let f = Files::new();
    let ca = f.path("ca.pem");
    let c = config(&format!(
        r#"
        [[shards]]
        primary = "postgres://db:5432/app?sslmode=verify-full"
        sslmode = "require"
        sslrootcert = "{ca}"
        replicas = [
            "postgres://r0",
            "postgres://r1?sslmode=disable",
            {{ url = "postgres://r2", zone = "b", sslmode = "verify-ca" }},
            {{ url = "postgres://r3?sslmode=prefer", sslmode = "verify-ca" }},
        ]
        "#
    ));
    assert_eq!(problems(&c), Vec::<String>::new());
    let shard = &c.shards[0];
    let primary = shard.primary_addr(0).expect("primary");
    assert_eq!(primary.tls.mode, SslMode::VerifyFull, "URL over shard key");
    assert_eq!(primary.tls.root_cert, Some(PathBuf::from(&ca)));
    assert_eq!((primary.host.as_str(), primary.port), ("db", 5432));
    let modes: Vec<SslMode> = (0..4)
        .map(|r| shard.replica_addr(0, r).expect("replica").tls.mode)
        .collect();
    assert_eq!(
        modes,
        [
            SslMode::Require,
            SslMode::Disable,
            SslMode::VerifyCa,
            SslMode::Prefer
        ]
    );
    assert!(shard
        .replica_addr(0, 1)
        .expect("r1")
        .tls
        .client_config()
        .is_none());
    let r2 = shard.replica_addr(0, 2).expect("r2");
    assert_eq!(r2.tls.root_cert, Some(PathBuf::from(&ca)), "inherited");
    // The table form still round-trips through TOML (the admin console shows the config).
    let text = toml::to_string(&c).expect("serialize");
    assert!(text.contains("sslmode = \"verify-ca\""), "{text}");
    assert_eq!(
        Config::from_toml(&text).expect("reparse").shards[0].replicas,
        c.shards[0].replicas
    );
}

#[test]
fn check_names_the_field_of_each_tls_problem() {
    let f = Files::new();
    let c = config(&format!(
        r#"
        [[shards]]
        primary = "postgres://a?sslmode=verify-all"
        [[shards]]
        primary = "postgres://b"
        sslmode = "verify-full"
        [[shards]]
        primary = "postgres://c"
        sslmode = "require"
        sslrootcert = "{missing}"
        [[shards]]
        primary = "postgres://d"
        sslmode = "verify-ca"
        sslrootcert = "{garbage}"
        replicas = [{{ url = "postgres://d1", sslrootcert = "{key_only}" }}, {{ url = "postgres://d2", sslmode = "on" }}]
        [[shards]]
        primary = "postgres://e?sslrootcert={garbage}"
        sslmode = "bogus"
        "#,
        missing = f.path("missing.pem"),
        garbage = f.path("garbage.pem"),
        key_only = f.path("key-only.pem"),
    ));
    let found = problems(&c);
    let has = |field: &str, text: &str| {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&format!("{field}: ")) && p.contains(text)),
            "no problem on {field} mentioning {text:?} in {found:#?}"
        )
    };
    has(
        "shards[0].primary (?sslmode)",
        "unknown sslmode `verify-all`",
    );
    has("shards[0].primary (?sslmode)", "verify-ca, verify-full");
    has("shards[1].primary", "sslmode verify-full needs sslrootcert");
    has("shards[2].sslrootcert", "cannot read");
    has("shards[3].sslrootcert", "no CERTIFICATE");
    has("shards[3].replicas[0].sslrootcert", "no CERTIFICATE");
    has("shards[3].replicas[1].sslmode", "unknown sslmode `on`");
    has("shards[4].sslmode", "unknown sslmode `bogus`");
    assert_eq!(found.len(), 7, "{found:#?}");
}

#[test]
fn require_with_a_ca_verifies_like_verify_ca() {
    let f = Files::new();
    let ca = PathBuf::from(f.path("ca.pem"));
    let plain = ServerTls::new(SslMode::Require, None).expect("require");
    let with_ca = ServerTls::new(SslMode::Require, Some(&ca)).expect("require + CA");
    let verify_ca = ServerTls::new(SslMode::VerifyCa, Some(&ca)).expect("verify-ca");
    // The unverified config is shared; a CA builds a verifying one.
    let shared = |a: &ServerTls, b: &ServerTls| match (a.client_config(), b.client_config()) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    assert!(shared(&plain, &ServerTls::default()));
    assert!(!shared(&plain, &with_ca));
    assert!(!shared(&with_ca, &verify_ca), "built per server");
    assert_ne!(plain, with_ca, "a CA makes a different backend");
    assert_eq!(with_ca, with_ca.clone());
}

#[test]
fn server_names_for_verify_full_must_be_checkable() {
    let f = Files::new();
    let ca = PathBuf::from(f.path("ca.pem"));
    let full = ServerTls::new(SslMode::VerifyFull, Some(&ca)).expect("verify-full");
    assert!(matches!(
        full.server_name("127.0.0.1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        full.server_name("db.example.com"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(full.server_name("bad_host!").is_err());
    assert!(ServerTls::default().server_name("bad_host!").is_ok());
}
