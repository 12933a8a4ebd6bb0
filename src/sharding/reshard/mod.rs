//! `pgscale reshard`: moving rows to an added shard while the system runs.
//!
//! Two configs, OLD and NEW, differ only in `[[shards]]` (shards added; existing shards keep their
//! names and URLs). Every command talks straight to the shard primaries (never through a proxy):
//! - [`plan`]: what moves (ring ranges, estimated rows), and refusals of inputs that cannot work;
//! - [`copy`]: creates the run's state and the catch-up's slots, then copies the moving rows in
//!   primary-key batches, resumably, then catches up with the writes made meanwhile;
//! - [`verify`]: compares the moving rows on each source with the target, by row checksums;
//! - [`cutover`]: the running proxies switch to NEW with a short pause of writes to moving keys;
//! - [`cleanup`]: after cutover, deletes the moved rows from the sources;
//! - [`state`]: the run (phase, per-table progress) kept in the OLD config's first shard, so a
//!   crashed command resumes and `cutover` (written on top of this module) finds the run.
//!
//! The hash that decides where a row goes is the proxy's ([`crate::sharding::hash_key`]) over the
//! key column's text form, so a row lands where the proxy will look for it.

pub mod cleanup;
pub mod cli;
pub mod connect;
pub mod copy;
pub mod cutover;
pub mod plan;
pub mod state;
pub mod sync;
pub mod tables;
pub mod verify;

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Config, LoadError};
use crate::sharding::catchup::CatchupError;
use crate::sharding::{Move, Ring, RingError};

pub use cli::{run, Outcome, ReshardArgs, ReshardCommand};
pub use connect::{Login, Shards};
pub use state::{Phase, Progress, Run};
pub use tables::TableInfo;

/// Everything that can stop a reshard command. Each names the shard and table it is about, so the
/// DBA can act without reading logs.
#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("the configs' shards do not form a ring: {0}")]
    Ring(#[from] RingError),
    #[error("the configs differ in more than [[shards]] ({0}); only shards may be added")]
    ConfigsDiffer(String),
    #[error("shard `{0}` of the old config is not in the new one: renaming or removing shards is not supported")]
    ShardRemoved(String),
    #[error("shard `{name}` has primary {old} in the old config but {new} in the new one: an existing shard must keep its URL")]
    ShardUrlChanged {
        name: String,
        old: String,
        new: String,
    },
    #[error("the two configs give every key the same shard: nothing to move (add a shard to the new config)")]
    NothingMoves,
    #[error("no shard with index {0} in the old config")]
    NoSuchShard(usize),
    #[error("no --user given and the old config has no [[users]]")]
    NoUser,
    #[error("cannot connect to shard `{shard}` ({addr}): {message}")]
    Connect {
        shard: String,
        addr: String,
        message: String,
    },
    #[error("shard `{shard}`: {context}: {message}")]
    Query {
        shard: String,
        context: String,
        message: String,
    },
    #[error("table `{table}` does not exist on shard `{shard}` (database `{database}`): create the schema on every new shard before `reshard copy`")]
    MissingTable {
        table: String,
        shard: String,
        database: String,
    },
    #[error("table `{table}` on shard `{shard}` has no primary key: resharding needs one (rows are copied, checked and replicated by it)")]
    NoPrimaryKey { table: String, shard: String },
    #[error("the primary key of `{table}` on shard `{shard}` ({pk}) does not contain its shard key column `{column}`: logical replication needs it for UPDATE and DELETE")]
    KeyNotInPrimaryKey {
        table: String,
        shard: String,
        pk: String,
        column: String,
    },
    #[error("table `{table}` has primary key ({source_pk}) on shard `{source_shard}` but ({target_pk}) on shard `{target_shard}`")]
    PrimaryKeyDiffers {
        table: String,
        source_shard: String,
        source_pk: String,
        target_shard: String,
        target_pk: String,
    },
    #[error(
        "table `{table}` on shard `{shard}`: key `{key}` is not a valid {key_type:?}: {reason}"
    )]
    BadKey {
        table: String,
        shard: String,
        key: String,
        key_type: crate::sharding::KeyType,
        reason: crate::sharding::KeyError,
    },
    #[error("no reshard run for these configs yet (run id {0}): run `pgscale reshard copy` first")]
    NoRun(String),
    #[error("run {run_id} is in phase `{phase}`: {why}")]
    WrongPhase {
        run_id: String,
        phase: Phase,
        why: String,
    },
    #[error("shard `{shard}`: catch-up: {message}")]
    Catchup { shard: String, message: String },
    #[error("stopped after {0} batch(es) as PGSCALE_RESHARD_STOP_AFTER_BATCHES asked (a test knob); rerun to resume")]
    StoppedForTest(u64),
    #[error("cutover: {0}")]
    Cutover(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// A Postgres error with what the server said (tokio-postgres' own text is only "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(": {detail}"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// `map_err` adapter: a Postgres error on `shard` while doing `context`.
pub(crate) fn on_shard<'a>(
    shard: &'a str,
    context: &'a str,
) -> impl FnOnce(tokio_postgres::Error) -> ReshardError + 'a {
    move |e| ReshardError::Query {
        shard: shard.to_string(),
        context: context.to_string(),
        message: pg_message(&e),
    }
}

