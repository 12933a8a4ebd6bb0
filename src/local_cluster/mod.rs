//! Throwaway local PostgreSQL servers for `pgscale demo` and the integration tests: a private data
//! directory, a free port on 127.0.0.1, SCRAM for TCP logins, stopped and deleted on drop — and, through
//! a watchdog process, even when the owning process dies without unwinding.
//!
//! The API is blocking (std::process); async callers use `spawn_blocking`. As root, server binaries run
//! as the `postgres` user (Postgres refuses root). Binaries come from `PG_BIN` (default: Debian's
//! PostgreSQL 15); directories live under `PGSCALE_CLUSTER_DIR` (default `/tmp/pgscale-clusters`).

mod faults;
mod os;
mod setup;
mod shards;
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use os::{as_server_user, Watchdog};
pub use shards::{start_shards, LocalShard};
pub use tls::{TestCa, TlsOptions};

/// Parallel test processes can take the port we picked before our server binds it; try a few ports.
const START_ATTEMPTS: usize = 5;
/// How long `pg_ctl -w` waits for a server to accept connections.
const START_TIMEOUT_SECS: u32 = 30;
const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";

/// Why a local server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Postgres binary not found: {path} (set PG_BIN to the directory holding initdb, pg_ctl, psql)")]
    BinaryNotFound { path: PathBuf },
    #[error("running as root but there is no `{user}` user to run Postgres as")]
    NoServerUser { user: String },
    #[error("initdb failed: {stderr}")]
    Initdb { stderr: String },
    #[error("Postgres did not start:\n{log_tail}")]
    Start { log_tail: String },
    #[error("no free port: {attempts} ports were taken before Postgres could bind them")]
    NoFreePort { attempts: usize },
    #[error("pg_basebackup failed: {stderr}")]
    BaseBackup { stderr: String },
    #[error("pg_ctl {action} failed: {stderr}")]
    PgCtl { action: String, stderr: String },
    #[error("psql failed: {stderr}")]
    Psql { stderr: String },
    #[error("the server is not running")]
    NotRunning,
    #[error("the server was stopped and its directory deleted")]
    Stopped,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("making test certificates failed: {0}")]
    Certs(String),
}

/// The directory of the Postgres binaries: `PG_BIN`, else Debian's PostgreSQL 15.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
}

impl PgBinaries {
    pub const DEFAULT_DIR: &'static str = "/usr/lib/postgresql/15/bin";

    pub fn from_env() -> Self {
        let dir = std::env::var_os("PG_BIN")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(Self::DEFAULT_DIR));
        PgBinaries { dir }
    }

    /// The path of binary `name`, checked to exist so a missing install fails with a clear error
    /// rather than a bare "No such file".
    pub fn path(&self, name: &str) -> Result<PathBuf, ClusterError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(ClusterError::BinaryNotFound { path })
        }
    }
}

impl Default for PgBinaries {
    fn default() -> Self {
        Self::from_env()
    }
}

/// How to set up a server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The SCRAM password of the `postgres` superuser (TCP logins need it; the socket is trusted).
    pub superuser_password: String,
    /// Extra `postgresql.conf` settings, applied after ours so they can override them. Values are
    /// quoted for you (`("work_mem", "64MB")`); an already single-quoted value is kept as is.
    pub extra_conf: Vec<(String, String)>,
    pub max_connections: u32,
    /// `ssl = on` with a certificate signed by a test CA (see [`TlsOptions`]); replicas get their
    /// own certificate from the same CA.
    pub tls: Option<TlsOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            superuser_password: "postgres".into(),
            extra_conf: Vec::new(),
            max_connections: 200,
            tls: None,
        }
    }
}

/// A running local Postgres server; dropping it stops the server and deletes its directory.
pub struct LocalPostgres {
    bins: PgBinaries,
    /// Private directory: `data/`, `postgres.log` and the Unix socket.
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    watchdog: Option<Watchdog>,
    stopped: bool,
    /// The TLS setup and the CA file written for it, when started with [`ClusterOptions::tls`].
    tls: Option<(TlsOptions, PathBuf)>,
}

