//! The Postgres wire protocol v3 as the proxy needs it: frames, startup, and client authentication.

pub mod client_auth;
pub mod codec;
pub mod md5;
pub mod scram;
pub mod startup;
