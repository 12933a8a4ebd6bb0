//! Process and file-ownership helpers for the local servers: running binaries as the `postgres` user
//! when we are root, checking and killing processes, and the watchdog that cleans up after a dead owner.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::ClusterError;

/// Postgres refuses to run as root, so as root every server binary runs as this existing user.
pub(crate) const SERVER_USER: &str = "postgres";

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of [`SERVER_USER`], looked up once.
fn server_ids() -> Result<(libc::uid_t, libc::gid_t), ClusterError> {
    static IDS: OnceLock<Option<(libc::uid_t, libc::gid_t)>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let name = CString::new(SERVER_USER).ok()?;
        // SAFETY: `name` is a valid C string; getpwnam returns null or a pointer to static storage we
        // read immediately (the lookup runs once, under OnceLock, so no other getpwnam races it here).
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        // SAFETY: `pw` is non-null and points to a valid passwd record.
        Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
    });
    ids.ok_or(ClusterError::NoServerUser {
        user: SERVER_USER.to_string(),
    })
}

/// Fails early (with a clear error) when we are root but cannot switch to the server user.
pub(crate) fn check_can_run_server() -> Result<(), ClusterError> {
    if running_as_root() {
        server_ids()?;
        which("runuser")?;
    }
    Ok(())
}

fn which(name: &str) -> Result<std::path::PathBuf, ClusterError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ClusterError::BinaryNotFound { path: name.into() })
}

/// A command that runs `program` as the server user when we are root, in `cwd` (the server user may
/// not be allowed into our current directory, which makes initdb and pg_ctl complain).
pub(crate) fn as_server_user(program: &Path, cwd: &Path) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// Gives `path` to the server user when we are root, so the server can write there.
pub(crate) fn give_to_server_user(path: &Path) -> Result<(), ClusterError> {
    if !running_as_root() {
        return Ok(());
    }
    let (uid, gid) = server_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    Ok(())
}

/// Whether `pid` is a live process (zombies count as dead: our PID 1 may never reap an orphaned
/// postmaster).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && proc_state(pid).is_none_or(|state| state != 'Z' && state != 'X')
}

/// The part of `/proc/<pid>/stat` after the command name, which may itself contain spaces or ')'.
fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn proc_state(pid: i32) -> Option<char> {
    proc_stat_fields(pid)?.first()?.chars().next()
}

/// The direct children of `pid` (a postmaster's backends and auxiliary processes).
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| {
            proc_stat_fields(child)
                .and_then(|fields| fields.get(1)?.parse::<i32>().ok())
                .is_some_and(|ppid| ppid == pid)
        })
        .collect()
}

pub(crate) fn sigkill(pid: i32) -> Result<(), ClusterError> {
    send_signal(pid, libc::SIGKILL)
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: i32, signal: libc::c_int) -> Result<(), ClusterError> {
    // SAFETY: sending a signal has no memory-safety preconditions; callers pass pids of our servers.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(err.into())
        }
    }
}

/// Waits until none of `pids` is alive; false on timeout.
pub(crate) fn wait_dead(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&pid| pid_alive(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A detached shell that, once our process is gone, stops the server and deletes its directory — the
/// cleanup `Drop` cannot do when a test binary is SIGKILLed or aborts.
pub(crate) struct Watchdog {
    child: Child,
}

/// `$1` = our pid, `$2` = pg_ctl, `$3` = data dir, `$4` = cluster dir, `$5` = "root" when the stop must
/// switch to the server user. Arguments rather than interpolation, so paths need no shell quoting.
const WATCHDOG_SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ "$5" = root ]; then
  runuser -u postgres -- "$2" stop -D "$3" -m immediate -w -t 10 >/dev/null 2>&1
else
  "$2" stop -D "$3" -m immediate -w -t 10 >/dev/null 2>&1
fi
rm -rf "$4"
"#;

impl Watchdog {
    pub(crate) fn spawn(pg_ctl: &Path, data: &Path, dir: &Path) -> Result<Watchdog, ClusterError> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pgscale-watchdog")
            .arg(std::process::id().to_string())
            .arg(pg_ctl)
            .arg(data)
            .arg(dir)
            .arg(if running_as_root() { "root" } else { "user" })
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the test run must not kill the cleanup too.
            .process_group(0)
            .spawn()?;
        Ok(Watchdog { child })
    }
}

impl Drop for Watchdog {
    /// Kills the whole group (the shell and its `sleep`) and reaps the shell.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: the watchdog leads its own process group (process_group(0)), so -pid is that group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
