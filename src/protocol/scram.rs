//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as Postgres does it, without channel binding:
//! verifying a client against a stored verifier, so the proxy never needs the plain password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::md5::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

const ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    UnsupportedChannelBinding,
    #[error("nonce does not match")]
    NonceMismatch,
    #[error("invalid proof")]
    InvalidProof,
    #[error("invalid SCRAM verifier: {0}")]
    BadSecret(&'static str),
    #[error("SCRAM messages out of order")]
    WrongState,
    #[error("SCRAM channel binding check failed")]
    BindingMismatch,
}

/// A stored verifier: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
    /// A mock secret for an unknown user: the exchange runs, verification always fails.
    mock: bool,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32], // HMAC accepts keys of any length; never reached
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn key32(text: &str) -> Result<[u8; 32], ScramError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| ScramError::BadSecret("bad base64"))?;
    bytes
        .try_into()
        .map_err(|_| ScramError::BadSecret("key is not 32 bytes"))
}

impl ScramSecret {
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::BadSecret("must start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::BadSecret("missing keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(ScramError::BadSecret("missing salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(ScramError::BadSecret("missing server key"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::BadSecret("bad iteration count"))?;
        if iterations == 0 {
            return Err(ScramError::BadSecret("bad iteration count"));
        }
        Ok(ScramSecret {
            iterations,
            salt: B64
                .decode(salt)
                .map_err(|_| ScramError::BadSecret("bad salt"))?,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
            mock: false,
        })
    }

    /// Derives a verifier from a plain password (random salt).
    pub fn from_password(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive(password.as_bytes(), &salt, ITERATIONS)
    }

    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
            mock: false,
        }
    }

    /// A deterministic fake verifier for `user`, so an unknown user's exchange looks like a real one.
    pub fn mock(user: &str, nonce_seed: &[u8]) -> Self {
        let salt = hmac(nonce_seed, user.as_bytes());
        ScramSecret {
            iterations: ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: [0; 32],
            server_key: [0; 32],
            mock: true,
        }
    }
}

impl std::fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// One exchange with one client.
pub struct ScramServer {
    secret: ScramSecret,
    state: State,
}

