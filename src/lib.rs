//! pgscale: a Postgres scaling proxy.
//!
//! Module map:
//! - [`config`]: the TOML config, its validation (`pgscale check`).
//! - [`listener`]: accepting clients, graceful shutdown.
//! - [`session`]: one client from login to goodbye; transaction pooling, prepared statements and
//!   session settings carried across server connections; read/write splitting of each unit.
//! - [`protocol`]: wire frames, startup packets, client authentication (SCRAM, md5, trust).
//! - [`pool`]: server connections and their pools; backends with circuit breakers, health polling and
//!   the choice of replica.
//! - [`router`]: what statements do: read/write classification, the plan cache, routing hints, and
//!   which statements change session state.
//! - [`sharding`]: the consistent-hash ring (xxh3 + virtual nodes) and shard keys' canonical
//!   encoding (a pure function users can reproduce); which shards a statement touches (extraction,
//!   cached) and, per execution, resolution of its keys.
//! - [`shard_of`]: `pgscale shard-of`, a key's shard computed from a config.
//! - [`cancel`]: routing cancel requests to the right server.
//! - [`error`]: the errors clients see, with their SQLSTATEs.
//! - [`local_cluster`]: throwaway local Postgres servers for `pgscale demo` and the tests.
//! - [`demo`]: `pgscale demo`.
//! - [`tls`]: TLS between clients and the proxy (rustls), certificate generation.
#![deny(clippy::unwrap_used)]

pub mod admin;
pub mod cancel;
pub mod config;
pub mod demo;
pub mod error;
pub mod listener;
pub mod local_cluster;
pub mod pause;
pub mod pool;
pub mod prometheus;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod session;
pub mod shard_of;
pub mod sharding;
pub mod stats;
pub mod tls;