/// `map_err` adapter: a catch-up error on `shard` (with the server's words for a Postgres error).
pub(crate) fn catchup_on(shard: &str) -> impl FnOnce(CatchupError) -> ReshardError + '_ {
    move |e| ReshardError::Catchup {
        shard: shard.to_string(),
        message: match &e {
            CatchupError::Postgres(pg) => pg_message(pg),
            other => other.to_string(),
        },
    }
}

/// A reshard between two loaded configs: both rings, what moves, the run's id and the login.
#[derive(Debug, Clone)]
pub struct Reshard {
    pub old: Config,
    pub new: Config,
    pub old_path: PathBuf,
    pub new_path: PathBuf,
    pub old_ring: Ring,
    pub new_ring: Ring,
    pub moves: Vec<Move>,
    /// Derived from both shard lists, so every command (and every machine) finds the same run.
    pub run_id: String,
    pub login: Login,
}

impl Reshard {
    /// Loads and validates both configs and refuses pairs that are not "shards added": other
    /// sections differ, an existing shard is missing or has another URL, nothing moves.
    pub fn load(args: &ReshardArgs) -> Result<Reshard, ReshardError> {
        let old = Config::load(&args.config)?;
        let new = Config::load(&args.to)?;
        check_only_shards_added(&old, &new)?;
        let old_ring = old.ring()?;
        let new_ring = new.ring()?;
        let moves = Ring::moved_ranges(&old_ring, &new_ring);
        if moves.is_empty() {
            return Err(ReshardError::NothingMoves);
        }
        let login = Login::from_args(&old, args)?;
        Ok(Reshard {
            run_id: run_id(&old.shard_names(), &new.shard_names()),
            old_path: absolute(&args.config),
            new_path: absolute(&args.to),
            old,
            new,
            old_ring,
            new_ring,
            moves,
            login,
        })
    }

    /// Old shard names by index.
    pub fn old_names(&self) -> &[String] {
        self.old_ring.shards()
    }

    /// New shard names by index.
    pub fn new_names(&self) -> &[String] {
        self.new_ring.shards()
    }

    /// The new index of a shard name.
    pub fn new_index(&self, name: &str) -> Option<usize> {
        self.new_names().iter().position(|n| n == name)
    }

    /// The old index of a shard name.
    pub fn old_index(&self, name: &str) -> Option<usize> {
        self.old_names().iter().position(|n| n == name)
    }

    /// Shards of NEW that OLD does not have: they receive reference tables whole.
    pub fn added_shards(&self) -> Vec<usize> {
        (0..self.new_names().len())
            .filter(|&i| self.old_index(&self.new_names()[i]).is_none())
            .collect()
    }

