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
pub mod runtime;

use std::ffi::{c_char, CStr};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::runtime::error::Error;
use error::boxlite_error_t;

/// Major version of the library these declarations belong to.
pub const BOXLITE_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const BOXLITE_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const BOXLITE_VERSION_PATCH: u32 = 0;

/// The library's version as "MAJOR.MINOR.PATCH" (compare with the BOXLITE_VERSION_* macros
/// to detect a header/library mismatch). Never NULL; static; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn boxlite_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
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
