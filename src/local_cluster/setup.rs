//! Creating a server's directories: a private cluster directory, a data directory copied from a cached
//! initdb template (initdb costs ~2 s, a copy ~0.1 s), and the `postgresql.conf` settings we need.

use std::collections::hash_map::DefaultHasher;
use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::os::{as_server_user, give_to_server_user, running_as_root};
use super::{ClusterError, ClusterOptions, PgBinaries};

/// Where cluster and template directories live unless `PGSCALE_CLUSTER_DIR` says otherwise. Kept short:
/// the Unix socket lives in each cluster directory and socket paths are limited to ~100 bytes.
const DEFAULT_BASE_DIR: &str = "/tmp/pgscale-clusters";

/// Bump when the initdb arguments change, so stale templates from older builds are not reused.
const TEMPLATE_FORMAT: u32 = 1;

pub(crate) fn base_dir() -> PathBuf {
    std::env::var_os("PGSCALE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BASE_DIR))
}

/// Creates the shared base directory, world-writable and sticky like /tmp, so processes of any user
/// (and the server user) can create their own entries in it.
fn ensure_base_dir() -> Result<PathBuf, ClusterError> {
    let base = base_dir();
    std::fs::create_dir_all(&base)?;
    // Only the owner may chmod; anyone else finds it already set up.
    let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777));
    Ok(base)
}

/// A fresh directory unique to this call, owned by the server user: it holds the data directory, the
/// server log and the Unix socket.
pub(crate) fn new_cluster_dir() -> Result<PathBuf, ClusterError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = ensure_base_dir()?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix: u32 = rand::random();
    let dir = base.join(format!("{}-{n}-{suffix:08x}", std::process::id()));
    std::fs::create_dir(&dir)?;
    give_to_server_user(&dir)?;
    Ok(dir)
}

