//! The qemu engine: runs vhost-device-vsock and qemu-system-x86_64 and supervises both. When
//! either ends, or the watchdog fires, or SIGTERM arrives, both are stopped together and the
//! sockets removed.

use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boxlite::runtime::engine::qemu::{qemu_args, vhost_vsock_args};
use boxlite::runtime::spec::{remove_socket_files, ShimEvent, VmSpec};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::{report, watchdog};

/// How long vhost-device-vsock may take to create its socket (it takes ~3 ms).
const BACKEND_READY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(spec: &VmSpec) -> Result<i32, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(supervise(spec))
}

async fn supervise(spec: &VmSpec) -> Result<i32, String> {
    let qemu_path = spec.qemu.as_deref().ok_or("the spec names no qemu binary")?;
    let vhost_path = spec.vhost_vsock.as_deref().ok_or("the spec names no vhost-device-vsock binary")?;
    let (parent_gone_tx, mut parent_gone) = tokio::sync::oneshot::channel::<()>();
    if !spec.detached {
        watchdog::watch_stdin(move || {
            let _ = parent_gone_tx.send(());
        });
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("watching SIGTERM: {e}"))?;

    let mut vhost = spawn_child(vhost_path, vhost_vsock_args(spec))?;
    if let Err(e) = wait_for_socket(&spec.vhost_user_socket(), &mut vhost).await {
        stop(&mut vhost).await;
        remove_socket_files(spec);
        return Err(e);
    }
    let mut qemu = match spawn_child(qemu_path, qemu_args(spec)) {
        Ok(child) => child,
        Err(e) => {
            stop(&mut vhost).await;
            remove_socket_files(spec);
            return Err(e);
        }
    };
    let qemu_pid = qemu.id().unwrap_or(0);
    let vhost_pid = vhost.id().unwrap_or(0);
    let _ = std::fs::write(spec.run_dir.join("vmm.pid"), format!("{qemu_pid}\n"));
    report(&ShimEvent::VmStarted { vmm_pid: qemu_pid, helper_pids: vec![vhost_pid] });

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
        _ = sigterm.recv() => {
            eprintln!("boxlite-shim: SIGTERM; stopping the VM");
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            143
        }
        Ok(()) = &mut parent_gone => {
            stop(&mut qemu).await;
            stop(&mut vhost).await;
            1
        }
    };
    remove_socket_files(spec);
    Ok(code)
}

/// Spawns a helper whose stdout and stderr go to the shim's log (never to the status pipe),
/// and which the kernel kills if the shim dies.
fn spawn_child(program: &Path, args: Vec<std::ffi::OsString>) -> Result<Child, String> {
    let log = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| format!("dup stderr: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("dup stderr: {e}"))?;
    let shim_pid = std::process::id() as i32;
    let mut command = Command::new(program);
    command.args(&args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid, _exit). PR_SET_PDEATHSIG ties the child to the
    // thread that forks it, the shim's main thread, which lives as long as the shim does.
    unsafe {
        command.as_std_mut().pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The shim may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != shim_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.kill_on_drop(true).spawn().map_err(|e| format!("spawn {}: {e}", program.display()))
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
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}
