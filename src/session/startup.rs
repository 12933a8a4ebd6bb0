//! Login: first packet, authentication, picking the pool, and telling the client its parameters, key
//! and first `ReadyForQuery`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;

use super::meter::Meter;
use super::params::ClientParams;
use super::routing::{Routing, ShardPools};
use super::{EndReason, Live, Session, Shared};
use crate::config::{Config, PoolMode};
use crate::error::ClientError;
use crate::pool::backend::Backend;
use crate::pool::server::ConnectSpec;
use crate::pool::{Pool, PoolKey, PoolSettings};
use crate::protocol::client_auth;
use crate::protocol::codec;
use crate::protocol::startup::{
    clip_name, parse_options, FirstPacket, StartupError, StartupMessage,
};
use crate::stats::NewClient;
use crate::tls::ClientStream;

/// Runs the startup phase. `Ok(None)` when the connection was only a cancel request.
/// `admin_only`: a slot reserved for `[admin] users`; anyone else is refused once authenticated.
pub(super) async fn login(
    tcp: TcpStream,
    shared: &Arc<Shared>,
    admin_only: bool,
) -> Result<Option<Session>, EndReason> {
    // The generation first: a reload installed after it is picked up at the first transaction.
    let generation = shared.generation.load(Ordering::SeqCst);
    let live = shared.live();
    let config = live.config.clone();
    let timeout = Duration::from_millis(config.listen.startup_timeout_ms);
    let tls = shared.tls.load_full();
    let (mut client, first) = match crate::tls::negotiate::first_packet(tcp, tls, timeout).await {
        Ok(found) => found,
        Err(refused) => {
            let error = match refused.error {
                StartupError::Closed | StartupError::Io(_) => return Err(EndReason::ClientGone),
                StartupError::Tls(e) => {
                    shared
                        .stats
                        .tls_handshakes_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(error = %e, "client TLS handshake failed");
                    return Err(EndReason::StartupFailed);
                }
                StartupError::Timeout => ClientError::StartupTimeout {
                    ms: config.listen.startup_timeout_ms,
                },
                StartupError::UnsupportedProtocol { major, minor } => {
                    ClientError::UnsupportedProtocol { major, minor }
                }
                other => ClientError::ProtocolViolation(other.to_string()),
            };
            shared.stats.refused_startup.fetch_add(1, Ordering::Relaxed);
            return match refused.stream {
                Some(mut client) => Err(refuse(&mut client, error).await),
                None => {
                    tracing::info!(error = %error, "client closed at startup");
                    Err(EndReason::StartupFailed)
                }
            };
        }
    };
    let startup = match first {
        FirstPacket::Cancel { pid, secret } => {
            shared.cancels.cancel(pid, secret).await;
            return Ok(None);
        }
        FirstPacket::Startup(m) => m,
        // Only returned when TLS is offered, and then handled by `first_packet`.
        FirstPacket::SslRequest => return Err(EndReason::StartupFailed),
    };
    if config.listen.tls_mode == crate::tls::TlsMode::Require && !client.is_tls() {
        shared.stats.refused_startup.fetch_add(1, Ordering::Relaxed);
        let user = clip_name(startup.get("user").unwrap_or_default()).to_string();
        return Err(refuse(&mut client, ClientError::TlsRequired { user }).await);
    }
    let user_name = clip_name(startup.get("user").unwrap_or_default()).to_string();
    let database = clip_name(
        startup
            .get("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(&user_name),
    )
    .to_string();
    let options = match parse_options(startup.get("options").unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => return Err(refuse(&mut client, ClientError::ProtocolViolation(e)).await),
    };

    negotiate_version(&mut client, &startup).await?;
    let user = config.user(&user_name);
    let auth = tokio::time::timeout(
        timeout,
        client_auth::authenticate(&mut client, &user_name, user, &live.scram_secrets),
    )
    .await;
    match auth {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            shared.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
            return Err(refuse(&mut client, e).await);
        }
        Err(_) => {
            shared.stats.refused_startup.fetch_add(1, Ordering::Relaxed);
            let e = ClientError::StartupTimeout {
                ms: config.listen.startup_timeout_ms,
            };
            return Err(refuse(&mut client, e).await);
        }
    }
    let Some(user) = user else {
        return Err(EndReason::StartupFailed);
    };
    // Checked after authentication, as Postgres does for its reserved slots: the answer tells
    // nothing about which names are admins to someone without their password.
    if admin_only && !config.admin.users.contains(&user_name) {
        shared
            .stats
            .refused_max_client_conn
            .fetch_add(1, Ordering::Relaxed);
        let error = ClientError::ReservedForAdmins {
            max: config.listen.max_client_conn,
            reserved: config.listen.admin_reserved_conn,
        };
        return Err(refuse(&mut client, error).await);
    }
    if database == crate::admin::ADMIN_DATABASE {
        let listing = list_client(shared, &client, &startup, &user_name, &database, true);
        Box::pin(crate::admin::serve(
            client,
            shared.clone(),
            &config,
            listing,
        ))
        .await;
        return Ok(None);
    }

    let (pool, routing) = pools_of(shared, &live, &database, user, None);
    let mode = config.pool.mode;
    let params = ClientParams::from_startup(&startup.params, &options);
    let listing = list_client(shared, &client, &startup, &user_name, &database, false);
    let meter = Meter::new(
        listing,
        shared.stats.database(&database),
        config.log.statements,
    );
    let pid = match mode {
        PoolMode::Transaction => shared.next_pid.fetch_add(1, Ordering::Relaxed),
        PoolMode::Session => 0,
    };
    let mut session = Session {
        client,
        shared: shared.clone(),
        pool,
        routing,
        copy_split: None,
        mode,
        rename_statements: mode == PoolMode::Transaction,
        max_message: config.listen.max_message_size,
        server: None,
        params,
        statements: Default::default(),
        pending: Default::default(),
        client_buf: BytesMut::new(),
        server_buf: BytesMut::new(),
        to_server: BytesMut::new(),
        to_client: BytesMut::new(),
        server_skip: 0,
        status: b'I',
        copy_in: false,
        ignore_till_sync: false,
        unsynced: false,
        inflight_ops: Vec::new(),
        saw_error: false,
        unnamed_ops: Vec::new(),
        portal_ops: Vec::new(),
        pinned: false,
        server_dirty: false,
        server_prepared_unknown: false,
        cancel_slot: Default::default(),
        pid,
        secret: 0,
        shutting_down: false,
        meter,
        generation,
        user_name,
    };
    session.greet().await?;
    Ok(Some(session))
}

