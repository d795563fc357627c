//! Copies into and out of a box: `boxlite_box_copy_in`, `boxlite_box_copy_out`. The ffi
//! layer checks and converts; the work is `LiteBox::copy_in` / `copy_out` (runtime::files).

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::boxes::boxlite_box_t;
use super::error::boxlite_error_t;
use super::{block_on, check_flags, guard, handle, null_argument, str_arg};
use crate::runtime::error::Error;

/// A host path argument: any bytes but NUL (host paths need not be UTF-8).
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn path_arg<'a>(ptr: *const c_char, name: &'static str) -> Result<&'a Path, Error> {
    if ptr.is_null() {
        return Err(null_argument(name));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::InvalidOption { field: name, reason: "is empty".into() });
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Copies `host_src` (a file, a symlink or a directory tree on the host) into the box at
/// `guest_dest` (an absolute path in the box). Modes (setuid included), owners, mtimes,
/// symlinks (stored as symlinks, never followed) and empty directories are kept. As
/// `docker cp`: if `guest_dest` is an existing directory the copy goes inside it under the
/// source's name, else it becomes `guest_dest` (whose parent must exist). A stopped box is
/// started first and left running. Streams with bounded memory; blocks until the copy is
/// done. `flags` must be 0 (no flags are defined yet).
///
/// Ownership: every argument is borrowed for the call. NULL for any of `box`, `host_src`,
/// `guest_dest` is an error.
///
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULL or empty arguments, `guest_dest` not UTF-8,
/// unknown flag bits, a directory onto a file), BOXLITE_ERROR_NOT_FOUND (`host_src`, or
/// `guest_dest`'s parent, does not exist), BOXLITE_ERROR_IO (a file system call failed, on
/// the host or in the box: the message names the path), BOXLITE_ERROR_BOOT_FAILED,
/// BOXLITE_ERROR_VM_EXITED, BOXLITE_ERROR_AGENT.
///
/// Threads: thread-safe; copies into the same box may run at once (the box allows 16 open
/// copies).
///
/// # Safety
/// `box` is NULL or live; `host_src` and `guest_dest` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_copy_in(
    r#box: *const boxlite_box_t,
    host_src: *const c_char,
    guest_dest: *const c_char,
    flags: u32,
) -> *mut boxlite_error_t {
    guard(|| {
        check_flags(flags, 0, "flags")?;
        // SAFETY: NULL or live / NUL-terminated (caller's contract).
        let (lite_box, host_src, guest_dest) =
            unsafe { (handle(r#box, "box")?, path_arg(host_src, "host_src")?, str_arg(guest_dest, "guest_dest")?) };
        block_on(lite_box.lite_box.copy_in(host_src, guest_dest)).map(|_| ())
    })
}

/// Copies `guest_src` (a file, a symlink or a directory tree in the box; a symlink as the
/// last component is copied as the symlink) out of the box to `host_dest`. What the box
/// sends is extracted with the path-safe extractor of image layers: nothing is written
/// outside the destination, whatever symlinks or paths the box holds. Modes (setuid
/// included), mtimes and symlinks are kept; owners only when the calling process is root;
/// extended attributes are not copied. As `docker cp`: if `host_dest` is an existing
/// directory the copy goes inside it under the source's name, else it becomes `host_dest`
/// (whose parent must exist). A stopped box is started first and left running. Streams
/// with bounded memory; blocks until the copy is done. `flags` must be 0.
///
/// Ownership: every argument is borrowed for the call. NULL for any of `box`, `guest_src`,
/// `host_dest` is an error.
///
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULL or empty arguments, `guest_src` not UTF-8,
/// unknown flag bits, a directory onto a file or the reverse), BOXLITE_ERROR_NOT_FOUND
/// (`guest_src`, or `host_dest`'s parent, does not exist), BOXLITE_ERROR_IO,
/// BOXLITE_ERROR_AGENT (the box broke the protocol or sent an entry that would leave the
/// destination: the copy is refused), BOXLITE_ERROR_BOOT_FAILED, BOXLITE_ERROR_VM_EXITED.
///
/// Threads: thread-safe.
///
/// # Safety
/// `box` is NULL or live; `guest_src` and `host_dest` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_copy_out(
    r#box: *const boxlite_box_t,
    guest_src: *const c_char,
    host_dest: *const c_char,
    flags: u32,
) -> *mut boxlite_error_t {
    guard(|| {
        check_flags(flags, 0, "flags")?;
        // SAFETY: NULL or live / NUL-terminated (caller's contract).
        let (lite_box, guest_src, host_dest) =
            unsafe { (handle(r#box, "box")?, str_arg(guest_src, "guest_src")?, path_arg(host_dest, "host_dest")?) };
        block_on(lite_box.lite_box.copy_out(guest_src, host_dest)).map(|_| ())
    })
}
