//! The qemu engine: runs vhost-device-vsock and qemu-system-x86_64 and supervises both, the
//! network gateway when the box has one, and the volumes' virtiofsd servers (started by
//! `volumes::start`). When any of them ends, or the watchdog fires, or SIGTERM arrives, all
//! are stopped together and the sockets removed (a virtiofsd exits when qemu is gone).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boxlite_shim::seccomp::{self, Policy};
use boxlite_shim::sys;
use boxlite_vmspec::qemu::{qemu_args, vhost_vsock_args, QEMU_NET_FD};
use boxlite_vmspec::spec::{remove_socket_files, ShimEvent, VmSpec};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::jail::Jailed;
use crate::network::Gateway;
use crate::report;
use crate::volumes::ShareServer;

/// How long vhost-device-vsock may take to create its socket (it takes ~3 ms).
const BACKEND_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the shim waits, once qemu is gone, for the volumes' servers to see it and exit.
const SHARE_EXIT_WAIT: Duration = Duration::from_secs(2);

pub fn run(
    spec: &VmSpec,
    jailed: &mut Jailed,
    gateway: Option<Gateway>,
    shares: Vec<ShareServer>,
    parent_gone: Option<oneshot::Receiver<()>>,
) -> Result<i32, String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(supervise(spec, jailed, gateway, shares, parent_gone))
}

