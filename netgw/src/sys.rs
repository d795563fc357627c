//! The gateway's one unsafe operation: taking ownership of the descriptors the shim passed
//! it (`gateway_fds`). Everything else goes through std, tokio, socket2 and nix.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes descriptors `first .. first + count` as owned, once per process; each must be open.
/// Call it before the process opens anything (main does it first), so that these numbers
/// can only be the ones the shim passed.
pub fn take_inherited_fds(first: RawFd, count: usize) -> io::Result<Vec<OwnedFd>> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the inherited descriptors were already taken"));
    }
    let mut fds = Vec::with_capacity(count);
    for i in 0..count {
        let fd = RawFd::try_from(i).ok().and_then(|i| first.checked_add(i)).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("fd {fd} is not open ({e})")))?;
        // SAFETY: fd is open (F_GETFD succeeded) and nothing in this process owns it: TAKEN
        // makes this run once, over distinct numbers, and main calls it before opening
        // anything, so these numbers are the descriptors the shim passed, still unowned.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(fds)
}
