//! The admin console: a virtual database named `pgscale` (`psql -U <admin> pgscale`) that answers
//! PgBouncer-style commands (`SHOW POOLS`, `RELOAD`, `PAUSE`, …) itself, in the simple protocol and
//! in the extended one (so drivers can use it too). Only users listed in `[admin] users` may run
//! every command; `[admin] stats_users` may run `SHOW`; anyone else is refused with `28000`.
//!
//! - [`commands`]: parsing. [`show`]: the `SHOW` tables. [`config_table`]: `SHOW CONFIG`.
//! - [`table`]: result sets on the wire.

mod commands;
mod config_table;
mod known;
pub(crate) mod reshard;
mod show;
mod table;

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use crate::config::Config;
use crate::protocol::codec::{self, BodyReader};
use crate::session::Shared;
use crate::stats::ClientListing;
use commands::{Command, Show};
use table::Table;

/// The database name that opens the admin console.
pub const ADMIN_DATABASE: &str = "pgscale";

/// Largest message the console accepts (commands are short).
const MAX_MESSAGE: usize = 1 << 20;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rights {
    All,
    ShowOnly,
}

/// An error answered to a console command, with its SQLSTATE.
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A statement prepared through the extended protocol: its command, or the error it will raise.
type Prepared = Result<Command, String>;

/// One console connection, after authentication.
struct Console {
    client: ClientStream,
    shared: Arc<Shared>,
    rights: Rights,
    user: String,
    /// Named and unnamed (`""`) prepared statements and portals.
    statements: std::collections::HashMap<Vec<u8>, Prepared>,
    portals: std::collections::HashMap<Vec<u8>, (Prepared, Vec<i16>)>,
    /// After an error in the extended protocol, messages are skipped until `Sync`.
    skip_to_sync: bool,
    out: BytesMut,
}

/// Serves an authenticated client that asked for the admin database.
pub async fn serve(
    mut client: ClientStream,
    shared: Arc<Shared>,
    config: &Config,
    listing: ClientListing,
) {
    let user = listing.entry.user.clone();
    let rights = if config.admin.users.contains(&user) {
        Rights::All
    } else if config.admin.stats_users.contains(&user) {
        Rights::ShowOnly
    } else {
        tracing::info!(%user, "admin console refused: not in admin.users or admin.stats_users");
        let mut out = BytesMut::new();
        codec::error_fields(
            &mut out,
            b'E',
            "FATAL",
            "28000",
            &format!("user \"{user}\" may not use the admin console (not in [admin] users or stats_users)"),
            None,
        );
        let _ = client.write_all(&out).await;
        return;
    };
    tracing::info!(%user, ?rights, "admin console connected");
    let mut console = Console {
        client,
        shared,
        rights,
        user,
        statements: Default::default(),
        portals: Default::default(),
        skip_to_sync: false,
        out: BytesMut::new(),
    };
    console.greet();
    if console.flush().await.is_ok() {
        console.run().await;
    }
    tracing::info!(user = %console.user, "admin console disconnected");
    drop(listing);
}

