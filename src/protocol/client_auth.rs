//! Authenticating a client by the proxy itself: SCRAM-SHA-256, md5 or trust, per configured user.
//! Unknown users go through a mock SCRAM exchange and fail like a wrong password, as Postgres does.

use std::collections::HashMap;

use crate::tls::ClientStream;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::codec::{self, BodyReader};
use super::md5::{md5_secret, md5_verify};
use super::scram::{ScramSecret, ScramServer};
use crate::config::{AuthMethod, UserConfig};
use crate::error::ClientError;

/// Authentication messages are small; anything bigger is an attack or a bug.
const MAX_AUTH_MESSAGE: usize = 8192;

const AUTH_OK: i32 = 0;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// SCRAM verifiers of the configured users, derived once: PBKDF2 is deliberately slow and must not run
/// per login on the async runtime.
pub fn scram_secrets(users: &[UserConfig]) -> HashMap<String, ScramSecret> {
    users
        .iter()
        .filter(|u| u.auth == AuthMethod::ScramSha256)
        .filter_map(|u| {
            let secret = match (&u.scram_secret, &u.password) {
                (Some(s), _) => ScramSecret::parse(s).ok()?,
                (None, Some(p)) => ScramSecret::from_password(p),
                (None, None) => return None,
            };
            Some((u.name.clone(), secret))
        })
        .collect()
}

/// Runs the exchange for `user_name` (configured as `user`, if at all) and sends `AuthenticationOk`.
pub async fn authenticate(
    stream: &mut ClientStream,
    user_name: &str,
    user: Option<&UserConfig>,
    secrets: &HashMap<String, ScramSecret>,
) -> Result<(), ClientError> {
    let failed = || ClientError::PasswordFailed {
        user: user_name.to_string(),
    };
    let mut out = BytesMut::new();
    match user {
        Some(u) if u.auth == AuthMethod::Trust => {}
        Some(u) if u.auth == AuthMethod::Md5 => {
            let stored = match u.password.as_deref() {
                Some(p) if p.len() == 35 && p.starts_with("md5") => p.to_string(),
                Some(p) => md5_secret(user_name, p),
                None => return Err(failed()),
            };
            let salt: [u8; 4] = rand::random();
            codec::authentication(&mut out, AUTH_MD5, &salt);
            send(stream, &mut out).await?;
            let response = read_password_message(stream).await?;
            let response = response.strip_suffix(&[0]).unwrap_or(&response);
            if !md5_verify(&stored, salt, response) {
                return Err(failed());
            }
        }
        Some(_) => {
            let secret = secrets.get(user_name).cloned().ok_or_else(failed)?;
            scram_exchange(stream, ScramServer::new(secret), user_name).await?;
        }
        None => {
            let mock = ScramSecret::mock(user_name, b"pgscale-mock");
            scram_exchange(stream, ScramServer::new(mock), user_name).await?;
            // A mock secret never verifies, but never let a bug turn that into a login.
            return Err(failed());
        }
    }
    codec::authentication(&mut out, AUTH_OK, &[]);
    send(stream, &mut out).await
}

async fn scram_exchange(
    stream: &mut ClientStream,
    mut server: ScramServer,
    user_name: &str,
) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    codec::authentication(&mut out, AUTH_SASL, b"SCRAM-SHA-256\0\0");
    send(stream, &mut out).await?;

    let initial = read_password_message(stream).await?;
    let mut reader = BodyReader::new(&initial);
    let mechanism = reader.cstr().map_err(protocol)?;
    if mechanism != b"SCRAM-SHA-256" {
        return Err(ClientError::ProtocolViolation(
            "client selected an invalid SASL authentication mechanism".into(),
        ));
    }
    let len = reader.i32().map_err(protocol)?;
    let first = reader.bytes(len.max(0) as usize).map_err(protocol)?;
    let server_first = server
        .client_first(first)
        .map_err(|e| ClientError::ProtocolViolation(format!("malformed SCRAM message: {e}")))?;
    codec::authentication(&mut out, AUTH_SASL_CONTINUE, &server_first);
    send(stream, &mut out).await?;

    let last = read_password_message(stream).await?;
    match server.client_final(&last) {
        Ok(final_message) => {
            codec::authentication(&mut out, AUTH_SASL_FINAL, &final_message);
            send(stream, &mut out).await
        }
        Err(e) => {
            tracing::debug!(user = user_name, error = %e, "SCRAM verification failed");
            Err(ClientError::PasswordFailed {
                user: user_name.to_string(),
            })
        }
    }
}

fn protocol(e: codec::CodecError) -> ClientError {
    ClientError::ProtocolViolation(format!("malformed authentication message: {e}"))
}

async fn send(stream: &mut ClientStream, out: &mut BytesMut) -> Result<(), ClientError> {
    stream
        .write_all(out)
        .await
        .map_err(|e| ClientError::ProtocolViolation(format!("client went away: {e}")))?;
    out.clear();
    Ok(())
}

/// Reads one `PasswordMessage` ('p') body.
async fn read_password_message(stream: &mut ClientStream) -> Result<BytesMut, ClientError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match codec::peek_header(&buf, MAX_AUTH_MESSAGE) {
            Ok(Some((tag, total))) if buf.len() >= total => {
                if tag != b'p' {
                    return Err(ClientError::ProtocolViolation(format!(
                        "expected password response, got message type {}",
                        tag
                    )));
                }
                let mut body = buf.split_to(total);
                body.advance(codec::HEADER_LEN);
                return Ok(body);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ClientError::ProtocolViolation(format!(
                    "invalid message: {e}"
                )))
            }
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ClientError::ProtocolViolation(format!("client went away: {e}")))?;
        if n == 0 {
            return Err(ClientError::ProtocolViolation(
                "client closed the connection during authentication".into(),
            ));
        }
    }
}