/// Lists a client that logged in (for `SHOW CLIENTS` and the metrics).
fn list_client(
    shared: &Shared,
    client: &ClientStream,
    startup: &StartupMessage,
    user: &str,
    database: &str,
    admin: bool,
) -> crate::stats::ClientListing {
    shared.stats.clients.add(NewClient {
        user,
        database,
        peer: client.peer_addr().ok(),
        local: client.local_addr().ok(),
        application_name: startup.get("application_name").unwrap_or_default(),
        admin,
    })
}

/// Answers a request for a newer minor protocol version or `_pq_.` options with what we support.
async fn negotiate_version(
    client: &mut ClientStream,
    startup: &StartupMessage,
) -> Result<(), EndReason> {
    let unknown: Vec<&str> = startup
        .params
        .iter()
        .filter(|(n, _)| n.starts_with("_pq_."))
        .map(|(n, _)| n.as_str())
        .collect();
    if startup.minor_version == 0 && unknown.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    let at = codec::begin(&mut out, b'v');
    out.put_i32(0);
    out.put_i32(unknown.len() as i32);
    for name in unknown {
        codec::put_cstr(&mut out, name.as_bytes());
    }
    codec::finish(&mut out, at);
    client
        .write_all(&out)
        .await
        .map_err(|_| EndReason::ClientGone)
}

/// A client's pool on its default shard's primary, and its pools on every backend when it routes
/// (transaction mode with replicas or several shards).
fn pools_of(
    shared: &Arc<Shared>,
    live: &Live,
    database: &str,
    user: &crate::config::UserConfig,
    routes: Option<bool>,
) -> (Arc<Pool>, Option<Box<Routing>>) {
    let config = &live.config;
    let topology = &live.topology;
    // Unsharded statements (and session-mode clients) use the default shard.
    let default_shard = config
        .default_shard_index()
        .min(topology.shards.len().saturating_sub(1));
    let pool = pool_for(
        shared,
        config,
        &topology.shards[default_shard].primary,
        database,
        user,
    );
    let splits =
        config.routing.read_write_split && topology.shards.iter().any(|s| !s.replicas.is_empty());
    // A connected client keeps routing or not as it started (`routes`): its unit handling is set up
    // for one or the other. Routing over a shard without replicas just sends everything to the
    // primary.
    let routes = routes.unwrap_or(
        config.pool.mode == PoolMode::Transaction && (splits || topology.shards.len() > 1),
    );
    let routing = routes.then(|| {
        let shards = topology
            .shards
            .iter()
            .map(|shard| ShardPools {
                primary: pool_for(shared, config, &shard.primary, database, user),
                replicas: shard
                    .replicas
                    .iter()
                    .map(|backend| pool_for(shared, config, backend, database, user))
                    .collect(),
            })
            .collect();
        Box::new(Routing::new(
            shards,
            topology.clone(),
            shared.catalogs.get(database),
        ))
    });
    (pool, routing)
}

impl Session {
    /// After a reload, moves this session to the new pools (between transactions: it holds no
    /// server). A client whose user was removed keeps the pools it has.
    pub(super) fn refresh_pools(&mut self) {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        if generation == self.generation || self.server.is_some() {
            return;
        }
        self.refresh_pools_now();
    }

