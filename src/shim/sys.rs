//! The shim's system calls that nix does not offer safely, each behind a safe function,
//! except `close_fds_from`, which cannot be safe (it closes descriptors it does not own).
//!
//! Unsafe code of the shim outside this module, and why it stays where it is:
//! - `jail::close_inherited_fds`: calls `close_fds_from`, first in the jail, when nothing
//!   owns a descriptor above stderr yet;
//! - the `pre_exec` closures of `engine_qemu::spawn_child`, `network::start` and
//!   `volumes::start`: they run
//!   between fork and exec, and their SAFETY comments are about what each closure does
//!   there, so they sit beside the closures;
//! - `engine_krun::run`: calls into libkrun's C API (an FFI binding, not a system call);
//! - `jail::apply`'s `remove_var`: sound only because of the order in which the jail runs
//!   (no thread but the watchdog, which never reads the environment);
//! - `seccomp_probe`: the probe's job is to make raw system calls with harmless arguments.
//! - the `pre_exec` in `seccomp`'s tests: installs a policy in a child, as the engine does.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Closes every descriptor from `first` up (close_range(2)). Errors are not reported: the
/// only one possible here is ENOSYS on kernels before 5.9.
///
/// # Safety
///
/// Nothing in this process may own a descriptor from `first` up (an `OwnedFd`, a `File`, a
/// runtime's epoll): it would go on using a closed number, which a later open reuses.
pub unsafe fn close_fds_from(first: u32) {
    // SAFETY: close_range takes integers only; that no descriptor it closes is owned is the
    // caller's promise.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// A pidfd for this process (pidfd_open(2), O_CLOEXEC): readable once it has exited.
pub fn pidfd_open_self() -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers only (our own pid, no flags).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Blocks until `fd` is readable (poll(2), no timeout): for a pidfd, until its process has
/// exited. Interrupted polls are retried.
pub fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut wanted = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: poll on one pollfd that lives on this stack for the call; the borrow keeps
        // the descriptor open.
        if unsafe { libc::poll(&mut wanted, 1, -1) } >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A close-on-exec copy of `fd` numbered `lowest` or more (fcntl F_DUPFD_CLOEXEC).
pub fn dup_cloexec_at_least(fd: BorrowedFd<'_>, lowest: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the borrow keeps open; it takes integers only.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, lowest) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Installs a seccomp BPF program on the calling thread (seccomp(2),
/// SECCOMP_SET_MODE_FILTER, no flags). The kernel requires no_new_privs (or CAP_SYS_ADMIN)
/// first. Async-signal-safe: one system call, no allocation.
pub fn seccomp_set_mode_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: fprog points at `len` instructions borrowed from `program`, alive for the
    // call; the kernel copies them and never writes through the pointer (hence the cast).
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog as *const libc::sock_fprog) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for another process (pidfd_open(2)): readable once it has exited.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers only (a pid, no flags).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Empties the calling thread's capability sets (permitted, effective, inheritable) with
/// capset(2). Async-signal-safe: one system call on stack data.
pub fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a version-3 header and two data structs (64-bit sets), both of
    // which live on this stack for the call; it writes nothing.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes every capability from the bounding set (PR_CAPBSET_DROP, needs CAP_SETPCAP), so
/// that no execve can give one back, even to uid 0. Async-signal-safe.
pub fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes integers only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            return if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 { Ok(()) } else { Err(e) };
        }
    }
    Ok(())
}

/// Registers `fd` with the current tokio runtime for readability (a pidfd: its process
/// exited). Must be called inside the runtime.
pub fn async_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open until it is dropped
    // and deregisters it first.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}
