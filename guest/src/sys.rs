//! The agent's system calls that nix does not offer safely, each behind a safe function.
//! Every unsafe block of the agent is here; the rest of the crate is safe code.
//!
//! What runs between fork and exec (`on_exec`) is here too: it is the one place where only
//! async-signal-safe calls on data prepared before the fork are allowed, and keeping the
//! closure here, built from plain data, is what makes the function safe to call.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// How a child is set up between fork and exec.
pub struct ChildSetup {
    /// chroot(2) here first (None: stay in the agent's root).
    pub root: Option<CString>,
    /// Then chdir(2) here (inside the new root).
    pub cwd: CString,
    /// Make stdin (a pty slave) the controlling terminal of the new session.
    pub tty: bool,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

/// Makes `command`'s child enter `setup.root`, change to `setup.cwd`, start a session of its
/// own, take its tty, and drop to the user, in that order, before it execs.
pub fn on_exec(command: &mut Command, setup: ChildSetup) {
    let ChildSetup { root, cwd, tty, uid, gid, groups } = setup;
    // SAFETY: the closure runs in the child between fork and exec. It only makes
    // async-signal-safe system calls (chroot, chdir, setsid, ioctl, setgroups, setgid,
    // setuid), allocates nothing and takes no lock; the strings and the group list it reads
    // were built before the fork and move into the closure, so they live as long as it does.
    unsafe {
        command.pre_exec(move || {
            if let Some(root) = &root {
                if libc::chroot(root.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // A session (and process group) of its own: signals and the timeout reach
            // the whole group, and a tty becomes its controlling terminal.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// kill(2) with a raw signal number, as the host sent it: nix's `Signal` has no real-time
/// signals and no signal 0, both of which the host may ask for. A negative `pid` names a
/// process group.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes integers only; an invalid pid or signal is an error, not UB.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings a network interface up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP), as
/// `ip link set NAME up` does. The kernel gives `lo` its 127.0.0.1/8 and ::1 once it is up.
pub fn set_interface_up(name: &str) -> io::Result<()> {
    let socket = inet_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: both ioctls read and write one ifreq through the pointer, which points at
    // `request`, alive and exclusively borrowed for each call; its name is NUL-terminated
    // (checked by `interface_request`); the descriptor is open (owned above). Reading
    // `ifru_flags` after SIOCGIFFLAGS reads the union member the kernel just wrote.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives a network interface its IPv4 address, then its netmask (SIOCSIFADDR, then
/// SIOCSIFNETMASK), as `ip addr add ADDR/PREFIX dev NAME` does. The address alone would get
/// its class's mask (/8 for 10.x); setting the mask second also moves the broadcast address
/// and the on-link route to the right prefix.
pub fn set_interface_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    let socket = inet_socket()?;
    for (ioctl, value) in [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, netmask)] {
        let mut request = interface_request(name)?;
        request.ifr_ifru.ifru_addr = sockaddr_ipv4(value);
        // SAFETY: both ioctls read one ifreq (a NUL-terminated name, checked by
        // `interface_request`, and an AF_INET sockaddr in the union) through the pointer,
        // which points at `request`, alive for the call; the descriptor is open (owned above).
        if unsafe { libc::ioctl(socket.as_raw_fd(), ioctl, &request) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Adds the IPv4 default route (0.0.0.0/0) via `gateway` (SIOCADDRT), as `ip route add
/// default via GATEWAY` does. The kernel picks the interface whose on-link route holds the
/// gateway, so that interface must be up with its address set first.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let socket = inet_socket()?;
    // SAFETY: rtentry is plain data (integers, sockaddrs, and a device-name pointer for which
    // null means "no device given"), for which all-zero bytes are a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_ipv4(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr_ipv4(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr_ipv4(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads one rtentry through the pointer, which points at `route`, alive
    // for the call; its rt_dev is null, so the kernel follows no other pointer; the
    // descriptor is open (owned above).
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &route) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A datagram socket for the interface and route ioctls (it is never bound or used to send).
fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes integers only; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An ifreq naming the interface `name` (NUL-terminated), the rest zero.
fn interface_request(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain data (a name array and a union of integers, addresses and a
    // pointer the ioctls used here never follow), for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

/// `addr` as the generic sockaddr that ifreq and rtentry hold: the bytes of a sockaddr_in
/// (family, then port and address in network byte order, then zeroes), port 0.
fn sockaddr_ipv4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    // sa_data[0..2] is sin_port (0); sa_data[2..6] is sin_addr, most significant octet first.
    for (slot, octet) in data[2..6].iter_mut().zip(addr.octets()) {
        *slot = octet as libc::c_char;
    }
    libc::sockaddr { sa_family: libc::AF_INET as libc::sa_family_t, sa_data: data }
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at `size`, alive
    // for the call; the descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// openat2(2) of `path` under `dir` with RESOLVE_IN_ROOT: `..` and absolute symlinks stay
/// inside `dir`, as they would after a chroot to it.
pub fn openat2_in_root(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain integers, for which all zeroes is a valid value (and the
    // one the kernel wants in fields we do not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: openat2 reads `how` (of the size we pass) and the NUL-terminated path, both
    // alive for the call; `dir` is borrowed, so it is open.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// openat(2) of one `name` under `dir` (no resolution rules beyond `flags`: pass O_NOFOLLOW
/// to refuse a symlink as the last component).
pub fn open_at(dir: &impl AsRawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: openat reads the NUL-terminated name, alive for the call; `dir` is borrowed
    // from an object that holds its descriptor open (an OwnedFd, a nix Dir).
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The size of a block device in bytes (BLKGETSIZE64).
pub fn block_device_size(device: BorrowedFd<'_>) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `bytes`; the
    // descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(device.as_raw_fd(), BLKGETSIZE64, &mut bytes) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes)
}

/// Grows the mounted ext4 file system that `mounted` is open on to `blocks` blocks, online
/// (EXT4_IOC_RESIZE_FS).
pub fn ext4_resize(mounted: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count) through the pointer,
    // which points at `blocks`; the descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(mounted.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` from getrandom(2) with GRND_INSECURE (never waits for the CRNG). Returns how
/// many bytes were written.
pub fn getrandom_insecure(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_INSECURE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Registers a descriptor with the tokio reactor (which must be running).
pub fn register_async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped and always names the same descriptor, and
    // it moves into the AsyncFd, so it stays open for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_ipv4_has_the_layout_of_a_sockaddr_in() {
        let addr = Ipv4Addr::new(10, 0, 2, 15);
        let expected = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
            sin_zero: [0; 8],
        };
        assert_eq!(std::mem::size_of::<libc::sockaddr>(), std::mem::size_of::<libc::sockaddr_in>());
        // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain integers (checked
        // above), so any sockaddr_in's bytes are a valid sockaddr.
        let expected: libc::sockaddr = unsafe { std::mem::transmute(expected) };
        let got = sockaddr_ipv4(addr);
        assert_eq!((got.sa_family, got.sa_data), (expected.sa_family, expected.sa_data));
    }
}