    /// [`Session::refresh_pools`] whatever the generation.
    pub(super) fn refresh_pools_now(&mut self) {
        self.generation = self.shared.generation.load(Ordering::SeqCst);
        let live = self.shared.live();
        self.meter.log_statements = live.config.log.statements;
        let Some(user) = live.config.user(&self.user_name) else {
            return;
        };
        let database = self.pool.key.database.clone();
        let routes = self.routing.is_some();
        let (pool, routing) = pools_of(&self.shared, &live, &database, user, Some(routes));
        self.pool = pool;
        if let (Some(current), Some(new)) = (self.routing.as_deref_mut(), routing) {
            current.replace_pools(*new);
        }
    }
}

/// This client's pool on `backend`, created on first use.
fn pool_for(
    shared: &Arc<Shared>,
    config: &Config,
    backend: &Arc<Backend>,
    database: &str,
    user: &crate::config::UserConfig,
) -> Arc<Pool> {
    let key = PoolKey {
        addr: backend.addr.clone(),
        database: database.to_string(),
        user: user.server_user().to_string(),
    };
    shared.pools.get_or_create(key, |key| {
        let pool = Pool::new(
            key.clone(),
            connect_spec(config, backend, key, user),
            PoolSettings::from_config(&config.pool, user.pool_size),
            backend.clone(),
        );
        let shard = config
            .shard_names()
            .get(backend.shard)
            .cloned()
            .unwrap_or_default();
        let _ = pool
            .wait_seconds
            .set(shared.metrics.pool_wait_histogram(backend, &shard));
        pool
    })
}

/// How a pool logs in to its server.
pub(crate) fn connect_spec(
    config: &Config,
    backend: &Backend,
    key: &PoolKey,
    user: &crate::config::UserConfig,
) -> ConnectSpec {
    ConnectSpec {
        addr: backend.addr.clone(),
        user: key.user.clone(),
        password: user.server_password().map(str::to_string),
        database: key.database.clone(),
        timeout: config.pool.connect_timeout(),
        application_name: None,
    }
}

impl Session {
    /// A routing client's database is used for the first time: learn which of its functions write
    /// before any statement is routed (a failure leaves the built-in list and is retried later).
    async fn learn_functions(&mut self) {
        let Some(routing) = self.routing.as_deref() else {
            return;
        };
        let catalogs = self.shared.catalogs.clone();
        if !catalogs.needs_first_load(&routing.catalog) {
            return;
        }
        let catalog = routing.catalog.clone();
        if let Some(server) = self.server.as_mut() {
            if let Err(error) = Box::pin(catalogs.load(&catalog, server)).await {
                tracing::warn!(pool = %self.pool.key, %error, "cannot read the function catalog");
                catalog.mark_stale();
            }
        }
    }
}

/// Sends a fatal error during startup and ends the connection.
async fn refuse(client: &mut ClientStream, error: ClientError) -> EndReason {
    tracing::info!(error = %error, code = error.sqlstate(), "client refused at startup");
    let mut out = BytesMut::new();
    error.write(&mut out);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
    EndReason::StartupFailed
}

impl Session {
    /// Applies the client's settings on a server (which also validates them and tells us how Postgres
    /// spells their values), then sends `ParameterStatus`, `BackendKeyData` and `ReadyForQuery`.
    async fn greet(&mut self) -> Result<(), EndReason> {
        let cached = match self.mode {
            PoolMode::Transaction => self.pool.login_params(self.params.fingerprint()),
            PoolMode::Session => None,
        };
        let reported = match cached {
            Some(list) => list.as_ref().clone(),
            None => {
                if let Err(error) = self.attach_server().await {
                    let mut out = BytesMut::new();
                    match error.server_frame() {
                        Some(frame) => out.extend_from_slice(frame),
                        None => error.client_error(&self.pool).write(&mut out),
                    }
                    let _ = self.client.write_all(&out).await;
                    return Err(EndReason::StartupFailed);
                }
                self.learn_functions().await;
                let reported = self
                    .server
                    .as_ref()
                    .map(|s| s.reported.clone())
                    .unwrap_or_default();
                self.pool
                    .remember_login_params(self.params.fingerprint(), reported.clone());
                if self.mode == PoolMode::Transaction {
                    self.release_server();
                }
                reported
            }
        };
        if self.mode == PoolMode::Session {
            self.pid = self.server.as_ref().map_or(0, |s| s.pid);
        }
        let (secret, slot) = self.shared.cancels.register(self.pid);
        self.secret = secret;
        self.cancel_slot = slot;
        if let Some(server) = &self.server {
            self.cancel_slot.set(Some(server.cancel_key()));
        }
        let mut out = BytesMut::new();
        for (name, value) in &reported {
            codec::parameter_status(&mut out, name, value);
        }
        codec::backend_key_data(&mut out, self.pid, self.secret);
        codec::ready_for_query(&mut out, b'I');
        self.client
            .write_all(&out)
            .await
            .map_err(|_| EndReason::ClientGone)
    }
}
