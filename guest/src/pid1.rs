//! What PID 1 owes the system: pseudo file systems, a console, reaping, powering off.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::mount::{mount, MsFlags};

use crate::log;

struct PseudoMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Mounted in order; /dev comes first so that the console can be opened before anything
/// else is logged.
const PSEUDO_MOUNTS: &[PseudoMount] = &[
    PseudoMount { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MsFlags::MS_NOSUID, data: Some("mode=0755") },
    PseudoMount { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: None },
    PseudoMount { source: "sysfs", target: "/sys", fstype: "sysfs", flags: NOSUID_NODEV_NOEXEC, data: None },
    PseudoMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    PseudoMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    PseudoMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620"),
    },
    PseudoMount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

pub fn setup() -> Result<(), String> {
    for (index, m) in PSEUDO_MOUNTS.iter().enumerate() {
        std::fs::create_dir_all(m.target).map_err(|e| format!("mkdir {}: {e}", m.target))?;
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(format!("mount {} on {}: {e}", m.fstype, m.target)),
        }
        if index == 0 {
            attach_console();
        }
    }
    Ok(())
}

/// Points stdin/stdout/stderr at /dev/console. The initramfs carries no device nodes, so the
/// kernel could not open a console for us before devtmpfs was mounted.
fn attach_console() {
    let Ok(console) = OpenOptions::new().read(true).write(true).open("/dev/console") else {
        return;
    };
    for target in 0..=2 {
        // Replaces the standard descriptors of this single-threaded process at start-up,
        // before anything else holds them.
        let _ = nix::unistd::dup2(console.as_raw_fd(), target);
    }
}

/// Flushes file systems and ends the VM. Never returns.
///
/// The guest has no ACPI, so a real power-off is impossible (the kernel would halt and the
/// VM would sit there). A reboot is the way out: `reboot=t` (qemu: triple fault) or
/// `reboot=k` (libkrun: i8042 reset) on the command line makes it immediate, and both VMMs
/// end the VM on reboot (qemu runs with -no-reboot).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    log!("reboot failed: {e}");
    // PID 1 exiting panics the kernel, and `panic=-1` on the command line turns that into
    // an immediate reboot, which the VMMs treat as the VM's end.
    std::process::exit(1)
}
