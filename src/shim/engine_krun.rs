//! The krun engine: libkrun, linked into this process. `krun_start_enter` never returns on
//! success: libkrun runs the VM on this process's threads and exits the process when the
//! guest powers off. That is why the engine lives in the shim and not in the library.

use boxlite_vmspec::spec::VmSpec;
use tokio::sync::oneshot;

use crate::jail::Jailed;
use crate::network::Gateway;

/// The library checks this before spawning us; checking again keeps a hand-written spec
/// from sending libkrun into a guest that dies with KVM_EXIT_INTERNAL_ERROR. Called before
/// the jail, which hides /proc and /sys.
pub fn check_host() -> Result<(), String> {
    let host = boxlite_vmspec::engine::HostVirtualization::detect();
    if !host.hardware_kvm() {
        return Err(format!(
            "the krun engine needs hardware KVM: {}. Use the qemu engine instead (BOXLITE_ENGINE=qemu)",
            host.why_no_hardware_kvm()
        ));
    }
    Ok(())
}

#[cfg(feature = "krun")]
pub fn run(
    spec: &VmSpec,
    jailed: &mut Jailed,
    gateway: Option<Gateway>,
    parent_gone: Option<oneshot::Receiver<()>>,
) -> Result<i32, String> {
    use std::ffi::CString;
    use std::os::fd::{AsFd, AsRawFd};

    use boxlite_vmspec::network::GUEST_MAC;

    use boxlite_shim::seccomp::{self, Policy};
    use boxlite_vmspec::spec::{remove_socket_files, DiskFormat, ShimEvent};

    use crate::report;
    let cstring = |what: &str, value: &str| CString::new(value).map_err(|_| format!("{what} contains a NUL byte"));
    let path_cstring = |what: &str, p: &std::path::Path| cstring(what, &p.to_string_lossy());
    let check = |call: &str, rc: i32| {
        if rc < 0 {
            Err(format!("{call} failed: {}", std::io::Error::from_raw_os_error(-rc)))
        } else {
            Ok(rc)
        }
    };

    // The frame socket stays open for libkrun (krun_start_enter never returns).
    let (net_fd, gateway_exit, gateway_pid, forwards) = match gateway {
        Some(g) => (Some(g.vmm_end), Some(g.pidfd), Some(g.pid), g.forwards),
        None => (None, None, None, Vec::new()),
    };
    let kernel = path_cstring("kernel path", &spec.kernel)?;
    let initramfs = path_cstring("initramfs path", &spec.initramfs)?;
    let cmdline = cstring("kernel command line", &spec.cmdline)?;
    let console = path_cstring("console path", &spec.console_log())?;
    let ports = spec
        .host_to_guest_ports
        .iter()
        .map(|&port| Ok((port, path_cstring("vsock socket path", &spec.host_to_guest(port).socket)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let host_ports = spec
        .guest_to_host_ports
        .iter()
        .map(|&port| Ok((port, path_cstring("vsock socket path", &spec.guest_to_host_socket(port))?)))
        .collect::<Result<Vec<_>, String>>()?;
    let disks = spec
        .disks
        .iter()
        .map(|d| {
            let format = match d.format {
                DiskFormat::Raw => 0,
                DiskFormat::Qcow2 => 1,
            };
            Ok((cstring("disk id", &d.id)?, path_cstring("disk path", &d.path)?, format, d.read_only))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let shares = spec
        .shares
        .iter()
        .map(|s| Ok((cstring("volume tag", &s.tag)?, path_cstring("volume path", &s.host_path)?, s.read_only)))
        .collect::<Result<Vec<_>, String>>()?;

    // SAFETY: every pointer passed below comes from a CString that outlives the call
    // (they live until krun_start_enter, which does not return on success); the context id
    // is the one krun_create_ctx returned.
    unsafe {
        let ctx = check("krun_create_ctx", krun::krun_create_ctx())? as u32;
        check("krun_set_vm_config", krun::krun_set_vm_config(ctx, spec.vcpus, spec.memory_mib))?;
        check("krun_set_console_output", krun::krun_set_console_output(ctx, console.as_ptr()))?;
        // 1 = KRUN_KERNEL_FORMAT_ELF: the same vmlinux qemu boots.
        check("krun_set_kernel", krun::krun_set_kernel(ctx, kernel.as_ptr(), 1, initramfs.as_ptr(), cmdline.as_ptr()))?;
        // Plain vsock, no TSI: the guest gets no implicit network through the host's sockets.
        check("krun_disable_implicit_vsock", krun::krun_disable_implicit_vsock(ctx))?;
        check("krun_add_vsock", krun::krun_add_vsock(ctx, 0))?;
        for (port, socket) in &ports {
            check("krun_add_vsock_port2", krun::krun_add_vsock_port2(ctx, *port, socket.as_ptr(), true))?;
        }
        for (port, socket) in &host_ports {
            check("krun_add_vsock_port2", krun::krun_add_vsock_port2(ctx, *port, socket.as_ptr(), false))?;
        }
        // Volumes: libkrun's own virtio-fs server, in this process (docs/volumes.md); no DAX
        // window (shm size 0), read-only where asked (the server refuses writes).
        for (tag, path, read_only) in &shares {
            check("krun_add_virtiofs3", krun::krun_add_virtiofs3(ctx, tag.as_ptr(), path.as_ptr(), 0, *read_only))?;
        }
        for (id, path, format, read_only) in &disks {
            check("krun_add_disk2", krun::krun_add_disk2(ctx, id.as_ptr(), path.as_ptr(), *format, *read_only))?;
        }
        if let Some(net_fd) = &net_fd {
            // The gateway's frame socket by descriptor (no path); no offloads: the gateway
            // takes plain frames with full checksums, as qemu's stream netdev sends them.
            let fd = net_fd.as_raw_fd();
            check("krun_add_net_unixstream", krun::krun_add_net_unixstream(ctx, std::ptr::null(), fd, GUEST_MAC.as_ptr(), 0, 0))?;
        }

        if let Some(parent_gone) = parent_gone {
            // krun_start_enter holds this thread; another one acts for the watchdog (krun
            // enters no pid namespace, so the shim may still create threads).
            let spec = spec.clone();
            std::thread::spawn(move || {
                let _ = parent_gone.blocking_recv();
                remove_socket_files(&spec);
                std::process::exit(1);
            });
        }
        if let Some(pidfd) = gateway_exit {
            // The gateway ending ends the VM too (as under qemu). krun enters no pid
            // namespace, so a thread can still be started to wait (poll) on its pidfd.
            let spec = spec.clone();
            std::thread::spawn(move || {
                if boxlite_shim::sys::wait_readable(pidfd.as_fd()).is_ok() {
                    eprintln!("boxlite-shim: the network gateway exited; stopping the VM");
                    remove_socket_files(&spec);
                    std::process::exit(1);
                }
            });
        }
        if spec.jail.seccomp {
            // libkrun runs the VM on this process's threads: one policy for all of them
            // (the gateway installs its own on itself).
            jailed.protections.seccomp = vec![Policy::Krun.name().to_string()];
            if gateway_pid.is_some() {
                jailed.protections.seccomp.push(Policy::Netgw.name().to_string());
            }
            jailed.write_record()?;
            seccomp::apply_all_threads(Policy::Krun).map_err(|e| format!("seccomp ({}): {e}", Policy::Krun.name()))?;
        }
        let helper_pids = gateway_pid.into_iter().collect();
        report(&ShimEvent::VmStarted { vmm_pid: std::process::id(), helper_pids, forwards });
        let rc = krun::krun_start_enter(ctx);
        Err(format!("krun_start_enter failed: {}", std::io::Error::from_raw_os_error(-rc)))
    }
}

#[cfg(not(feature = "krun"))]
pub fn run(
    _spec: &VmSpec,
    _jailed: &mut Jailed,
    _gateway: Option<Gateway>,
    _parent_gone: Option<oneshot::Receiver<()>>,
) -> Result<i32, String> {
    Err("this boxlite-shim was built without the krun engine (cargo feature `krun`); use the qemu engine (BOXLITE_ENGINE=qemu)".into())
}