/// Runs initdb into `data` (a not yet existing directory inside the server-owned `dir`).
fn initdb(bins: &PgBinaries, dir: &Path, data: &Path, password: &str) -> Result<(), ClusterError> {
    let initdb = bins.path("initdb")?;
    let pwfile = dir.join("pwfile");
    let written = write_pwfile(&pwfile, password);
    let out = written.and_then(|()| {
        as_server_user(&initdb, dir)
            .arg("-D")
            .arg(data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .output()
            .map_err(ClusterError::from)
    });
    let _ = std::fs::remove_file(&pwfile);
    let out = out?;
    if !out.status.success() {
        return Err(ClusterError::Initdb {
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

fn write_pwfile(path: &Path, password: &str) -> Result<(), ClusterError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{password}\n").as_bytes())?;
    drop(file);
    give_to_server_user(path)
}

/// Fills `data` (inside the cluster directory `dir`) with a fresh cluster: a copy of the cached
/// template when possible, else a direct initdb.
pub(crate) fn create_data_dir(
    bins: &PgBinaries,
    dir: &Path,
    data: &Path,
    password: &str,
) -> Result<(), ClusterError> {
    let template = ensure_template(bins, password)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match copied {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => tracing::warn!(
            template = %template.display(),
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "copying the initdb template failed; running initdb"
        ),
        Err(e) => tracing::warn!(error = %e, "running cp failed; running initdb"),
    }
    let _ = std::fs::remove_dir_all(data);
    initdb(bins, dir, data, password)
}

/// Which template fits: same initdb binary, password, format and privilege mode.
fn template_key(bins: &PgBinaries, password: &str) -> Result<String, ClusterError> {
    let initdb = bins.path("initdb")?;
    let meta = std::fs::metadata(&initdb)?;
    let mut hasher = DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    initdb.hash(&mut hasher);
    meta.len().hash(&mut hasher);
    meta.modified().ok().hash(&mut hasher);
    password.hash(&mut hasher);
    running_as_root().hash(&mut hasher);
    Ok(format!("{:016x}", hasher.finish()))
}

/// The data directory of a never-started cluster made by initdb, shared by every cluster with the
/// same key — across threads (a mutex) and across test processes (an flock plus an atomic rename, so
/// a crash mid-initdb never leaves a half-made template behind).
fn ensure_template(bins: &PgBinaries, password: &str) -> Result<PathBuf, ClusterError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let base = ensure_base_dir()?;
    let key = template_key(bins, password)?;
    let template_dir = base.join(format!("template-{key}"));
    let template = template_dir.join("data");
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let _file_lock = FileLock::acquire(&base.join(format!("template-{key}.lock")));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let started = std::time::Instant::now();
    // Anything here without PG_VERSION is debris from an interrupted run.
    let _ = std::fs::remove_dir_all(&template_dir);
    let scratch = base.join(format!(
        "template-{key}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir(&scratch)?;
    let made = give_to_server_user(&scratch)
        .and_then(|()| initdb(bins, &scratch, &scratch.join("data"), password))
        .and_then(|()| std::fs::rename(&scratch, &template_dir).map_err(ClusterError::from));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    tracing::debug!(template = %template.display(), elapsed = ?started.elapsed(), "made initdb template");
    Ok(template)
}

/// An exclusive `flock` held until dropped; best effort (without it, racing processes only duplicate
/// work: the rename still publishes exactly one template).
struct FileLock(Option<std::fs::File>);

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(path)
            .or_else(|_| OpenOptions::new().read(true).open(path));
        match file {
            Ok(file) => {
                // SAFETY: flock on a file descriptor we own; it blocks until the lock is ours.
                let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
                FileLock(locked.then_some(file))
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no template lock");
                FileLock(None)
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            // SAFETY: unlocking the descriptor we locked; closing it would release the lock anyway.
            unsafe {
                libc::flock(file.as_raw_fd(), libc::LOCK_UN);
            }
        }
    }
}

/// Quotes a `postgresql.conf` value (any setting accepts a quoted value); already quoted values pass.
fn conf_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Appends our settings to `postgresql.conf` (later lines win, so this also overrides what a base
/// backup copied from a primary): TCP on 127.0.0.1 only, the socket in the private `dir`, speed over
/// durability, and WAL settings that allow streaming replicas.
pub(crate) fn write_conf(
    data: &Path,
    dir: &Path,
    max_connections: u32,
    extra: &[(String, String)],
) -> Result<(), ClusterError> {
    let mut settings: Vec<(String, String)> = [
        ("listen_addresses", "127.0.0.1".to_string()),
        ("unix_socket_directories", dir.display().to_string()),
        ("max_connections", max_connections.to_string()),
        ("fsync", "off".into()),
        ("synchronous_commit", "off".into()),
        ("full_page_writes", "off".into()),
        ("wal_level", "replica".into()),
        ("max_wal_senders", "10".into()),
        ("hot_standby", "on".into()),
        // Many servers run at once in the tests; the default 128MB each adds up.
        ("shared_buffers", "32MB".into()),
        ("logging_collector", "off".into()),
        ("lc_messages", "C".into()),
        // Multi-row inserts split across shards commit with two-phase commit (standbys need at
        // least the primary's value, so every server gets it).
        ("max_prepared_transactions", "16".into()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    settings.extend(extra.iter().cloned());
    write_conf_lines(data, &settings)
}

/// Appends `settings` to `postgresql.conf` (later lines win).
pub(crate) fn write_conf_lines(
    data: &Path,
    settings: &[(String, String)],
) -> Result<(), ClusterError> {
    let mut text = String::from("\n# pgscale local_cluster\n");
    for (name, value) in settings {
        text.push_str(&format!("{name} = {}\n", conf_value(value)));
    }
    OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?
        .write_all(text.as_bytes())?;
    Ok(())
}

/// Builds the options' configuration into a fresh cluster directory.
pub(crate) fn prepare(
    bins: &PgBinaries,
    dir: &Path,
    data: &Path,
    opts: &ClusterOptions,
) -> Result<(), ClusterError> {
    create_data_dir(bins, dir, data, &opts.superuser_password)?;
    write_conf(data, dir, opts.max_connections, &opts.extra_conf)
}

#[cfg(test)]
mod tests {
    use super::conf_value;

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(conf_value("on"), "'on'");
        assert_eq!(conf_value("it's"), "'it''s'");
        assert_eq!(conf_value("'already'"), "'already'");
    }
}
