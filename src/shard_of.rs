//! `pgscale shard-of`: which shard owns a key, computed from a config exactly as the proxy would, so
//! operators and scripts can find a row's server without asking the proxy.

use crate::config::{BackendAddr, Config, KeyTypeName};
use crate::sharding::{hash_key, KeyError, KeyType, RingError, ShardKey};

/// Why a key's shard could not be named. Each maps to exit status 2: the input, not pgscale, is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ShardOfError {
    #[error("table `{table}` is a reference table (a copy on every shard), not a sharded one")]
    ReferenceTable { table: String },
    #[error("table `{table}` is not sharded (sharded tables: {known})")]
    UnknownTable { table: String, known: String },
    #[error("`{key}` is not a {key_type} key: {source}")]
    BadKey {
        key: String,
        key_type: KeyTypeName,
        source: KeyError,
    },
    #[error("the config's shards do not form a ring: {0}")]
    Ring(#[from] RingError),
}

/// Where one key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOf {
    /// The owning shard's name.
    pub shard: String,
    /// Its index in `[[shards]]`.
    pub index: usize,
    /// Its primary as `postgres://host:port` (credentials in the config URL are left out, so the
    /// output can be logged).
    pub primary: String,
    /// The key's hash, the point looked up on the ring.
    pub hash: u64,
}

/// The shape is `NAME (index I, postgres://HOST:PORT) hash=0x…`, so a script can take the first word.
impl std::fmt::Display for ShardOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (index {}, {}) hash={:#018x}",
            self.shard, self.index, self.primary, self.hash
        )
    }
}

/// The shard owning `key` (as text, as a client would send it in a text-format parameter), read by
/// `table`'s key type or, without a table, by `sharding.key_type`.
pub fn shard_of(config: &Config, table: Option<&str>, key: &str) -> Result<ShardOf, ShardOfError> {
    let key_type = key_type_of(config, table)?;
    let parsed =
        ShardKey::from_text(KeyType::from(key_type), key.as_bytes()).map_err(|source| {
            ShardOfError::BadKey {
                key: key.to_string(),
                key_type,
                source,
            }
        })?;
    let ring = config.ring()?;
    let hash = hash_key(&parsed);
    let index = ring.owner(hash);
    let primary = config
        .shards
        .get(index)
        .map(|shard| display_url(&shard.primary))
        .unwrap_or_default();
    Ok(ShardOf {
        shard: ring.owner_name(hash).to_string(),
        index,
        primary,
        hash,
    })
}

/// The key type `table` is sharded by (the section's default without a table).
fn key_type_of(config: &Config, table: Option<&str>) -> Result<KeyTypeName, ShardOfError> {
    let Some(table) = table else {
        return Ok(config.sharding.key_type);
    };
    // Matched as the proxy matches statements: unqualified, case-folded.
    let wanted = crate::config::table_match_name(table);
    let sharded = config
        .sharding
        .tables
        .iter()
        .find(|t| crate::config::table_match_name(&t.name) == wanted);
    if let Some(found) = sharded {
        return Ok(found.key_type(&config.sharding));
    }
    if config
        .sharding
        .reference_tables
        .iter()
        .any(|r| crate::config::table_match_name(r) == wanted)
    {
        return Err(ShardOfError::ReferenceTable {
            table: table.to_string(),
        });
    }
    let known: Vec<&str> = config
        .sharding
        .tables
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    Err(ShardOfError::UnknownTable {
        table: table.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
}

/// `postgres://host:port` of a config URL, without user, password or database.
fn display_url(url: &str) -> String {
    match BackendAddr::parse(url) {
        Ok(addr) if addr.host.contains(':') => format!("postgres://[{}]:{}", addr.host, addr.port),
        Ok(addr) => format!("postgres://{addr}"),
        Err(_) => "postgres://?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharding::Ring;

    fn config() -> Config {
        Config::from_toml(
            r#"
            [sharding]
            vnodes_per_shard = 16
            reference_tables = ["countries"]
            [[sharding.tables]]
            name = "users"
            column = "id"
            [[sharding.tables]]
            name = "sessions"
            column = "token"
            key_type = "text"
            [[users]]
            name = "u"
            password = "p"
            [[shards]]
            name = "east"
            primary = "postgres://u:secret@127.0.0.1:5432/db"
            [[shards]]
            name = "west"
            primary = "postgres://[::1]:5433"
            "#,
        )
        .expect("parses")
    }

    #[test]
    fn names_the_owner_the_ring_gives() {
        let config = config();
        let ring = Ring::new(&["east", "west"], 16).expect("ring");
        for (table, key, want) in [
            (None, "42", ShardKey::Int(42)),
            (Some("USERS"), "-7", ShardKey::Int(-7)),
            (Some("public.sessions"), "abc", ShardKey::Text("abc".into())),
        ] {
            let found = shard_of(&config, table, key).expect("shard");
            let hash = hash_key(&want);
            assert_eq!(found.hash, hash);
            assert_eq!(found.index, ring.owner(hash));
            assert_eq!(found.shard, ring.owner_name(hash));
        }
    }

    #[test]
    fn output_starts_with_the_name_and_hides_credentials() {
        let config = config();
        let east = ShardOf {
            shard: "east".into(),
            index: 0,
            primary: display_url(&config.shards[0].primary),
            hash: 0xab,
        };
        assert_eq!(
            east.to_string(),
            "east (index 0, postgres://127.0.0.1:5432) hash=0x00000000000000ab"
        );
        assert_eq!(
            display_url(&config.shards[1].primary),
            "postgres://[::1]:5433"
        );
    }

    #[test]
    fn bad_keys_and_tables_are_typed_errors() {
        let config = config();
        assert!(matches!(
            shard_of(&config, None, "forty-two"),
            Err(ShardOfError::BadKey {
                key_type: KeyTypeName::Bigint,
                ..
            })
        ));
        assert!(matches!(
            shard_of(&config, Some("orders"), "1"),
            Err(ShardOfError::UnknownTable { .. })
        ));
        assert!(matches!(
            shard_of(&config, Some("countries"), "1"),
            Err(ShardOfError::ReferenceTable { .. })
        ));
    }
}
