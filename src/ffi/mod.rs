//! The C ABI (include/boxlite.h, generated from this module by cbindgen). The only place
//! with `extern "C"`: it converts arguments, delegates to `runtime`, and converts results.
//!
//! Conventions (docs/c-api.md): opaque handles (runtime -> box -> execution; a child keeps
//! its parent alive); fallible calls return `boxlite_error_t *`, NULL on success, with
//! results in out-parameters placed first and left untouched on failure; `*_free(NULL)` does
//! nothing; every entry catches panics; the library never exits or aborts the process.
//! Blocking calls run on the library's own Tokio runtime, which is never dropped.

#![allow(non_camel_case_types)]

pub mod boxes;
pub mod error;
pub mod exec;
pub mod files;
pub mod images;
pub mod logging;
pub mod network;
pub mod runtime;

use std::ffi::{c_char, CStr, CString};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::runtime::error::Error;
use error::boxlite_error_t;

/// Major version of the library these declarations belong to.
pub const BOXLITE_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const BOXLITE_VERSION_MINOR: u32 = 2;
/// Patch version.
pub const BOXLITE_VERSION_PATCH: u32 = 0;
/// The version as one number, MAJOR * 1000000 + MINOR * 1000 + PATCH (compare with
/// `boxlite_version_number()`).
pub const BOXLITE_VERSION_NUMBER: u32 = BOXLITE_VERSION_MAJOR * 1_000_000 + BOXLITE_VERSION_MINOR * 1000 + BOXLITE_VERSION_PATCH;

/// The library's version as "MAJOR.MINOR.PATCH" (compare with the BOXLITE_VERSION_* macros
/// to detect a header/library mismatch). Never NULL; static; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn boxlite_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's version as one number, MAJOR * 1000000 + MINOR * 1000 + PATCH (sqlite's
/// `sqlite3_libversion_number`); compare with BOXLITE_VERSION_NUMBER. Thread-safe.
#[no_mangle]
pub extern "C" fn boxlite_version_number() -> u32 {
    BOXLITE_VERSION_NUMBER
}

/// The runtime every blocking C call runs on: multi-threaded, created on first use, never
/// dropped (dropping a Tokio runtime from one of its own threads would panic).
fn tokio() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("boxlite")
            .enable_all()
            .build()
            .expect("creating the boxlite Tokio runtime")
    })
}

/// Runs a future to completion on the library's runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio().block_on(future)
}

/// The body of every fallible entry point: runs `body`, turning an error or a panic into an
/// owned `boxlite_error_t` (NULL on success).
fn guard(body: impl FnOnce() -> Result<(), Error>) -> *mut boxlite_error_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(e)) => error::into_raw(&e),
        Err(panic) => error::internal(panic),
    }
}

/// Runs `body` for an entry point that cannot report errors (a `*_free`): panics are
/// swallowed, never propagated into C.
fn guard_void(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

/// Runs `body` for an accessor: a panic yields `fallback` instead of crossing into C.
fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn null_argument(name: &'static str) -> Error {
    Error::InvalidOption { field: name, reason: "is NULL".into() }
}

/// A borrowed, non-NULL, UTF-8 C string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
unsafe fn str_arg<'a>(ptr: *const c_char, name: &'static str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(null_argument(name));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|_| Error::InvalidOption { field: name, reason: "is not valid UTF-8".into() })
}

/// A shared reference to a handle argument, or an error naming it if it is NULL.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` created by this library.
unsafe fn handle<'a, T>(ptr: *const T, name: &'static str) -> Result<&'a T, Error> {
    // SAFETY: NULL or a live handle by the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_argument(name))
}

/// Checks an out-parameter is non-NULL before any work is done.
fn out_arg<T>(ptr: *mut T, name: &'static str) -> Result<(), Error> {
    if ptr.is_null() {
        Err(null_argument(name))
    } else {
        Ok(())
    }
}

/// An index past the end of a list.
fn out_of_range(index: usize, len: usize) -> Error {
    Error::InvalidOption { field: "index", reason: format!("{index} is past the end (the list holds {len})") }
}