impl Console {
    fn greet(&mut self) {
        let out = &mut self.out;
        for (name, value) in [
            ("server_version", "15.0 (pgscale admin console)"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
        ] {
            codec::parameter_status(out, name, value);
        }
        codec::backend_key_data(out, 0, 0);
        codec::ready_for_query(out, b'I');
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.client.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn run(&mut self) {
        let mut buf = BytesMut::with_capacity(1024);
        let stop = self.shared.hard_stop.clone();
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                read = self.client.read_buf(&mut buf) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            loop {
                let (tag, total) = match codec::peek_header(&buf, MAX_MESSAGE) {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(e) => {
                        self.error("08P01", &format!("invalid message: {e}"), true);
                        let _ = self.flush().await;
                        return;
                    }
                };
                if buf.len() < total {
                    break;
                }
                let frame = buf.split_to(total);
                let body = &frame[codec::HEADER_LEN..];
                if tag == b'X' {
                    return;
                }
                if !self.on_message(tag, body).await {
                    let _ = self.flush().await;
                    return;
                }
            }
            if self.flush().await.is_err() {
                return;
            }
            buf.reserve(1024);
        }
    }

    /// Handles one message; false ends the connection.
    async fn on_message(&mut self, tag: u8, body: &[u8]) -> bool {
        if self.skip_to_sync && tag != b'S' {
            return true;
        }
        match tag {
            b'Q' => {
                let text = BodyReader::new(body)
                    .cstr_utf8()
                    .unwrap_or_default()
                    .to_string();
                self.simple_query(&text).await;
                codec::ready_for_query(&mut self.out, b'I');
            }
            b'P' => self.on_parse(body),
            b'B' => self.on_bind(body),
            b'D' => self.on_describe(body),
            b'E' => self.on_execute(body).await,
            b'C' => {
                let mut reader = BodyReader::new(body);
                let kind = reader.u8().unwrap_or(b'S');
                let name = reader.cstr().unwrap_or_default().to_vec();
                if kind == b'P' {
                    self.portals.remove(&name);
                } else {
                    self.statements.remove(&name);
                }
                codec::put_frame(&mut self.out, b'3', &[]);
            }
            b'S' => {
                self.skip_to_sync = false;
                codec::ready_for_query(&mut self.out, b'I');
            }
            b'H' => {}
            other => {
                self.error(
                    "08P01",
                    &format!(
                        "the admin console does not accept message type '{}'",
                        other as char
                    ),
                    true,
                );
                return false;
            }
        }
        true
    }

    fn error(&mut self, code: &str, message: &str, fatal: bool) {
        self.shared.stats.count_error(code.as_bytes());
        let severity = if fatal { "FATAL" } else { "ERROR" };
        codec::error_fields(&mut self.out, b'E', severity, code, message, None);
    }

    /// A simple-protocol query: one or more commands separated by `;`.
    async fn simple_query(&mut self, text: &str) {
        let parts: Vec<&str> = text.split(';').filter(|p| !p.trim().is_empty()).collect();
        if parts.is_empty() {
            codec::put_frame(&mut self.out, b'I', &[]);
            return;
        }
        for part in parts {
            let command = match commands::parse(part) {
                Ok(command) => command,
                Err(e) => {
                    self.error("42601", &e.to_string(), false);
                    return;
                }
            };
            match self.execute(&command).await {
                Ok(Some(table)) => {
                    table.write_description(&mut self.out, &[]);
                    table.write_rows(&mut self.out, &[]);
                    codec::command_complete(&mut self.out, "SHOW");
                }
                Ok(None) => codec::command_complete(&mut self.out, &tag_of(&command)),
                Err(refusal) => {
                    self.error(refusal.code, &refusal.message, false);
                    return;
                }
            }
        }
    }

    fn on_parse(&mut self, body: &[u8]) {
        let mut reader = BodyReader::new(body);
        let name = reader.cstr().unwrap_or_default().to_vec();
        let text = reader.cstr_utf8().unwrap_or_default();
        let parsed = commands::parse(text).map_err(|e| e.to_string());
        self.statements.insert(name, parsed);
        codec::put_frame(&mut self.out, b'1', &[]);
    }

    fn on_bind(&mut self, body: &[u8]) {
        let parse = || -> Option<(Vec<u8>, Vec<u8>, Vec<i16>)> {
            let mut reader = BodyReader::new(body);
            let portal = reader.cstr().ok()?.to_vec();
            let statement = reader.cstr().ok()?.to_vec();
            let n_formats = reader.i16().ok()?;
            for _ in 0..n_formats {
                reader.i16().ok()?;
            }
            let n_params = reader.i16().ok()?;
            for _ in 0..n_params {
                let len = reader.i32().ok()?;
                if len > 0 {
                    reader.bytes(len as usize).ok()?;
                }
            }
            let n_results = reader.i16().ok()?;
            let mut formats = Vec::new();
            for _ in 0..n_results {
                formats.push(reader.i16().ok()?);
            }
            Some((portal, statement, formats))
        };
        let Some((portal, statement, formats)) = parse() else {
            self.fail_extended("08P01", "malformed Bind message");
            return;
        };
        let Some(prepared) = self.statements.get(&statement).cloned() else {
            let name = String::from_utf8_lossy(&statement).into_owned();
            self.fail_extended(
                "26000",
                &format!("prepared statement \"{name}\" does not exist"),
            );
            return;
        };
        self.portals.insert(portal, (prepared, formats));
        codec::put_frame(&mut self.out, b'2', &[]);
    }

    fn on_describe(&mut self, body: &[u8]) {
        let mut reader = BodyReader::new(body);
        let kind = reader.u8().unwrap_or(b'S');
        let name = reader.cstr().unwrap_or_default().to_vec();
        let found = match kind {
            b'P' => self.portals.get(&name).cloned(),
            _ => self.statements.get(&name).cloned().map(|s| (s, Vec::new())),
        };
        let Some((prepared, formats)) = found else {
            self.fail_extended("26000", "no such prepared statement or portal");
            return;
        };
        if kind == b'S' {
            // ParameterDescription: admin commands take no parameters.
            codec::put_frame(&mut self.out, b't', &[0, 0]);
        }
        match prepared {
            Ok(Command::Show(what)) => {
                let columns = self.show(what);
                columns.write_description(&mut self.out, &formats);
            }
            Ok(command) if reshard::columns(&command).is_some() => {
                if let Some(columns) = reshard::columns(&command) {
                    columns.write_description(&mut self.out, &formats);
                }
            }
            _ => codec::put_frame(&mut self.out, b'n', &[]),
        }
    }

    async fn on_execute(&mut self, body: &[u8]) {
        let name = BodyReader::new(body).cstr().unwrap_or_default().to_vec();
        let Some((prepared, formats)) = self.portals.get(&name).cloned() else {
            self.fail_extended("34000", "portal does not exist");
            return;
        };
        let command = match prepared {
            Ok(command) => command,
            Err(message) => {
                self.fail_extended("42601", &message);
                return;
            }
        };
        match self.execute(&command).await {
            Ok(Some(table)) => {
                table.write_rows(&mut self.out, &formats);
                codec::command_complete(&mut self.out, "SHOW");
            }
            Ok(None) if command == Command::Empty => codec::put_frame(&mut self.out, b'I', &[]),
            Ok(None) => codec::command_complete(&mut self.out, &tag_of(&command)),
            Err(refusal) => self.fail_extended(refusal.code, &refusal.message),
        }
    }

    fn fail_extended(&mut self, code: &'static str, message: &str) {
        self.error(code, message, false);
        self.skip_to_sync = true;
    }

    fn show(&self, what: Show) -> Table {
        show::show(what, &self.shared)
    }

    /// Runs a command: a table to send, or nothing but its tag.
    async fn execute(&mut self, command: &Command) -> Result<Option<Table>, Refusal> {
        if command.is_write() && self.rights != Rights::All {
            return Err(Refusal::new(
                "42501",
                format!(
                    "user \"{}\" may only run SHOW commands (listed in admin.stats_users, not admin.users)",
                    self.user
                ),
            ));
        }
        let shared = self.shared.clone();
        if let Command::Pause(Some(name))
        | Command::Resume(Some(name))
        | Command::Reconnect(Some(name)) = command
        {
            known::check(&shared, name)
                .await
                .map_err(|e| Refusal::new(e.sqlstate(), e.to_string()))?;
        }
        match command {
            Command::Empty => Ok(None),
            Command::Show(what) => Ok(Some(self.show(*what))),
            Command::ReshardFreeze { path, timeout_ms } => {
                reshard::freeze(&shared, &self.user, path, *timeout_ms)
                    .await
                    .map(Some)
            }
            Command::ReshardSwitch => reshard::switch(&shared, &self.user).await.map(Some),
            Command::ReshardAbort => reshard::abort(&shared, &self.user).await.map(Some),
            Command::Reload => match crate::reload::reload(&shared).await {
                Ok(reloaded) => {
                    let changed = if reloaded.changes.is_empty() {
                        "nothing changed".to_string()
                    } else {
                        format!("changed: {}", reloaded.changes.join(", "))
                    };
                    codec::error_fields(
                        &mut self.out,
                        b'N',
                        "NOTICE",
                        "00000",
                        &format!("config reloaded; {changed}"),
                        None,
                    );
                    Ok(None)
                }
                Err(e) => Err(Refusal::new(
                    "F0000",
                    format!("config not reloaded; the running config is unchanged: {e}"),
                )),
            },
            Command::Pause(database) => {
                tracing::info!(user = %self.user, database = ?database, "PAUSE: waiting for open transactions");
                let stop = shared.hard_stop.clone();
                tokio::select! {
                    _ = shared.gates.pause(database.as_deref()) => {}
                    _ = stop.cancelled() => return Err(Refusal::new("57P01", "pgscale is shutting down")),
                }
                tracing::info!(user = %self.user, database = ?database, "PAUSE: done, new transactions are held");
                Ok(None)
            }
            Command::Resume(database) => {
                shared
                    .gates
                    .resume(database.as_deref())
                    .map_err(|e| Refusal::new("55000", e.to_string()))?;
                tracing::info!(user = %self.user, database = ?database, "RESUME");
                Ok(None)
            }
            Command::Reconnect(database) => {
                let mut closed = 0;
                for pool in shared.pools.all() {
                    if database.as_ref().is_none_or(|d| *d == pool.key.database) {
                        closed += pool.reconnect();
                    }
                }
                tracing::info!(user = %self.user, database = ?database, closed_idle = closed, "RECONNECT");
                Ok(None)
            }
        }
    }
}

/// The command tag of a command without rows (PgBouncer's: the command's name).
fn tag_of(command: &Command) -> String {
    match command {
        Command::Show(_) => "SHOW",
        Command::Reload => "RELOAD",
        Command::Pause(_) => "PAUSE",
        Command::Resume(_) => "RESUME",
        Command::Reconnect(_) => "RECONNECT",
        Command::ReshardFreeze { .. } | Command::ReshardSwitch | Command::ReshardAbort => "RESHARD",
        Command::Empty => "",
    }
    .to_string()
}
