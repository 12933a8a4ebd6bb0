//! Whether a database named in `PAUSE`, `RESUME` or `RECONNECT` exists, so a typo is an error
//! instead of a command that silently holds or closes nothing: the first shard's primary is asked
//! (`pg_database`); while it cannot answer (down, during a switchover), a database some client uses
//! through the proxy is taken on trust.

use crate::pool::query::query_rows;
use crate::pool::server::{ConnectSpec, ServerConn};
use crate::session::Shared;

/// Why a database name was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum UnknownDatabase {
    #[error("database \"{0}\" does not exist")]
    Missing(String),
    #[error(
        "database \"{name}\" is not in use through pgscale, and the primary could not be asked whether it exists: {reason}"
    )]
    Unverified { name: String, reason: String },
}

impl UnknownDatabase {
    /// Postgres' code for a database that does not exist; "not in the right state" while the
    /// answer cannot be had.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            UnknownDatabase::Missing(_) => "3D000",
            UnknownDatabase::Unverified { .. } => "55000",
        }
    }
}

/// Ok when `name` exists on the first shard's primary or, if that cannot be asked, is in use
/// through the proxy.
pub async fn check(shared: &Shared, name: &str) -> Result<(), UnknownDatabase> {
    match ask_primary(shared, name).await {
        Err(UnknownDatabase::Unverified { .. })
            if shared.pools.all().iter().any(|p| p.key.database == name) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn ask_primary(shared: &Shared, name: &str) -> Result<(), UnknownDatabase> {
    let unverified = |reason: String| UnknownDatabase::Unverified {
        name: name.to_string(),
        reason,
    };
    let config = shared.config();
    let topology = shared.topology();
    let user = config
        .health_user()
        .ok_or_else(|| unverified("no [[users]] entry to ask as".into()))?;
    let shard = topology
        .shards
        .first()
        .ok_or_else(|| unverified("no shard is configured".into()))?;
    let spec = ConnectSpec {
        addr: shard.primary.addr.clone(),
        user: user.server_user().to_string(),
        password: user.server_password().map(str::to_string),
        database: config.health.database.clone(),
        timeout: config.health.timeout(),
        application_name: Some("pgscale admin"),
    };
    let mut conn = ServerConn::connect(&spec)
        .await
        .map_err(|e| unverified(e.to_string()))?;
    // Hex-encoded: no quoting setting or character in the name can change the statement.
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let sql = format!(
        "select 1 from pg_catalog.pg_database \
         where datname = convert_from(decode('{hex}', 'hex'), 'UTF8')"
    );
    let rows = tokio::time::timeout(config.health.timeout(), query_rows(&mut conn, &sql))
        .await
        .map_err(|_| unverified("no answer in time".into()))?
        .map_err(|e| unverified(e.to_string()))?;
    match rows.is_empty() {
        true => Err(UnknownDatabase::Missing(name.to_string())),
        false => Ok(()),
    }
}
