//! Throwaway local Postgres servers for `pgscale demo` and the integration tests: initdb into a private
//! directory, start on a free port, stop and delete on drop — and, through a watchdog process, even when
//! the owning process dies without unwinding.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the servers' directories live.
const BASE_DIR: &str = "/tmp/pgscale-clusters";
const START_ATTEMPTS: usize = 5;

/// Why a local server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Postgres binary not found: {path} (set PG_BIN to the directory holding initdb, pg_ctl, psql)")]
    BinaryNotFound { path: PathBuf },
    #[error("initdb failed: {stderr}")]
    Initdb { stderr: String },
    #[error("Postgres did not start: {log_tail}")]
    Start { log_tail: String },
    #[error("psql failed: {stderr}")]
    Psql { stderr: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The directory of the server binaries: `PG_BIN`, else Debian's PostgreSQL 15.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub dir: PathBuf,
}

impl PgBinaries {
    pub fn from_env() -> Self {
        let dir = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        PgBinaries { dir }
    }

    fn path(&self, name: &str) -> Result<PathBuf, ClusterError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(ClusterError::BinaryNotFound { path })
        }
    }
}

/// How to set up a server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub superuser_password: String,
    /// Extra `postgresql.conf` settings.
    pub extra_conf: Vec<(String, String)>,
    pub max_connections: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            superuser_password: "postgres".into(),
            extra_conf: Vec::new(),
            max_connections: 200,
        }
    }
}

/// A running local Postgres server.
pub struct LocalPostgres {
    bins: PgBinaries,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    watchdog: Option<Child>,
    stopped: bool,
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program` as the `postgres` user when we are root (Postgres refuses root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(path: &Path) -> Result<(), ClusterError> {
    if !running_as_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(ClusterError::Io(std::io::Error::other(format!(
            "chown postgres {} failed",
            path.display()
        ))))
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn unique_dir() -> Result<PathBuf, ClusterError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = Path::new(BASE_DIR);
    std::fs::create_dir_all(base)?;
    let _ = Command::new("chmod").arg("1777").arg(base).status();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix: u32 = rand::random();
    let dir = base.join(format!("{}-{n}-{suffix:08x}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl LocalPostgres {
    /// initdb's a new server and starts it on a free port (retrying if another process takes it).
    pub fn start(opts: &ClusterOptions) -> Result<LocalPostgres, ClusterError> {
        let bins = PgBinaries::from_env();
        let dir = unique_dir()?;
        let data = dir.join("data");
        let mut pg = LocalPostgres {
            bins,
            dir,
            data,
            port: 0,
            password: opts.superuser_password.clone(),
            watchdog: None,
            stopped: false,
        };
        pg.initdb(opts)?;
        pg.watchdog = pg.spawn_watchdog().ok();
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClusterError::Start {
            log_tail: "no attempt made".into(),
        }))
    }

    fn initdb(&self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", opts.superuser_password))?;
        chown_to_postgres(&self.dir)?;
        let out = as_postgres(&self.bins.path("initdb")?)
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "-N"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(ClusterError::Initdb {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = {}\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nwal_level = replica\n\
             max_wal_senders = 10\nshared_buffers = 32MB\n",
            self.dir.display(),
            opts.max_connections
        );
        for (name, value) in &opts.extra_conf {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?
            .write_all(conf.as_bytes())?;
        chown_to_postgres(&self.dir)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let out = as_postgres(&self.bins.path("pg_ctl")?)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .stdout(Stdio::null())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(ClusterError::Start {
            log_tail: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            ),
        })
    }

    /// A detached process that stops the server and deletes its directory once we are gone.
    fn spawn_watchdog(&self) -> Result<Child, ClusterError> {
        use std::os::unix::process::CommandExt;
        let pg_ctl = self.bins.path("pg_ctl")?;
        let stop = if running_as_root() {
            format!(
                "runuser -u postgres -- '{}' stop -D '{}' -m immediate",
                pg_ctl.display(),
                self.data.display()
            )
        } else {
            format!(
                "'{}' stop -D '{}' -m immediate",
                pg_ctl.display(),
                self.data.display()
            )
        };
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            std::process::id(),
            self.dir.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(child)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL (statements separately, stopping at the first error) as the superuser over TCP.
    pub fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        use std::io::Write;
        let mut child = Command::new(self.bins.path("psql")?)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-f", "-"])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(ClusterError::Psql {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Kills the postmaster with SIGKILL (a crash, for fault tests).
    pub fn kill9(&self) {
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: sending a signal to a pid we read from our own server's pid file.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("fast");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.postmaster_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.pg_ctl_start()
    }

    fn postmaster_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        self.postmaster_pid()
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }

    fn pg_ctl_stop(&self, mode: &str) {
        if let Ok(pg_ctl) = self.bins.path("pg_ctl") {
            let _ = as_postgres(&pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Stops the server and deletes its directory; safe to call twice.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.pg_ctl_stop("fast");
        if self.postmaster_alive() {
            self.pg_ctl_stop("immediate");
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cleaning up local Postgres failed");
        }
    }
}
