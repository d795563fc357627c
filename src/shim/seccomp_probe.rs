//! boxlite-seccomp-probe <policy> <syscall>: installs the named compiled seccomp policy on
//! itself, the way the shim does for that process kind, then makes the named syscall with
//! arguments that cannot change anything (invalid or no-op ones). It prints the result and
//! exits 0 whenever the syscall returned, whatever it returned; under a policy that forbids
//! the call the kernel kills it by SIGSYS instead. tests/seccomp.rs runs it; so may a person
//! checking a build (docs/seccomp.md).

use boxlite_shim::seccomp::{apply_all_threads, apply_prepared, program, Policy};

/// Syscalls the probe can make, and how: each returns an error or does nothing.
const SYSCALLS: &[&str] = &[
    "getpid",
    "restart_syscall",
    "ptrace",
    "mount",
    "umount2",
    "kexec_load",
    "bpf",
    "unshare",
    "setns",
    "reboot",
    "socket_unix",
    "socket_inet",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        let policies: Vec<_> = Policy::ALL.iter().map(|p| p.name()).collect();
        eprintln!("usage: boxlite-seccomp-probe <{}> <{}>", policies.join("|"), SYSCALLS.join("|"));
        std::process::exit(2)
    };
    if args.len() != 3 || !SYSCALLS.contains(&args[2].as_str()) {
        usage();
    }
    let Some(policy) = Policy::from_name(&args[1]) else { usage() };
    let syscall = args[2].as_str();

    // The helpers' policies go on in pre_exec, the shim's with TSYNC: install them the same way.
    let installed = match policy {
        Policy::Qemu | Policy::VhostVsock | Policy::Virtiofsd => apply_prepared(&program(policy)).map_err(|e| e.to_string()),
        Policy::Supervisor | Policy::Krun | Policy::Netgw => apply_all_threads(policy),
    };
    if let Err(e) = installed {
        eprintln!("boxlite-seccomp-probe: installing {}: {e}", policy.name());
        std::process::exit(3);
    }

    // SAFETY: every call passes integers or null pointers that the kernel rejects or treats
    // as a no-op (invalid command, bad flags, null path, no unshare flags); nothing is changed.
    let rc = unsafe {
        match syscall {
            "getpid" => libc::syscall(libc::SYS_getpid),
            // Nothing interrupted to restart: EINTR.
            "restart_syscall" => libc::syscall(libc::SYS_restart_syscall),
            // PTRACE_PEEKDATA on pid 0: no such tracee.
            "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 0, 0, 0),
            // Null source, target and type: EFAULT.
            "mount" => libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0),
            "umount2" => libc::syscall(libc::SYS_umount2, 0, 0),
            // Unknown flags: EINVAL (or EPERM) before anything is loaded or unloaded.
            "kexec_load" => libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0xffff_0000_u64),
            // No such bpf command.
            "bpf" => libc::syscall(libc::SYS_bpf, -1, 0, 0),
            // No flags: unshares nothing.
            "unshare" => libc::syscall(libc::SYS_unshare, 0),
            "setns" => libc::syscall(libc::SYS_setns, -1, 0),
            // Wrong magic: EINVAL.
            "reboot" => libc::syscall(libc::SYS_reboot, 0, 0, 0, 0),
            // A socket of each family, closed at exit: the helpers' policies allow AF_UNIX only.
            "socket_unix" => libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0),
            "socket_inet" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            _ => unreachable!("checked against SYSCALLS"),
        }
    };
    let errno = if rc == -1 { format!(" ({})", std::io::Error::last_os_error()) } else { String::new() };
    println!("{syscall} returned {rc}{errno} under the {} policy", policy.name());
    std::process::exit(0)
}