enum State {
    Initial,
    SentFirst {
        /// The gs2 header of client-first (`n,,` or `y,,`), which `c=` must repeat exactly.
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ScramServer {
    pub fn new(secret: ScramSecret) -> Self {
        ScramServer {
            secret,
            state: State::Initial,
        }
    }

    /// Takes the client-first-message; returns the server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::WrongState);
        }
        let text = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: "n,," or "y,," (client supports binding, thinks we do not: true, no PLUS
        // mechanism is offered); "p=" asks for it. An authorization identity is refused, as by
        // Postgres.
        let (gs2_header, bare) = if text.starts_with("n,") || text.starts_with("y,") {
            let (authzid, bare) = text[2..]
                .split_once(',')
                .ok_or(ScramError::Malformed("gs2 header"))?;
            if !authzid.is_empty() {
                return Err(ScramError::Malformed(
                    "authorization identity is not supported",
                ));
            }
            (&text[..3], bare)
        } else if text.starts_with("p=") {
            return Err(ScramError::UnsupportedChannelBinding);
        } else {
            return Err(ScramError::Malformed("gs2 header"));
        };
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if client_nonce.contains(|c: char| !c.is_ascii_graphic() || c == ',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        self.state = State::SentFirst {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Takes the client-final-message; verifies the proof and returns the server-final-message.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::WrongState);
        };
        let text = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut binding = None;
        let mut final_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                final_nonce = Some(v);
            }
        }
        let binding = B64
            .decode(binding.ok_or(ScramError::Malformed("missing channel binding"))?)
            .map_err(|_| ScramError::Malformed("bad channel binding"))?;
        // Not just any header without binding: the one client-first sent, so a `y` (or `n`) cannot
        // be swapped between the two messages.
        if binding != gs2_header.as_bytes() {
            return Err(ScramError::BindingMismatch);
        }
        if final_nonce != Some(nonce.as_str()) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad proof"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("bad proof length"));
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if self.secret.mock || !constant_time_eq(&stored, &self.secret.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(secret: ScramSecret, password: &str) -> Result<(), ScramError> {
        let mut server = ScramServer::new(secret);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = server.client_first(client.message())?;
        client
            .update(&first)
            .map_err(|_| ScramError::Malformed("client"))?;
        let last = server.client_final(client.message())?;
        client.finish(&last).map_err(|_| ScramError::InvalidProof)
    }

    #[test]
    fn round_trip_with_libpq_compatible_client() {
        assert_eq!(exchange(ScramSecret::from_password("pw"), "pw"), Ok(()));
        assert_eq!(
            exchange(ScramSecret::from_password("pw"), "other"),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn verifiers_from_postgres_protocol_parse_and_verify() {
        let text = postgres_protocol::password::scram_sha_256(b"hunter2");
        let secret = ScramSecret::parse(&text).expect("parses");
        assert_eq!(secret.to_string(), text);
        assert_eq!(exchange(secret.clone(), "hunter2"), Ok(()));
        assert_eq!(exchange(secret, "hunter3"), Err(ScramError::InvalidProof));
    }

    #[test]
    fn mock_never_verifies() {
        assert_eq!(
            exchange(ScramSecret::mock("ghost", b"seed"), ""),
            Err(ScramError::InvalidProof)
        );
        assert_eq!(ScramSecret::mock("a", b"s"), ScramSecret::mock("a", b"s"));
    }

    /// A client-final-message with a correct proof for `gs2_first` in client-first and `binding`
    /// (base64 of a gs2 header) as its `c=`.
    fn final_with_binding(gs2_first: &str, binding: &str) -> Result<Vec<u8>, ScramError> {
        let secret = ScramSecret::derive(b"pw", b"salt", 16);
        let mut server = ScramServer::new(secret);
        let bare = "n=,r=clientnonce";
        let first = server.client_first(format!("{gs2_first}{bare}").as_bytes())?;
        let first = String::from_utf8(first).expect("utf-8");
        let nonce = first
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .expect("nonce");
        let without_proof = format!("c={binding},r={nonce}");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pw", b"salt", 16, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let auth_message = format!("{bare},{first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        server.client_final(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())
    }

    /// Issue 11: `c=` must be the base64 of the exact gs2 header of client-first ("biws" for
    /// "n,,", "eSws" for "y,,"); any other header was accepted as long as it was one of the two.
    #[test]
    fn channel_binding_must_repeat_the_gs2_header() {
        assert!(final_with_binding("n,,", "biws").is_ok());
        assert!(final_with_binding("y,,", "eSws").is_ok());
        assert_eq!(
            final_with_binding("n,,", "eSws"),
            Err(ScramError::BindingMismatch)
        );
        assert_eq!(
            final_with_binding("y,,", "biws"),
            Err(ScramError::BindingMismatch)
        );
        // An authorization identity is refused, as Postgres does.
        assert!(final_with_binding("n,a=other,", "bixhPW90aGVyLA==").is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x",
            "p=tls-server-end-point,,n=,r=a",
            "n,,",
            "n,,n=,r=",
            "n,,n=,r=a\u{1}b",
        ] {
            let mut s = ScramServer::new(ScramSecret::from_password("pw"));
            assert!(s.client_first(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut s = ScramServer::new(ScramSecret::from_password("pw"));
        assert_eq!(
            s.client_final(b"c=biws,r=x,p=AAAA"),
            Err(ScramError::WrongState)
        );
        let mut s = ScramServer::new(ScramSecret::from_password("pw"));
        s.client_first(b"n,,n=,r=abc").expect("first");
        assert_eq!(
            s.client_final(b"c=biws,r=wrong,p=AAAA"),
            Err(ScramError::NonceMismatch)
        );
        for bad in [
            "SCRAM-SHA-256$x:AA==$AA==:AA==",
            "md5abc",
            "SCRAM-SHA-256$4096:AA==$AA==:AA==",
        ] {
            assert!(ScramSecret::parse(bad).is_err(), "{bad}");
        }
        // Random bytes never panic.
        let secret = ScramSecret::derive(b"pw", b"salt", 16);
        for i in 0..2000u32 {
            let bytes: Vec<u8> = (0..(i % 64))
                .map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) % 256) as u8)
                .collect();
            let mut s = ScramServer::new(secret.clone());
            let _ = s.client_first(&bytes);
            let _ = s.client_final(&bytes);
        }
    }
}
