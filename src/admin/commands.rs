//! The admin console's commands, parsed from SQL-ish text the way PgBouncer reads them: keywords in
//! any case, an optional trailing semicolon, an optional database name after `PAUSE`, `RESUME` and
//! `RECONNECT`.

/// What `SHOW` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Servers,
    Clients,
    Stats,
    Databases,
    Config,
    Shards,
    Version,
    Help,
    Reshard,
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    /// `RESHARD FREEZE '<path>' [TIMEOUT <ms>]`: freeze writes to the keys the config at `path`
    /// moves (resharding's cutover).
    ReshardFreeze {
        path: String,
        timeout_ms: Option<u64>,
    },
    /// `RESHARD SWITCH`: adopt the frozen config's shards and ring.
    ReshardSwitch,
    /// `RESHARD ABORT`: release the freeze on the ring in force.
    ReshardAbort,
    /// An empty query (psql sends `;` alone as one).
    Empty,
}

impl Command {
    /// Whether it changes anything (stats users may run only what does not).
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::Show(_) | Command::Empty)
    }
}

/// Why a text is not a command; the message says what is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command '{0}', use SHOW HELP;")]
pub struct UnknownCommand(pub String);

/// Parses one command.
pub fn parse(text: &str) -> Result<Command, UnknownCommand> {
    let trimmed = text.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let unknown = || UnknownCommand(trimmed.to_string());
    let database = |rest: &[&str]| -> Result<Option<String>, UnknownCommand> {
        match rest {
            [] => Ok(None),
            [name] => Ok(Some(unquote(name))),
            _ => Err(unknown()),
        }
    };
    match upper
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Ok(Command::Empty),
        ["SHOW", what] => {
            let show = match *what {
                "POOLS" => Show::Pools,
                "SERVERS" => Show::Servers,
                "CLIENTS" => Show::Clients,
                "STATS" => Show::Stats,
                "DATABASES" => Show::Databases,
                "CONFIG" => Show::Config,
                "SHARDS" => Show::Shards,
                "VERSION" => Show::Version,
                "HELP" => Show::Help,
                "RESHARD" => Show::Reshard,
                _ => return Err(unknown()),
            };
            Ok(Command::Show(show))
        }
        ["RELOAD"] => Ok(Command::Reload),
        ["PAUSE", ..] => Ok(Command::Pause(database(&words[1..])?)),
        ["RESUME", ..] => Ok(Command::Resume(database(&words[1..])?)),
        ["RECONNECT", ..] => Ok(Command::Reconnect(database(&words[1..])?)),
        ["RESHARD", "SWITCH"] => Ok(Command::ReshardSwitch),
        ["RESHARD", "ABORT"] => Ok(Command::ReshardAbort),
        ["RESHARD", "FREEZE", ..] => parse_freeze(trimmed).ok_or_else(unknown),
        _ => Err(unknown()),
    }
}

/// `RESHARD FREEZE '<path>' [TIMEOUT <ms>]` (the path a SQL string literal, `''` for a quote).
fn parse_freeze(text: &str) -> Option<Command> {
    let mut rest = text.trim_start();
    for keyword in ["RESHARD", "FREEZE"] {
        let head = rest.get(..keyword.len())?;
        if !head.eq_ignore_ascii_case(keyword) {
            return None;
        }
        rest = rest[keyword.len()..].trim_start();
    }
    let mut chars = rest.strip_prefix('\'')?.char_indices().peekable();
    let mut path = String::new();
    let after = loop {
        let (at, c) = chars.next()?;
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                path.push('\'');
                continue;
            }
            break at + 2;
        }
        path.push(c);
    };
    if path.is_empty() {
        return None;
    }
    let words: Vec<&str> = rest.get(after..)?.split_whitespace().collect();
    let timeout_ms = match words.as_slice() {
        [] => None,
        [keyword, ms] if keyword.eq_ignore_ascii_case("TIMEOUT") => {
            Some(ms.parse::<u64>().ok().filter(|ms| *ms > 0)?)
        }
        _ => return None,
    };
    Some(Command::ReshardFreeze { path, timeout_ms })
}

/// A database name as typed: `app` or `"App"` (quotes keep the case, as in SQL).
fn unquote(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => name.to_string(),
    }
}

/// `SHOW HELP`'s lines.
pub const HELP: &[&str] = &[
    "SHOW POOLS|SERVERS|CLIENTS|STATS|DATABASES|CONFIG|SHARDS|RESHARD|VERSION|HELP",
    "RELOAD             re-read the config file (as SIGHUP does)",
    "PAUSE [db]         wait for open transactions to end, then hold new ones",
    "RESUME [db]        let held clients go on",
    "RECONNECT [db]     close server connections once they are given back",
    "RESHARD FREEZE '<new config>' [TIMEOUT <ms>]  hold writes to moving keys (resharding cutover)",
    "RESHARD SWITCH     adopt the frozen config's shards and ring, release held writes",
    "RESHARD ABORT      release held writes on the ring in force",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commands_like_pgbouncer() {
        assert_eq!(parse("show pools;"), Ok(Command::Show(Show::Pools)));
        assert_eq!(parse("  SHOW   Shards "), Ok(Command::Show(Show::Shards)));
        assert_eq!(parse("RELOAD;"), Ok(Command::Reload));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("PAUSE app;"), Ok(Command::Pause(Some("app".into()))));
        assert_eq!(
            parse("resume \"My\"\"Db\""),
            Ok(Command::Resume(Some("My\"Db".into())))
        );
        assert_eq!(parse("RECONNECT"), Ok(Command::Reconnect(None)));
        assert_eq!(parse(";"), Ok(Command::Empty));
        assert_eq!(parse("SHOW FOO"), Err(UnknownCommand("SHOW FOO".into())));
        assert!(parse("PAUSE a b").is_err());
        assert!(parse("select 1").is_err());
        assert!(!Command::Show(Show::Stats).is_write());
        assert!(Command::Pause(None).is_write());
    }

    #[test]
    fn reads_reshard_commands() {
        assert_eq!(parse("show reshard;"), Ok(Command::Show(Show::Reshard)));
        assert_eq!(parse("reshard switch"), Ok(Command::ReshardSwitch));
        assert_eq!(parse("RESHARD ABORT;"), Ok(Command::ReshardAbort));
        assert_eq!(
            parse("RESHARD FREEZE '/tmp/new config.toml'"),
            Ok(Command::ReshardFreeze {
                path: "/tmp/new config.toml".into(),
                timeout_ms: None
            })
        );
        assert_eq!(
            parse("reshard  freeze 'it''s.toml'  timeout 2500;"),
            Ok(Command::ReshardFreeze {
                path: "it's.toml".into(),
                timeout_ms: Some(2500)
            })
        );
        for bad in [
            "RESHARD FREEZE",
            "RESHARD FREEZE /tmp/x.toml",
            "RESHARD FREEZE 'unterminated",
            "RESHARD FREEZE ''",
            "RESHARD FREEZE 'x' TIMEOUT",
            "RESHARD FREEZE 'x' TIMEOUT -1",
            "RESHARD FREEZE 'x' TIMEOUT 0",
            "RESHARD FREEZE 'x' WAIT 5",
            "RESHARD SWITCH NOW",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(Command::ReshardAbort.is_write());
        assert!(!Command::Show(Show::Reshard).is_write());
    }
}
