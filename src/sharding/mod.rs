//! Sharding: which shard owns a row, decided by a consistent-hash ring over the shard key.
//!
//! The function is pure and fully specified so that a user can compute a key's shard outside
//! pgscale:
//!
//! 1. The key is parsed by its [`KeyType`] into a [`ShardKey`] (from a SQL literal, a text-format
//!    bind parameter or a binary-format bind parameter; all three give the same key).
//! 2. The key's canonical bytes ([`ShardKey::with_canonical_bytes`]) are hashed with XXH3-64, seed 0
//!    ([`hash_key`]).
//! 3. The hash's owner on the [`Ring`] is the shard of the first ring point at or after the hash,
//!    wrapping around to the lowest point ([`Ring::owner`]). Each shard contributes the points
//!    `xxh3_64("{shard_name}#{i}")` for `i` in `0..vnodes_per_shard`.
//!
//! A ring is an immutable value: resharding builds a new one, lists what changes hands with
//! [`Ring::moved_ranges`], and swaps it in whole.
//!
//! Routing by key happens in two steps, so that the expensive one is cached:
//! - [`extract`]: once per statement shape (a plan-cache miss), the [`ShardPlan`] of a parsed
//!   statement under the [`Rules`]: which key values it is pinned to, by position ([`KeyRef`]), or
//!   why it goes everywhere, or why it is refused.
//! - [`resolve`]: per execution, the shards those positions name in this text and Bind message.
//! - [`split`]: a multi-row INSERT (simple protocol) as one INSERT per shard.

pub mod budget;
pub mod catchup;
pub mod copy_split;
pub mod extract;
pub mod freeze;
mod key;
mod live;
pub mod merge;
pub mod plan;
pub mod reshard;
pub mod resolve;
mod ring;
pub mod rules;
pub mod scatter_cache;
pub mod split;
pub mod unit;

pub use extract::shard_plan;
pub use key::{KeyError, KeyType, ShardKey};
pub use live::Sharding;
pub use plan::{KeyRef, Keys, ShardPlan};
pub use resolve::{
    copy_format, resolve, resolve_insert_rows, BindParams, CopyFormat, ResolveError, ShardSet,
};
pub use ring::{hash_key, vnode_point, HashRange, Move, Ring, RingError, DEFAULT_VNODES_PER_SHARD};
pub use rules::{Rules, ShardedTable};
pub use split::{split_insert, SplitError};