async fn supervise(
    spec: &VmSpec,
    jailed: &mut Jailed,
    gateway: Option<Gateway>,
    mut shares: Vec<ShareServer>,
    parent_gone: Option<oneshot::Receiver<()>>,
) -> Result<i32, String> {
    let qemu_path = spec.qemu.as_deref().ok_or("the spec names no qemu binary")?;
    let vhost_path = spec.vhost_vsock.as_deref().ok_or("the spec names no vhost-device-vsock binary")?;
    // Detached: the library going away is no signal, so wait on nothing.
    let parent_gone = async move {
        match parent_gone {
            Some(receiver) => receiver.await.unwrap_or(()),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(parent_gone);
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("watching SIGTERM: {e}"))?;

    let filter = |policy: Policy| spec.jail.seccomp.then(|| seccomp::program(policy));
    // The gateway ending ends the VM too: a box whose network vanished is not what was asked for.
    let gateway_pid = gateway.as_ref().map(|g| g.pid);
    let (net_fd, gateway_exit, forwards) = match gateway {
        Some(g) => (Some(g.vmm_end), Some(sys::async_readable(g.pidfd).map_err(|e| format!("watching the gateway: {e}"))?), g.forwards),
        None => (None, None, Vec::new()),
    };
    let gateway_gone = first_readable(gateway_exit.as_slice());
    tokio::pin!(gateway_gone);
    // A volume's server ending ends the VM: its files would vanish under the box.
    let share_exits = shares
        .iter()
        .map(|s| s.pidfd.try_clone().and_then(sys::async_readable))
        .collect::<std::io::Result<Vec<AsyncFd<OwnedFd>>>>()
        .map_err(|e| format!("watching the volumes' servers: {e}"))?;
    let share_gone = first_readable(&share_exits);
    tokio::pin!(share_gone);
    let mut vhost = spawn_child(vhost_path, vhost_vsock_args(spec), filter(Policy::VhostVsock), None)?;
    if let Err(e) = wait_for_socket(&spec.vhost_user_socket(), &mut vhost).await {
        stop(&mut vhost).await;
        remove_socket_files(spec);
        return Err(e);
    }
    let qemu = spawn_child(qemu_path, qemu_args(spec), filter(Policy::Qemu), net_fd.as_ref().map(|fd| fd.as_fd()));
    // qemu holds the frame socket alone now: when it ends, the gateway reads EOF and exits.
    drop(net_fd);
    let mut qemu = match qemu {
        Ok(child) => child,
        Err(e) => {
            stop(&mut vhost).await;
            remove_socket_files(spec);
            return Err(e);
        }
    };
    if spec.jail.seccomp {
        // The shim's own filter comes after its children exist: it is inherited, and would
        // narrow theirs. TSYNC covers the watchdog thread too.
        let mut installed = vec![Policy::VhostVsock, Policy::Qemu, Policy::Supervisor];
        if !shares.is_empty() {
            installed.push(Policy::Virtiofsd);
        }
        if gateway_pid.is_some() {
            // The gateway installs it on itself before it reads a frame (and exits if it cannot).
            installed.push(Policy::Netgw);
        }
        jailed.protections.seccomp = installed.iter().map(|p| p.name().to_string()).collect();
        let applied = jailed.write_record().and_then(|()| seccomp::apply_all_threads(Policy::Supervisor));
        if let Err(e) = applied {
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            remove_socket_files(spec);
            return Err(format!("seccomp ({}): {e}", Policy::Supervisor.name()));
        }
    }
    let qemu_pid = qemu.id().unwrap_or(0);
    let vhost_pid = vhost.id().unwrap_or(0);
    let mut helper_pids = vec![vhost_pid];
    helper_pids.extend(shares.iter().map(|s| s.child.id()));
    helper_pids.extend(gateway_pid);
    report(&ShimEvent::VmStarted { vmm_pid: qemu_pid, helper_pids, forwards });

    let code = tokio::select! {
        status = qemu.wait() => {
            let status = status.map_err(|e| format!("waiting for qemu: {e}"))?;
            eprintln!("boxlite-shim: qemu exited ({})", describe(status));
            stop(&mut vhost).await;
            status.code().unwrap_or(1)
        }
        status = vhost.wait() => {
            let status = status.map_err(|e| format!("waiting for vhost-device-vsock: {e}"))?;
            eprintln!("boxlite-shim: vhost-device-vsock exited ({}); stopping qemu", describe(status));
            stop(&mut qemu).await;
            1
        }
        _ = &mut gateway_gone => {
            eprintln!("boxlite-shim: the network gateway exited; stopping the VM");
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            1
        }
        index = &mut share_gone => {
            let status = shares[index].child.try_wait().ok().flatten().map(describe).unwrap_or_else(|| "exited".into());
            eprintln!("boxlite-shim: the virtiofsd of volume {} exited ({status}); stopping the VM", spec.shares[index].tag);
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            1
        }
        _ = sigterm.recv() => {
            eprintln!("boxlite-shim: SIGTERM; stopping the VM");
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            143
        }
        () = &mut parent_gone => {
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            1
        }
    };
    reap_shares(&mut shares).await;
    remove_socket_files(spec);
    Ok(code)
}

/// The index of the first descriptor that becomes readable (a pidfd: that process exited);
/// never, for none.
async fn first_readable(fds: &[AsyncFd<OwnedFd>]) -> usize {
    if fds.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (index, fd) in fds.iter().enumerate() {
            if fd.poll_read_ready(cx).is_ready() {
                return std::task::Poll::Ready(index);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Reaps the volumes' servers that have exited (they exit once qemu is gone); the rest die
/// with the shim (PR_SET_PDEATHSIG). The shim cannot signal them: they run as other uids.
async fn reap_shares(shares: &mut [ShareServer]) {
    let deadline = Instant::now() + SHARE_EXIT_WAIT;
    for share in shares {
        while matches!(share.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Spawns a helper whose stdout and stderr go to the shim's log (never to the status pipe),
/// which the kernel kills if the shim dies, and which runs under its seccomp filter from
/// its first instruction (installed between fork and exec).
/// `pass_fd`, when given, is inherited as `QEMU_NET_FD`.
fn spawn_child(
    program: &Path,
    args: Vec<std::ffi::OsString>,
    filter: Option<Vec<libc::sock_filter>>,
    pass_fd: Option<BorrowedFd<'_>>,
) -> Result<Child, String> {
    let log = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| format!("dup stderr: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("dup stderr: {e}"))?;
    let shim = own_pidfd()?;
    let shim_fd: RawFd = shim.as_raw_fd();
    // A copy numbered above the target, so that dup2 never has source == target (which
    // would leave close-on-exec set) and overwrites nothing the child still needs.
    let passed = pass_fd.map(|fd| sys::dup_cloexec_at_least(fd, QEMU_NET_FD + 1)).transpose().map_err(|e| format!("dup: {e}"))?;
    let passed_fd: Option<RawFd> = passed.as_ref().map(|fd| fd.as_raw_fd());
    let mut command = Command::new(program);
    command.args(&args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (prctl, poll, dup2, seccomp, _exit), allocating nothing, on
    // data prepared before the fork (`filter` moves in; `shim_fd` and `passed_fd` stay open
    // in the parent until spawn returns, so the child's copies are open too). PR_SET_PDEATHSIG ties the child to
    // the thread that forks it, the shim's main thread, which lives as long as the shim does.
    unsafe {
        command.as_std_mut().pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The shim may have died between fork and prctl: then nobody would kill us. Its
            // pidfd says so (getppid cannot: the parent lies outside our pid namespace).
            let mut shim = libc::pollfd { fd: shim_fd, events: libc::POLLIN, revents: 0 };
            if libc::poll(&mut shim, 1, 0) != 0 {
                libc::_exit(1);
            }
            if let Some(fd) = passed_fd {
                if libc::dup2(fd, QEMU_NET_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(filter) = &filter {
                seccomp::apply_prepared(filter)?;
            }
            Ok(())
        });
    }
    let child = command.kill_on_drop(true).spawn().map_err(|e| format!("spawn {}: {e}", program.display()));
    drop((shim, passed));
    child
}

/// A pidfd for this process: readable once it has exited.
fn own_pidfd() -> Result<OwnedFd, String> {
    sys::pidfd_open_self().map_err(|e| format!("pidfd_open: {e}"))
}

/// Waits until the vhost-user socket exists, failing early if the backend exits.
async fn wait_for_socket(path: &Path, backend: &mut Child) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = backend.try_wait() {
            return Err(format!("vhost-device-vsock exited before creating {} ({})", path.display(), describe(status)));
        }
        if started.elapsed() > BACKEND_READY_TIMEOUT {
            return Err(format!("vhost-device-vsock did not create {} within {BACKEND_READY_TIMEOUT:?}", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(libc::SIGSYS)) => "killed by SIGSYS: a system call outside its seccomp policy (docs/seccomp.md)".into(),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}
