//! The library's raw system calls outside the C ABI, each behind a safe function: the
//! descriptor-relative file calls of the path-safe layer extractor (every one takes a
//! directory descriptor and a single name, never a path the kernel would resolve through
//! symlinks), the home lock, random ids, pidfds, and where the library was loaded from.
//! Everything else goes through std, nix or tokio.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes ownership of a descriptor a call just returned (or its error).
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, just returned by the kernel, that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// openat2(dir, path, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a
/// directory inside `dir` as if `dir` were `/`; no symlink or `..` leads out of it.
pub(crate) fn open_dir_in_root(dir: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let c_path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zeroed is valid and then filled in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (of the size passed) and the path, both alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(fd)
}

/// openat(dir, name, flags | O_CLOEXEC, mode).
pub(crate) fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: openat on a descriptor we hold with a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    owned(fd.into())
}

/// fstatat(dir, name, AT_SYMLINK_NOFOLLOW): a symlink is reported as itself.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; zeroed is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat fills the buffer we own, on a descriptor we hold with a NUL-terminated name.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// readlinkat(dir, name): a symlink's target (at most PATH_MAX bytes).
pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into the buffer we own.
    let len = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: mkdirat on a descriptor we hold with a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub(crate) fn mkfifo_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: mkfifoat on a descriptor we hold with a NUL-terminated name.
    check(unsafe { libc::mkfifoat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// symlinkat(target, dir, name): the target is stored as text, never resolved here.
pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: symlinkat with NUL-terminated strings and a descriptor we hold.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// linkat(from_dir, from, to_dir, to, 0): flags 0 never follows a symlink as `from`.
pub(crate) fn link_at(from_dir: BorrowedFd<'_>, from: &CStr, to_dir: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    // SAFETY: linkat on descriptors we hold with NUL-terminated names.
    check(unsafe { libc::linkat(from_dir.as_raw_fd(), from.as_ptr(), to_dir.as_raw_fd(), to.as_ptr(), 0) })
}

/// unlinkat(dir, name): an empty directory with `directory`, else anything but one.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, directory: bool) -> io::Result<()> {
    let flags = if directory { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: unlinkat on a descriptor we hold with a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Owner, then mode (chown clears setuid/setgid bits; a symlink's mode is left alone), then
/// mtime of `name` in `dir`, acting on a symlink itself, never on what it points to.
pub(crate) fn set_metadata_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    is_symlink: bool,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime: i64,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        // SAFETY: fchownat on a descriptor we hold with a NUL-terminated name.
        check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    if !is_symlink {
        // SAFETY: as above.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })?;
    }
    let times = [libc::timespec { tv_sec: mtime, tv_nsec: 0 }, libc::timespec { tv_sec: mtime, tv_nsec: 0 }];
    // SAFETY: as above; `times` holds the two timespecs utimensat reads.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

pub(crate) fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: fsetxattr on a descriptor we hold, with a NUL-terminated name and a value slice
    // of the length we pass.
    check(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// flock(LOCK_EX | LOCK_NB): Ok(false) if another open file description holds it.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we hold; LOCK_NB makes it fail instead of waiting.
    match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fills `buf` from the kernel's random source; false if it gave fewer bytes.
pub(crate) fn random_bytes(buf: &mut [u8]) -> bool {
    // SAFETY: getrandom writes at most `buf.len()` bytes into the buffer we own.
    let filled = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    filled == buf.len() as isize
}

/// `2 * N` random hex digits. Without the kernel's random source (it never fails on a
/// booted system), the time, the pid and a counter keep them distinct.
pub(crate) fn random_hex<const N: usize>() -> String {
    static DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; N];
    if !random_bytes(&mut bytes) {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) as u64;
        let drawn = DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mixed = (nanos ^ u64::from(std::process::id()) << 32 ^ drawn.rotate_right(16)).to_le_bytes();
        for (byte, mix) in bytes.iter_mut().zip(mixed.iter().cycle()) {
            *byte = *mix;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A descriptor that follows process `pid` (it cannot come to mean a reused pid).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })
}

/// SIGKILL to the process a pidfd follows.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a pidfd we hold, with no siginfo.
    let rc =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
    check(rc as libc::c_int)
}

/// The file the code at `address` was loaded from (dladdr): libboxlite.so for a function of
/// the shared library, the executable when boxlite is linked in statically.
pub(crate) fn object_file_of(address: *const libc::c_void) -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; zeroed is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills the Dl_info we own.
    if unsafe { libc::dladdr(address, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname, when set, is a NUL-terminated path owned by the loader, which
    // outlives this call (the object stays loaded: our own code is in it).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(OsStr::from_bytes(name.to_bytes())))
}