    /// Distinct (source old index, target new index) pairs that rows move along, in move order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for m in &self.moves {
            if let (Some(s), Some(t)) = (self.old_index(&m.from), self.new_index(&m.to)) {
                if !pairs.contains(&(s, t)) {
                    pairs.push((s, t));
                }
            }
        }
        pairs
    }

    /// Old indices of the shards that lose keys (they get a publication and a slot).
    pub fn sources(&self) -> Vec<usize> {
        let mut sources: Vec<usize> = self.pairs().into_iter().map(|(s, _)| s).collect();
        sources.dedup();
        sources.sort_unstable();
        sources.dedup();
        sources
    }

    /// Where a row with key hash `hash` found on old shard `source` goes: the new index of its
    /// new owner if the old ring placed it on `source` and the new ring moves it; else None.
    pub fn moving_target(&self, source: usize, hash: u64) -> Option<usize> {
        let source_name = self.old_names().get(source)?;
        if self.old_ring.owner_name(hash) != source_name {
            return None;
        }
        let new_owner = self.new_ring.owner(hash);
        (self.new_names().get(new_owner)? != source_name).then_some(new_owner)
    }

    /// The catch-up's route for old shard `source`: a change to a key that moves from it goes to
    /// the new owner's index (the `targets` passed to the catch-up are the NEW shards by index).
    pub fn route(&self, source: usize) -> impl Fn(&str, u64) -> Option<usize> + Send + Sync + '_ {
        move |_table: &str, hash: u64| self.moving_target(source, hash)
    }
}

/// The run's id: hex of xxh3 over both shard lists, so reruns and other machines agree on it.
pub fn run_id(old: &[String], new: &[String]) -> String {
    let text = format!("{}\n->\n{}", old.join("\n"), new.join("\n"));
    format!("{:016x}", xxh3_64(text.as_bytes()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Refuses anything but "shards added": every other section must be the same, and every old shard
/// must be in the new config by name with the same primary.
pub fn check_only_shards_added(old: &Config, new: &Config) -> Result<(), ReshardError> {
    let without_shards = |c: &Config| {
        let mut c = c.clone();
        c.shards.clear();
        toml::to_string(&c).map_err(|e| ReshardError::ConfigsDiffer(e.to_string()))
    };
    let (a, b) = (without_shards(old)?, without_shards(new)?);
    if a != b {
        let differing: Vec<&str> = section_names()
            .iter()
            .copied()
            .filter(|s| section(&a, s) != section(&b, s))
            .collect();
        let what = if differing.is_empty() {
            "top-level settings".to_string()
        } else {
            differing.join(", ")
        };
        return Err(ReshardError::ConfigsDiffer(format!("differing: {what}")));
    }
    let new_names = new.shard_names();
    for (i, name) in old.shard_names().iter().enumerate() {
        let Some(j) = new_names.iter().position(|n| n == name) else {
            return Err(ReshardError::ShardRemoved(name.clone()));
        };
        let (o, n) = (&old.shards[i].primary, &new.shards[j].primary);
        let same = match (
            crate::config::BackendAddr::parse(o),
            crate::config::BackendAddr::parse(n),
        ) {
            (Ok(x), Ok(y)) => x == y,
            _ => o == n,
        };
        if !same {
            return Err(ReshardError::ShardUrlChanged {
                name: name.clone(),
                old: display_addr(o),
                new: display_addr(n),
            });
        }
    }
    Ok(())
}

fn section_names() -> &'static [&'static str] {
    &[
        "listen", "pool", "routing", "health", "sharding", "admin", "metrics", "log", "users",
    ]
}

/// The serialized text of one top-level section (for naming what differs).
fn section(text: &str, name: &str) -> Option<String> {
    let value: toml::Value = toml::from_str(text).ok()?;
    value.get(name).map(|v| v.to_string())
}

/// `host:port` of a config URL, without credentials.
pub(crate) fn display_addr(url: &str) -> String {
    crate::config::BackendAddr::parse(url).map_or_else(|_| "?".into(), |a| a.to_string())
}

#[cfg(test)]
mod tests;
