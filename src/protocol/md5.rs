//! md5 password authentication as Postgres does it (`AuthenticationMD5Password`).

use md5::{Digest, Md5};

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `"md5" + hex(md5(password + user))`: what `pg_authid` stores for an md5 password.
pub fn md5_secret(user: &str, password: &str) -> String {
    format!("md5{}", hex_md5(&[password.as_bytes(), user.as_bytes()]))
}

/// Checks a client's `PasswordMessage` (`"md5" + hex(md5(hex(md5(password + user)) + salt))`) against a
/// stored md5 secret.
pub fn md5_verify(stored: &str, salt: [u8; 4], client_response: &[u8]) -> bool {
    let Some(inner) = stored.strip_prefix("md5") else {
        return false;
    };
    let expected = format!("md5{}", hex_md5(&[inner.as_bytes(), &salt]));
    constant_time_eq(expected.as_bytes(), client_response)
}

/// Compares without an early exit, so timing does not leak how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libpq_client_hash() {
        let salt = [1, 2, 3, 4];
        let client = postgres_protocol::authentication::md5_hash(b"alice", b"s3cret", salt);
        let stored = md5_secret("alice", "s3cret");
        assert!(md5_verify(&stored, salt, client.as_bytes()));
        assert!(!md5_verify(&stored, [4, 3, 2, 1], client.as_bytes()));
        let wrong = postgres_protocol::authentication::md5_hash(b"alice", b"nope", salt);
        assert!(!md5_verify(&stored, salt, wrong.as_bytes()));
        assert!(!md5_verify("plain", salt, client.as_bytes()));
        assert!(!md5_verify(&stored, salt, b""));
    }
}
