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
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
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
                _ => return Err(unknown()),
            };
            Ok(Command::Show(show))
        }
        ["RELOAD"] => Ok(Command::Reload),
        ["PAUSE", ..] => Ok(Command::Pause(database(&words[1..])?)),
        ["RESUME", ..] => Ok(Command::Resume(database(&words[1..])?)),
        ["RECONNECT", ..] => Ok(Command::Reconnect(database(&words[1..])?)),
        _ => Err(unknown()),
    }
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
    "SHOW POOLS|SERVERS|CLIENTS|STATS|DATABASES|CONFIG|SHARDS|VERSION|HELP",
    "RELOAD             re-read the config file (as SIGHUP does)",
    "PAUSE [db]         wait for open transactions to end, then hold new ones",
    "RESUME [db]        let held clients go on",
    "RECONNECT [db]     close server connections once they are given back",
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
}
