//! Config validation: every problem found, each with the field it concerns.

use std::collections::HashSet;

use super::{AuthMethod, Config};

/// One thing wrong with a config, tied to a dotted field path such as `users[1].password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All the problems of one config.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s):\n{}", .problems.len(), render(.problems))]
pub struct ValidationError {
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Checks the whole config and returns every problem, not just the first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut problems = Vec::new();
        let mut add = |field: String, message: String| problems.push(Problem { field, message });

        if let Err(e) = self.listen_addr() {
            add("listen.address".into(), e);
        }
        if let Err(e) = self.metrics_addr() {
            add("metrics.address".into(), e);
        }
        for (list, names) in [
            ("admin.users", &self.admin.users),
            ("admin.stats_users", &self.admin.stats_users),
        ] {
            for (i, name) in names.iter().enumerate() {
                if self.user(name).is_none() {
                    add(
                        format!("{list}[{i}]"),
                        format!("`{name}` is not in [[users]]: admins log in with a [[users]] entry's credentials"),
                    );
                }
            }
        }
        for (field, message) in crate::tls::config_problems(&self.listen) {
            add(field, message);
        }
        if self.metrics.max_connections == 0 {
            add(
                "metrics.max_connections".into(),
                "must be at least 1".into(),
            );
        }
        if self.listen.max_client_conn == 0 {
            add("listen.max_client_conn".into(), "must be at least 1".into());
        }
        if self.listen.max_message_size < 1024 {
            add(
                "listen.max_message_size".into(),
                "must be at least 1024 bytes".into(),
            );
        }
        if self.pool.pool_size == 0 {
            add("pool.pool_size".into(), "must be at least 1".into());
        }
        if self.pool.min_idle > self.pool.pool_size {
            add(
                "pool.min_idle".into(),
                format!(
                    "{} exceeds pool.pool_size {}",
                    self.pool.min_idle, self.pool.pool_size
                ),
            );
        }
        for (name, value) in [
            ("pool.checkout_timeout_ms", self.pool.checkout_timeout_ms),
            ("pool.connect_timeout_ms", self.pool.connect_timeout_ms),
            ("listen.startup_timeout_ms", self.listen.startup_timeout_ms),
            ("metrics.header_timeout_ms", self.metrics.header_timeout_ms),
            (
                "metrics.request_timeout_ms",
                self.metrics.request_timeout_ms,
            ),
        ] {
            if value == 0 {
                add(name.into(), "must be greater than 0".into());
            }
        }

        if self.users.is_empty() {
            add(
                "users".into(),
                "at least one [[users]] entry is needed".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let field = |f: &str| format!("users[{i}].{f}");
            if user.name.is_empty() {
                add(field("name"), "must not be empty".into());
            } else if !seen.insert(user.name.as_str()) {
                add(field("name"), format!("`{}` is listed twice", user.name));
            }
            if user.pool_size == Some(0) {
                add(field("pool_size"), "must be at least 1".into());
            }
            if let Some(secret) = &user.scram_secret {
                if let Err(e) = crate::protocol::scram::ScramSecret::parse(secret) {
                    add(
                        field("scram_secret"),
                        format!("not a SCRAM-SHA-256 verifier: {e}"),
                    );
                }
            }
            match user.auth {
                AuthMethod::ScramSha256
                    if user.password.is_none() && user.scram_secret.is_none() =>
                {
                    add(
                        field("password"),
                        "scram-sha-256 needs `password` or `scram_secret`".into(),
                    );
                }
                AuthMethod::Md5 if user.password.is_none() => {
                    add(
                        field("password"),
                        "md5 needs `password` (a plain password or an md5… hash)".into(),
                    );
                }
                _ => {}
            }
            if user.server_password().is_none() {
                tracing::debug!(user = %user.name, "no server password: servers must trust this role");
            }
        }

        if self.shards.is_empty() {
            add(
                "shards".into(),
                "at least one [[shards]] entry is needed".into(),
            );
        }
        for (i, shard) in self.shards.iter().enumerate() {
            if let Err(p) = shard.primary_addr(i) {
                add(p.field, p.message);
            }
            for j in 0..shard.replicas.len() {
                if let Err(p) = shard.replica_addr(i, j) {
                    add(p.field, p.message);
                }
            }
        }

        self.validate_routing(&mut add);
        self.validate_sharding(&mut add);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems })
        }
    }
}

impl Config {
    fn validate_routing(&self, add: &mut impl FnMut(String, String)) {
        if self.routing.plan_cache_size == 0 {
            add(
                "routing.plan_cache_size".into(),
                "must be at least 1".into(),
            );
        }
        for (i, name) in self.routing.write_functions.iter().enumerate() {
            if name.trim().is_empty() || name.split('.').count() > 2 {
                add(
                    format!("routing.write_functions[{i}]"),
                    format!("`{name}` is not `name` or `schema.name`"),
                );
            }
        }
        for (name, value) in [
            ("health.interval_ms", self.health.interval_ms),
            ("health.timeout_ms", self.health.timeout_ms),
            (
                "routing.catalog_refresh_ms",
                self.routing.catalog_refresh_ms,
            ),
        ] {
            if value == 0 {
                add(name.into(), "must be greater than 0".into());
            }
        }
        if self.health.failure_threshold == 0 {
            add(
                "health.failure_threshold".into(),
                "must be at least 1".into(),
            );
        }
        if self.health.database.is_empty() {
            add("health.database".into(), "must not be empty".into());
        }
        if let Some(name) = &self.health.user {
            if self.user(name).is_none() {
                add(
                    "health.user".into(),
                    format!("`{name}` is not one of [[users]]"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [listen]
        address = "127.0.0.1:6432"
        [pool]
        mode = "transaction"
        pool_size = 10
        [[users]]
        name = "app"
        password = "secret"
        [[shards]]
        primary = "postgres://127.0.0.1:5432"
    "#;

    #[test]
    fn good_config_validates() {
        let config = Config::from_toml(GOOD).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.primary().expect("primary").port, 5432);
        assert_eq!(config.users[0].auth, AuthMethod::ScramSha256);
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = r#"
            [listen]
            address = "nowhere"
            [pool]
            pool_size = 0
            [[users]]
            name = "a"
            auth = "md5"
            [[users]]
            name = "a"
            password = "x"
            scram_secret = "garbage"
            [[shards]]
            primary = "mysql://h:1"
            replicas = ["not a url"]
        "#;
        let err = Config::from_toml(text)
            .expect("parses")
            .validate()
            .expect_err("invalid");
        let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "listen.address",
            "pool.pool_size",
            "users[0].password",
            "users[1].name",
            "users[1].scram_secret",
            "shards[0].primary",
            "shards[0].replicas[0]",
        ] {
            assert!(
                fields.contains(&expected),
                "missing {expected} in {fields:?}"
            );
        }
    }

    #[test]
    fn the_sample_config_is_valid() {
        let config = Config::from_toml(include_str!("../../config/shards.toml")).expect("parses");
        config.validate().expect("sample config validates");
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        let err = Config::from_toml("[pool]\npool_sise = 3\n").expect_err("typo");
        assert!(err.contains("pool_sise"), "{err}");
    }
}