impl std::fmt::Debug for LocalPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPostgres")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("stopped", &self.stopped)
            .finish()
    }
}

/// A port nobody listens on right now (the OS picks it); it may be taken again before we bind it.
fn pick_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind((HOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether a failed start's log shows the port was taken (so another port may work).
fn is_port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

/// Whether a failed start's log shows backends of a killed postmaster still holding shared memory.
fn is_old_memory_in_use(log: &str) -> bool {
    log.contains("shared memory block") && log.contains("still in use")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl LocalPostgres {
    /// Creates a new server (from the `PG_BIN` binaries) and starts it on a free port.
    pub fn start(opts: &ClusterOptions) -> Result<LocalPostgres, ClusterError> {
        Self::start_with(&PgBinaries::from_env(), opts)
    }

    /// Like [`LocalPostgres::start`], with explicit binaries.
    pub fn start_with(
        bins: &PgBinaries,
        opts: &ClusterOptions,
    ) -> Result<LocalPostgres, ClusterError> {
        let started = Instant::now();
        let mut pg = Self::new_empty(bins, &opts.superuser_password)?;
        setup::prepare(bins, &pg.dir, &pg.data, opts)?;
        if let Some(tls) = &opts.tls {
            pg.install_tls(tls, true)?;
        }
        pg.start_on_free_port()?;
        tracing::debug!(port = pg.port, dir = %pg.dir.display(), elapsed = ?started.elapsed(), "local Postgres started");
        Ok(pg)
    }

    /// Starts a hot standby streaming from `primary` (`pg_basebackup -R`), on its own free port. The
    /// superuser password is the primary's.
    pub fn start_replica_of(primary: &LocalPostgres) -> Result<LocalPostgres, ClusterError> {
        if primary.stopped {
            return Err(ClusterError::Stopped);
        }
        let started = Instant::now();
        let bins = &primary.bins;
        let mut pg = Self::new_empty(bins, &primary.password)?;
        let out = as_server_user(&bins.path("pg_basebackup")?, &pg.dir)
            .arg("-D")
            .arg(&pg.data)
            .args(["-h", HOST, "-U", SUPERUSER, "-p"])
            .arg(primary.port.to_string())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-w"])
            .env("PGPASSWORD", &primary.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(ClusterError::BaseBackup {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        // The copied postgresql.conf still names the primary's socket directory; ours overrides it.
        let max_connections = primary.setting_from_conf("max_connections").unwrap_or(200);
        setup::write_conf(&pg.data, &pg.dir, max_connections, &[])?;
        if let Some((tls, _)) = &primary.tls {
            pg.install_tls(tls, false)?; // its own certificate; pg_hba.conf came with the backup
        }
        pg.start_on_free_port()?;
        tracing::debug!(port = pg.port, primary = primary.port, elapsed = ?started.elapsed(), "local replica started");
        Ok(pg)
    }

    /// A not yet started server with its directory and watchdog; dropping it cleans up.
    fn new_empty(bins: &PgBinaries, password: &str) -> Result<LocalPostgres, ClusterError> {
        for name in ["initdb", "pg_ctl", "postgres", "psql"] {
            bins.path(name)?;
        }
        os::check_can_run_server()?;
        let dir = setup::new_cluster_dir()?;
        let data = dir.join("data");
        let mut pg = LocalPostgres {
            bins: bins.clone(),
            dir,
            data,
            port: 0,
            password: password.to_string(),
            watchdog: None,
            stopped: false,
            tls: None,
        };
        // Before anything slow, so even a crash during initdb leaves nothing behind.
        pg.watchdog = Some(Watchdog::spawn(&bins.path("pg_ctl")?, &pg.data, &pg.dir)?);
        Ok(pg)
    }

    /// An integer setting as last written in our `postgresql.conf` lines.
    fn setting_from_conf(&self, name: &str) -> Option<u32> {
        let conf = std::fs::read_to_string(self.data.join("postgresql.conf")).ok()?;
        conf.lines().rev().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            if key.trim() != name {
                return None;
            }
            value.trim().trim_matches('\'').parse().ok()
        })
    }

    fn start_on_free_port(&mut self) -> Result<(), ClusterError> {
        for attempt in 1..=START_ATTEMPTS {
            self.port = pick_port()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(ClusterError::Start { log_tail }) if is_port_taken(&log_tail) => {
                    tracing::debug!(
                        port = self.port,
                        attempt,
                        "port taken before Postgres bound it; retrying"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClusterError::NoFreePort {
            attempts: START_ATTEMPTS,
        })
    }

    /// `pg_ctl start -w` on the current port; on failure the error carries what this attempt logged.
    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let log_path = self.log_path();
        let log_offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let out = as_server_user(&self.bins.path("pg_ctl")?, &self.dir)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log_path)
            .args(["-w", "-t", &START_TIMEOUT_SECS.to_string(), "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read(&log_path).unwrap_or_default();
        let start = usize::try_from(log_offset).unwrap_or(0).min(log.len());
        let log = String::from_utf8_lossy(&log[start..]);
        Err(ClusterError::Start {
            log_tail: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                last_lines(&log, 20)
            ),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log file (`pg_ctl -l`), for diagnosing failed tests.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The directory holding the server's Unix socket (trusted logins, no password).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// `postgres://user:password@127.0.0.1:port/db` (no escaping: meant for simple test names).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{HOST}:{}/{db}", self.port)
    }

    /// The superuser's URL for database `db`.
    pub fn superuser_url(&self, db: &str) -> String {
        self.url(SUPERUSER, &self.password, db)
    }

    /// Runs SQL as the superuser over TCP (SCRAM) in database `postgres`, returning stdout trimmed
    /// (unaligned, tuples only: `select 1` gives "1").
    pub fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        self.psql_as(SUPERUSER, &self.password, "postgres", sql)
    }

    /// Runs SQL over TCP as any user. The SQL goes through stdin rather than `-c`, so a script with
    /// several statements runs them one by one (`CREATE DATABASE` is refused inside the implicit
    /// transaction of a multi-statement `-c`); it stops at the first error.
    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        use std::io::Write;
        if self.stopped {
            return Err(ClusterError::Stopped);
        }
        let mut child = Command::new(self.bins.path("psql")?)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST])
            .args(["-U", user, "-d", db, "-p"])
            .arg(self.port.to_string())
            .args(["-f", "-"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // A separate writer: a big script with big output would otherwise deadlock on full pipes.
        let writer = child.stdin.take().map(|mut stdin| {
            let sql = sql.to_string();
            std::thread::spawn(move || stdin.write_all(sql.as_bytes()))
        });
        let out = child.wait_with_output()?;
        let written = writer.map(|w| w.join());
        if !out.status.success() {
            return Err(ClusterError::Psql {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if let Some(Ok(Err(e))) = written {
            return Err(e.into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The postmaster's process id, from `postmaster.pid` (None when not running).
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        os::pid_alive(pid).then_some(pid)
    }

    /// Crashes the server for fault tests: SIGKILLs the postmaster and waits until it and its
    /// backends are gone (backends exit by themselves on postmaster death, as in a real crash).
    pub fn kill9(&self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid().ok_or(ClusterError::NotRunning)?;
        let mut pids = os::children_of(pid);
        pids.push(pid);
        os::sigkill(pid)?;
        if !os::wait_dead(&pids, Duration::from_secs(10)) {
            tracing::warn!(pid, "backends outlived their killed postmaster for 10s");
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory (stopping it first, fast, if it
    /// is running), e.g. after [`LocalPostgres::kill9`].
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Err(ClusterError::Stopped);
        }
        if self.postmaster_pid().is_some() {
            self.pg_ctl_stop("fast")?;
        } else {
            self.remove_stale_pid_files();
        }
        // Leftovers of a crash can briefly hold the shared memory, or a closing socket the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.pg_ctl_start() {
                Err(ClusterError::Start { log_tail })
                    if (is_old_memory_in_use(&log_tail) || is_port_taken(&log_tail))
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(port = self.port, "restart blocked by leftovers; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Deletes the `postmaster.pid` left by a killed postmaster. Postgres itself would only do so if the
    /// old pid were gone, but a postmaster killed here can linger as a zombie (some container inits
    /// never reap orphans), which Postgres takes for a running server. Only called once
    /// [`LocalPostgres::postmaster_pid`] found the recorded process dead.
    /// The same goes for the socket's lock file (the socket directory is private to this server).
    fn remove_stale_pid_files(&self) {
        let socket = self.dir.join(format!(".s.PGSQL.{}", self.port));
        let lock = self.dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for path in [self.data.join("postmaster.pid"), lock, socket] {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed stale lock file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove stale lock file")
                }
            }
        }
    }

    /// Promotes a replica to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        let out = as_server_user(&self.bins.path("pg_ctl")?, &self.dir)
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "promote"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ClusterError::PgCtl {
                action: "promote".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), ClusterError> {
        let out = as_server_user(&self.bins.path("pg_ctl")?, &self.dir)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ClusterError::PgCtl {
                action: format!("stop -m {mode}"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Shuts the server down however it takes: fast, then immediate, then SIGKILL.
    fn shut_down(&self) {
        // A frozen server (see `freeze`) would hold every stop request until it is continued.
        let _ = self.thaw();
        for mode in ["fast", "immediate"] {
            if self.postmaster_pid().is_none() {
                return;
            }
            if let Err(e) = self.pg_ctl_stop(mode) {
                tracing::debug!(error = %e, mode, "pg_ctl stop failed");
            }
        }
        if self.postmaster_pid().is_some() {
            if let Err(e) = self.kill9() {
                tracing::warn!(error = %e, "killing local Postgres failed");
            }
        }
    }

    /// Stops the server and deletes its directory; calling it again does nothing.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.shut_down();
        // The server is down, so the watchdog has nothing left to do.
        self.watchdog = None;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => {
                tracing::debug!(port = self.port, dir = %self.dir.display(), "local Postgres stopped");
                Ok(())
            }
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cleaning up local Postgres failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_start_failures_worth_retrying() {
        assert!(is_port_taken(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!is_port_taken("FATAL:  data directory has wrong ownership"));
        assert!(is_old_memory_in_use(
            "FATAL:  pre-existing shared memory block (key 1, ID 2) is still in use"
        ));
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    /// Real server: a port someone else holds is recognised as such, so `start` moves on to another.
    #[test]
    fn taken_port_is_recognised_from_the_server_log() {
        let bins = PgBinaries::from_env();
        let opts = ClusterOptions::default();
        let mut pg = LocalPostgres::new_empty(&bins, &opts.superuser_password).expect("dir");
        setup::prepare(&bins, &pg.dir, &pg.data, &opts).expect("initdb");
        let squatter = std::net::TcpListener::bind((HOST, 0)).expect("bind");
        pg.port = squatter.local_addr().expect("addr").port();
        match pg.pg_ctl_start() {
            Err(ClusterError::Start { log_tail }) => {
                assert!(is_port_taken(&log_tail), "{log_tail}")
            }
            other => panic!("expected a start failure, got {other:?}"),
        }
        pg.start_on_free_port().expect("start on another port");
        assert_ne!(pg.port, squatter.local_addr().expect("addr").port());
        assert_eq!(pg.psql("select 1").expect("psql"), "1");
    }

    #[test]
    fn missing_binaries_are_reported_by_path() {
        let bins = PgBinaries {
            dir: PathBuf::from("/nonexistent/pg/bin"),
        };
        match LocalPostgres::start_with(&bins, &ClusterOptions::default()) {
            Err(ClusterError::BinaryNotFound { path }) => {
                assert_eq!(path, Path::new("/nonexistent/pg/bin/initdb"))
            }
            other => panic!("expected BinaryNotFound, got {other:?}"),
        }
    }
}
