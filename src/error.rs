//! Errors a client can see: each kind decides its SQLSTATE, severity and log level, and one function
//! turns it into an `ErrorResponse`, so only text meant for clients crosses the wire.

use bytes::BytesMut;

use crate::protocol::codec;

/// Why the proxy answers a client with an error. Payloads are safe to show to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("password authentication failed for user \"{user}\"")]
    PasswordFailed { user: String },
    #[error("role \"{user}\" does not exist")]
    UnknownRole { user: String },
    #[error("{0}")]
    ProtocolViolation(String),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("sorry, too many clients already (max_client_conn = {max})")]
    TooManyClients { max: usize },
    #[error("sorry, too many clients already (max_client_conn = {max}); the remaining {reserved} connection slots are reserved for [admin] users")]
    ReservedForAdmins { max: usize, reserved: usize },
    #[error("no server connection available for {pool} within {waited_ms} ms (pool_size = {size}); retry later or raise pool_size")]
    PoolTimeout {
        pool: String,
        waited_ms: u64,
        size: usize,
    },
    #[error("cannot connect to server {backend}: {reason}")]
    ServerUnavailable { backend: String, reason: String },
    /// TLS to the server failed as its `sslmode` demands (08001: the connection could not be made).
    #[error("cannot connect to server {backend}: {reason}")]
    ServerTls { backend: String, reason: String },
    #[error("connection to server {backend} was lost: {reason}")]
    ServerLost { backend: String, reason: String },
    #[error("{role} {backend} is unavailable: {reason}")]
    BackendDown {
        role: &'static str,
        backend: String,
        reason: String,
    },
    #[error("no replica can take this read: {reason}")]
    NoReplica { reason: String },
    #[error("pgscale is shutting down")]
    ShuttingDown,
    #[error("startup timed out: authentication not completed within {ms} ms")]
    StartupTimeout { ms: u64 },
    /// A statement sharded routing cannot run correctly: why, and what to do instead.
    #[error("{0}")]
    ShardRouting(String),
    /// A shard could not answer its part of a statement over several shards.
    #[error("a shard could not answer: {0}")]
    ShardUnavailable(String),
    /// A statement over several shards needs more memory in the proxy than it may use.
    #[error("{0}")]
    FanoutTooLarge(String),
    #[error("prepared statement \"{name}\" does not exist")]
    UnknownPreparedStatement { name: String },
    /// A plaintext login while `listen.tls_mode = "require"` (Postgres' pg_hba "no encryption").
    #[error("connection for user \"{user}\" refused: no encryption; this proxy requires TLS (listen.tls_mode = \"require\"): connect with sslmode=require")]
    TlsRequired { user: String },
}

impl ClientError {
    /// The SQLSTATE clients and drivers act on.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ClientError::PasswordFailed { .. } => "28P01",
            ClientError::UnknownRole { .. } => "28000",
            ClientError::ProtocolViolation(_) => "08P01",
            ClientError::UnsupportedProtocol { .. } => "0A000",
            ClientError::TooManyClients { .. } => "53300",
            ClientError::ReservedForAdmins { .. } => "53300",
            ClientError::PoolTimeout { .. } => "53300",
            ClientError::ServerUnavailable { .. } => "08006",
            ClientError::ServerTls { .. } => "08001",
            ClientError::ServerLost { .. } => "08006",
            ClientError::BackendDown { .. } => "57P03",
            ClientError::NoReplica { .. } => "57P03",
            ClientError::ShuttingDown => "57P01",
            ClientError::StartupTimeout { .. } => "08P01",
            ClientError::UnknownPreparedStatement { .. } => "26000",
            ClientError::ShardRouting(_) => "0A000",
            ClientError::ShardUnavailable(_) => "08006",
            ClientError::FanoutTooLarge(_) => "54000",
            ClientError::TlsRequired { .. } => "28000",
        }
    }

    /// `FATAL` closes the client's connection; `ERROR` leaves it usable.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ClientError::PoolTimeout { .. }
                | ClientError::UnknownPreparedStatement { .. }
                | ClientError::ServerUnavailable { .. }
                | ClientError::ServerTls { .. }
                | ClientError::BackendDown { .. }
                | ClientError::NoReplica { .. }
                | ClientError::ShardRouting(_)
                | ClientError::ShardUnavailable(_)
                | ClientError::FanoutTooLarge(_)
        )
    }

    /// Appends this error as an `ErrorResponse` frame: the one way errors reach clients.
    pub fn write(&self, out: &mut BytesMut) {
        let severity = if self.is_fatal() { "FATAL" } else { "ERROR" };
        codec::error_fields(
            out,
            b'E',
            severity,
            self.sqlstate(),
            &self.to_string(),
            None,
        );
    }

    /// The same error, but never fatal: used where the client's connection stays open.
    pub fn write_as_error(&self, out: &mut BytesMut) {
        codec::error_fields(out, b'E', "ERROR", self.sqlstate(), &self.to_string(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_postgres_sqlstates() {
        let e = ClientError::PasswordFailed { user: "u".into() };
        assert_eq!(e.sqlstate(), "28P01");
        assert!(e.is_fatal());
        let e = ClientError::PoolTimeout {
            pool: "p".into(),
            waited_ms: 5,
            size: 1,
        };
        assert_eq!(e.sqlstate(), "53300");
        assert!(!e.is_fatal());
        let mut out = BytesMut::new();
        e.write(&mut out);
        let (code, msg) = codec::parse_error_fields(&out[5..]);
        assert_eq!(code, "53300");
        assert!(msg.contains("pool_size = 1"), "{msg}");
    }
}
