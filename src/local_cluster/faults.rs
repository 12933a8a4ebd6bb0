//! Faults for tests: a server that hangs (every process stopped with SIGSTOP, so the kernel still
//! accepts TCP connections but nothing answers) and comes back (SIGCONT).

use super::os::{children_of, send_signal};
use super::{ClusterError, LocalPostgres};

impl LocalPostgres {
    /// Stops the postmaster and all its processes (SIGSTOP): the server hangs as a wedged machine
    /// would. [`LocalPostgres::thaw`] resumes it; stopping or dropping the server thaws it first.
    pub fn freeze(&self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid().ok_or(ClusterError::NotRunning)?;
        // The postmaster first, so it forks no new backend while its children are being stopped.
        send_signal(pid, libc::SIGSTOP)?;
        for child in children_of(pid) {
            send_signal(child, libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// Resumes a server stopped by [`LocalPostgres::freeze`] (harmless on a running one).
    pub fn thaw(&self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid().ok_or(ClusterError::NotRunning)?;
        for child in children_of(pid) {
            send_signal(child, libc::SIGCONT)?;
        }
        send_signal(pid, libc::SIGCONT)
    }
}
