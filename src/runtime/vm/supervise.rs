//! Supervision: one task per shim waits for it to end (a child: its status; an attached
//! shim: a pidfd), kills it on request, publishes the exit, and removes what a killed shim
//! leaves behind (its socket files and cgroups).

use std::os::fd::AsFd;

use super::*;
use crate::runtime::sys;

/// How the shim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimExit {
    /// `None` for a shim this process attached to (not its child: no status to collect).
    pub status: Option<ExitStatus>,
}

impl ShimExit {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for ShimExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self.status.map(|s| (s, s.code(), s.signal())) {
            Some((_, Some(code), _)) => write!(f, "exit code {code}"),
            Some((_, None, Some(libc::SIGSYS))) => {
                write!(f, "killed by SIGSYS: a system call outside its seccomp policy (docs/seccomp.md; `dmesg | grep type=1326` names it)")
            }
            Some((_, None, Some(signal))) => write!(f, "killed by signal {signal}"),
            Some((status, _, _)) => write!(f, "{status}"),
            None => write!(f, "exited (an attached shim: its status is its parent's to collect)"),
        }
    }
}
/// Owns the shim's `Child`: waits for it, kills it on request, publishes its exit, and then
/// removes what a SIGKILLed shim leaves: the VM's socket files and its cgroups.
pub(super) fn supervise(child: Child, spec: VmSpec) -> (watch::Receiver<Option<ShimExit>>, mpsc::UnboundedSender<()>) {
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<()>();
    let shim_pid = child.id().unwrap_or(0);
    let mut shim = Supervised { child, shim_pid, spec: Some(spec) };
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                status = shim.child.wait() => break status,
                Some(()) = kill_rx.recv() => { let _ = shim.child.start_kill(); }
            }
        };
        let spec = shim.spec.take().expect("the spec is taken once, here or on drop");
        let status = match status {
            Ok(status) => status,
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(libc::SIGKILL)
            }
        };
        if !spec.detached {
            spec::remove_socket_files(&spec);
        }
        // After a clean exit they are empty now (the shim waits for its children); after a
        // SIGKILL the VM's processes are still exiting: those are retried off this task, so
        // that the exit is published at once.
        let left = cgroups::remove(&cgroups::of_shim(shim_pid, &recorded_cgroups(&spec)), Duration::ZERO);
        let _ = exit_tx.send(Some(ShimExit { status: Some(status) }));
        remove_cgroups_later(left.into_iter().map(|(dir, _)| dir).collect());
    });
    (exit_rx, kill_tx)
}

/// The shim being supervised. If the supervising task is dropped before the shim ended (its
/// async runtime shut down), this kills a non-detached shim (as the `Child`'s kill_on_drop
/// would) and removes its cgroups once its VM has gone.
struct Supervised {
    child: Child,
    shim_pid: u32,
    /// Taken by the task when the shim ended.
    spec: Option<VmSpec>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let Some(spec) = self.spec.take() else { return };
        if spec.detached {
            return; // it keeps running, for the next runtime to attach to
        }
        let _ = self.child.start_kill();
        remove_cgroups_later(cgroups::of_shim(self.shim_pid, &recorded_cgroups(&spec)));
    }
}

/// Removes cgroups of an ended shim while its VM's processes finish exiting (bounded by
/// `cgroups::REMOVE_PATIENCE`). A thread of its own: it must not hold up the async runtime,
/// nor depend on it still running. What it cannot remove, the next runtime does.
fn remove_cgroups_later(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let removing = std::thread::Builder::new()
        .name("boxlite-cgroups".into())
        .spawn(move || cgroups::report_left(&cgroups::remove(&dirs, cgroups::REMOVE_PATIENCE)));
    if let Err(e) = removing {
        tracing::warn!("cannot start a thread to remove an ended shim's cgroups: {e}; the next runtime removes them");
    }
}

/// Follows a shim that is not our child (a detached VM another runtime started) through a
/// pidfd: publishes its end, kills it on request, and removes its cgroups once it ended.
pub(super) fn supervise_attached(pid: u32, spec: VmSpec) -> Result<(watch::Receiver<Option<ShimExit>>, mpsc::UnboundedSender<()>)> {
    let pidfd = sys::pidfd_open(pid).map_err(|e| Error::io(format!("pidfd_open({pid})"), e))?;
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
    let pidfd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::io(format!("watching shim {pid}"), std::io::Error::other(e.to_string())))?;
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = pidfd.readable() => break,
                Some(()) = kill_rx.recv() => {
                    // Through the pidfd: it cannot reach a reused pid.
                    let _ = sys::pidfd_kill(pidfd.get_ref().as_fd());
                }
            }
        }
        let left = cgroups::remove(&cgroups::of_shim(pid, &recorded_cgroups(&spec)), Duration::ZERO);
        let _ = exit_tx.send(Some(ShimExit { status: None }));
        remove_cgroups_later(left.into_iter().map(|(dir, _)| dir).collect());
    });
    Ok((exit_rx, kill_tx))
}

/// The cgroups the shim recorded in `protections.json` (`cgroups::of_shim` checks each).
fn recorded_cgroups(spec: &VmSpec) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(spec.protections_file()) else { return Vec::new() };
    serde_json::from_slice::<Protections>(&bytes).map(|p| p.cgroups).unwrap_or_default()
}

/// Whether `pid` is a running boxlite-shim (a pid can be reused by another program).
pub(crate) fn shim_running(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("boxlite-shim")
}
pub(super) async fn wait_exit(exit: &watch::Receiver<Option<ShimExit>>, timeout: Duration) -> Option<ShimExit> {
    let mut exit = exit.clone();
    let exited = tokio::time::timeout(timeout, exit.wait_for(Option::is_some)).await;
    exited.ok().and_then(|r| r.ok().and_then(|e| e.clone()))
}
