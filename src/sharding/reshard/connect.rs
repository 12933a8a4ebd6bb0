//! Connections straight to the shard primaries (never through a proxy: the copy must see and
//! write exactly one server, and the cutover freezes the proxies while it talks to the shards).

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{pg_message, Reshard, ReshardArgs, ReshardError};
use crate::config::{BackendAddr, Config};

/// Who the reshard logs in as on every shard: `--user`/`--password`, else the OLD config's first
/// `[[users]]` entry with its server-side credentials.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// The password stays out of debug output.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Login {
    pub fn from_args(old: &Config, args: &ReshardArgs) -> Result<Login, ReshardError> {
        let first = old.users.first();
        let user = match (&args.user, first) {
            (Some(user), _) => user.clone(),
            (None, Some(first)) => first.server_user().to_string(),
            (None, None) => return Err(ReshardError::NoUser),
        };
        let password = args.password.clone().or_else(|| {
            // The config's password only goes with the config's user.
            first
                .filter(|f| f.server_user() == user)
                .and_then(|f| f.server_password().map(str::to_string))
        });
        Ok(Login {
            user,
            password,
            database: args.database.clone(),
        })
    }
}

/// Connects to the primary at `url` as `login`; the connection is driven by a spawned task that
/// ends when the client is dropped.
pub async fn connect_url(shard: &str, url: &str, login: &Login) -> Result<Client, ReshardError> {
    let connect_error = |message: String| ReshardError::Connect {
        shard: shard.to_string(),
        addr: super::display_addr(url),
        message,
    };
    let addr = BackendAddr::parse(url).map_err(connect_error)?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&addr.host)
        .port(addr.port)
        .user(&login.user)
        .dbname(&login.database)
        .application_name("pgscale-reshard")
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = &login.password {
        config.password(password);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| connect_error(pg_message(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "reshard connection ended");
        }
    });
    Ok(client)
}

/// One connection to every shard of both configs. A shard in both has two connections (one in
/// `old`, one in `new`), so the catch-up can write a target while reading a source.
pub struct Shards {
    /// By OLD index.
    pub old: Vec<Client>,
    /// By NEW index.
    pub new: Vec<Client>,
}

impl Shards {
    pub async fn connect(reshard: &Reshard) -> Result<Shards, ReshardError> {
        let mut old = Vec::new();
        for (i, shard) in reshard.old.shards.iter().enumerate() {
            old.push(reshard.connect_old_at(i, &shard.primary).await?);
        }
        let mut new = Vec::new();
        for (i, shard) in reshard.new.shards.iter().enumerate() {
            let name = &reshard.new_names()[i];
            new.push(connect_url(name, &shard.primary, &reshard.login).await?);
        }
        Ok(Shards { old, new })
    }

    /// OLD shard `i`'s client.
    pub fn source(&self, i: usize) -> Result<&Client, ReshardError> {
        self.old.get(i).ok_or(ReshardError::NoSuchShard(i))
    }

    /// The NEW shards' clients by index, as the catch-up's `targets`.
    pub fn targets(&self) -> Vec<&Client> {
        self.new.iter().collect()
    }
}

impl Reshard {
    fn connect_old_at<'a>(
        &'a self,
        i: usize,
        url: &'a str,
    ) -> impl std::future::Future<Output = Result<Client, ReshardError>> + 'a {
        let name = self.old_names().get(i).cloned().unwrap_or_default();
        async move { connect_url(&name, url, &self.login).await }
    }

    /// A new connection to OLD shard `i`.
    pub async fn connect_old(&self, i: usize) -> Result<Client, ReshardError> {
        let url = self.old.shards.get(i).map(|s| s.primary.as_str());
        self.connect_old_at(i, url.unwrap_or("")).await
    }

    /// A new connection to NEW shard `i`.
    pub async fn connect_new(&self, i: usize) -> Result<Client, ReshardError> {
        let name = self.new_names().get(i).cloned().unwrap_or_default();
        let url = self.new.shards.get(i).map(|s| s.primary.as_str());
        connect_url(&name, url.unwrap_or(""), &self.login).await
    }

    /// A new connection to where the run's state lives: OLD's first shard.
    pub async fn connect_state(&self) -> Result<Client, ReshardError> {
        self.connect_old(0).await
    }
}