/// Checks a flags word against the bits a call knows: unknown bits are rejected, never ignored.
fn check_flags(flags: u32, known: u32, name: &'static str) -> Result<(), Error> {
    match flags & !known {
        0 => Ok(()),
        unknown => Err(Error::InvalidOption { field: name, reason: format!("unknown flag bits {unknown:#x} (known: {known:#x})") }),
    }
}

/// A struct the library writes into caller memory: its first field is a `uint32_t size`
/// the caller sets to `sizeof` the struct it was compiled with, so that fields added later
/// never overrun an older caller's buffer.
///
/// # Safety
/// Implementors are `#[repr(C)]` with a `u32` size as their first field, and plain data.
unsafe trait SizedStruct: Copy {}

/// Writes `value` into a caller's sized struct: as many bytes as the caller's `size` says
/// (at most ours), leaving `size` itself as the caller set it. A size too small to hold
/// even the size field is an error naming the fix.
///
/// # Safety
/// `out` is NULL or valid for writing the number of bytes its first `u32` says.
unsafe fn write_sized<T: SizedStruct>(out: *mut T, value: T, name: &'static str) -> Result<(), Error> {
    // SAFETY: forwarded caller contract.
    let len = unsafe { sized_len(out, name) }?;
    let source = (&value as *const T).cast::<u8>();
    // SAFETY: `len` bytes fit both the caller's buffer (its size) and `value`; the regions
    // are distinct (one is our stack copy); the size field itself is skipped.
    unsafe { std::ptr::copy_nonoverlapping(source.add(SIZE_FIELD), out.cast::<u8>().add(SIZE_FIELD), len - SIZE_FIELD) };
    Ok(())
}

const SIZE_FIELD: usize = std::mem::size_of::<u32>();

/// How many bytes of a caller's sized struct the library may write: its `size`, at most
/// ours. Checked before any work, so a caller that forgot to set it learns it at once.
///
/// # Safety
/// `out` is NULL or valid for reading its first `u32`.
unsafe fn sized_len<T: SizedStruct>(out: *mut T, name: &'static str) -> Result<usize, Error> {
    out_arg(out, name)?;
    // SAFETY: non-NULL; every sized struct starts with its u32 size (caller's contract).
    let caller_size = unsafe { out.cast::<u32>().read_unaligned() } as usize;
    if caller_size < SIZE_FIELD {
        return Err(Error::InvalidOption {
            field: name,
            reason: format!("its size field is {caller_size}; set it to sizeof the struct (its _INIT macro does) before the call"),
        });
    }
    Ok(caller_size.min(std::mem::size_of::<T>()))
}

/// Text as a C string: an interior NUL cannot cross into C, so it is shown as `\0`
/// instead of cutting the text short.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).expect("NULs were replaced")
}

/// A string the library hands over to the caller (free with `boxlite_string_free`).
fn owned_string(text: &str) -> *mut c_char {
    c_string(text).into_raw()
}

/// Frees a string the library returned as owned by the caller (e.g. from
/// `boxlite_box_stop_reason`). NULL does nothing.
///
/// # Safety
/// `text` is NULL or a string from this library documented as freed with this function,
/// not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_string_free(text: *mut c_char) {
    guard_void(|| {
        if !text.is_null() {
            // SAFETY: from CString::into_raw in owned_string, given up by the caller.
            drop(unsafe { CString::from_raw(text) });
        }
    })
}

/// Frees a handle created with `Box::into_raw`.
///
/// # Safety
/// `ptr` is NULL or a pointer from `Box::into_raw` that is not used afterwards.
unsafe fn free_handle<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // Drop inside the runtime's context: dropping boxes and executions may spawn
        // clean-up tasks (releasing an execution in the guest, stopping a VM).
        let _context = tokio().enter();
        // SAFETY: from Box::into_raw, not used again (caller's contract).
        drop(unsafe { Box::from_raw(ptr) });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_package_version() {
        // SAFETY: boxlite_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(super::boxlite_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        let macros = format!("{}.{}.{}", super::BOXLITE_VERSION_MAJOR, super::BOXLITE_VERSION_MINOR, super::BOXLITE_VERSION_PATCH);
        assert_eq!(macros, env!("CARGO_PKG_VERSION"));
    }
}
