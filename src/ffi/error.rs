//! Errors as owned objects (the wasmtime model): a fallible call returns a
//! `boxlite_error_t *` that the caller frees with `boxlite_error_free`. No thread-local
//! "last error": cgo moves goroutines between OS threads.

use std::any::Any;
use std::ffi::{c_char, CString};

use crate::runtime::error::{CopyErrorKind, Error, PullErrorKind};
use crate::runtime::exec::ExecErrorKind;

/// Stable error codes (`boxlite_error_code()`); values never change meaning.
pub type boxlite_error_code_t = i32;

/// An argument is NULL, malformed or out of range.
pub const BOXLITE_ERROR_INVALID_ARGUMENT: boxlite_error_code_t = 1;
/// The named object (box, execution, file) does not exist.
pub const BOXLITE_ERROR_NOT_FOUND: boxlite_error_code_t = 2;
/// The object's state does not allow the call (e.g. removing a running box).
pub const BOXLITE_ERROR_INVALID_STATE: boxlite_error_code_t = 3;
/// The requested engine cannot run on this host (e.g. krun without hardware KVM).
pub const BOXLITE_ERROR_ENGINE_UNAVAILABLE: boxlite_error_code_t = 4;
/// A helper (shim, guest kernel, initramfs, qemu, vsock backend) was not found.
pub const BOXLITE_ERROR_HELPER_NOT_FOUND: boxlite_error_code_t = 5;
/// The VM did not boot (its agent never answered, or the shim could not start it).
pub const BOXLITE_ERROR_BOOT_FAILED: boxlite_error_code_t = 6;
/// The VM ended while in use (its shim exited or was killed).
pub const BOXLITE_ERROR_VM_EXITED: boxlite_error_code_t = 7;
/// A call to the guest agent failed, or the guest broke the protocol.
pub const BOXLITE_ERROR_AGENT: boxlite_error_code_t = 8;
/// The program to run does not exist in the box.
pub const BOXLITE_ERROR_PROGRAM_NOT_FOUND: boxlite_error_code_t = 9;
/// The program exists but cannot be executed.
pub const BOXLITE_ERROR_NOT_EXECUTABLE: boxlite_error_code_t = 10;
/// The working directory does not exist in the box.
pub const BOXLITE_ERROR_WORKING_DIR_NOT_FOUND: boxlite_error_code_t = 11;
/// The user does not exist in the box.
pub const BOXLITE_ERROR_USER_NOT_FOUND: boxlite_error_code_t = 12;
/// The process could not be started for another reason.
pub const BOXLITE_ERROR_EXEC_FAILED: boxlite_error_code_t = 13;
/// The home directory is held by another runtime.
pub const BOXLITE_ERROR_HOME_LOCKED: boxlite_error_code_t = 14;
/// A file system or process operation on the host failed.
pub const BOXLITE_ERROR_IO: boxlite_error_code_t = 15;
/// An image is malformed or unsafe (e.g. a layer entry that would leave the root).
pub const BOXLITE_ERROR_IMAGE: boxlite_error_code_t = 16;
/// A registry refused the credentials (or asked for some).
pub const BOXLITE_ERROR_UNAUTHORIZED: boxlite_error_code_t = 17;
/// Pulling an image failed (network, protocol, or an HTTP registry not marked insecure).
pub const BOXLITE_ERROR_PULL: boxlite_error_code_t = 18;
/// A callback asked to stop the operation.
pub const BOXLITE_ERROR_CANCELLED: boxlite_error_code_t = 19;
/// A bounded wait (`boxlite_execution_wait_timeout`) ended with the execution still
/// running: not a failure; wait again later.
pub const BOXLITE_ERROR_STILL_RUNNING: boxlite_error_code_t = 20;
/// A bug in boxlite (a caught panic); the message says where.
pub const BOXLITE_ERROR_INTERNAL: boxlite_error_code_t = 99;

/// An error: a stable code and a message naming the cause and, where there is one, the fix.
pub struct boxlite_error_t {
    code: boxlite_error_code_t,
    message: CString,
}

/// The one table from Rust errors to C codes.
fn code_of(error: &Error) -> boxlite_error_code_t {
    match error {
        Error::InvalidOption { .. } => BOXLITE_ERROR_INVALID_ARGUMENT,
        Error::NotFound { .. } => BOXLITE_ERROR_NOT_FOUND,
        Error::InvalidState { .. } => BOXLITE_ERROR_INVALID_STATE,
        Error::EngineUnavailable { .. } => BOXLITE_ERROR_ENGINE_UNAVAILABLE,
        Error::HelperNotFound { .. } => BOXLITE_ERROR_HELPER_NOT_FOUND,
        Error::ShimFailed { .. } | Error::AgentTimeout { .. } => BOXLITE_ERROR_BOOT_FAILED,
        Error::ShimExited { .. } => BOXLITE_ERROR_VM_EXITED,
        Error::Agent { .. } | Error::GuestProtocol { .. } => BOXLITE_ERROR_AGENT,
        Error::ExecRefused { kind, .. } => match kind {
            ExecErrorKind::ProgramNotFound => BOXLITE_ERROR_PROGRAM_NOT_FOUND,
            ExecErrorKind::NotExecutable => BOXLITE_ERROR_NOT_EXECUTABLE,
            ExecErrorKind::WorkingDirNotFound => BOXLITE_ERROR_WORKING_DIR_NOT_FOUND,
            ExecErrorKind::UserNotFound => BOXLITE_ERROR_USER_NOT_FOUND,
            ExecErrorKind::InvalidArgument => BOXLITE_ERROR_INVALID_ARGUMENT,
            ExecErrorKind::SpawnFailed => BOXLITE_ERROR_EXEC_FAILED,
        },
        Error::HomeLocked { .. } => BOXLITE_ERROR_HOME_LOCKED,
        Error::UnsafeLayer { .. } | Error::InvalidImage { .. } => BOXLITE_ERROR_IMAGE,
        Error::Pull { kind, .. } => match kind {
            PullErrorKind::Unauthorized => BOXLITE_ERROR_UNAUTHORIZED,
            PullErrorKind::NotFound => BOXLITE_ERROR_NOT_FOUND,
            PullErrorKind::InsecureRegistry | PullErrorKind::Other => BOXLITE_ERROR_PULL,
            PullErrorKind::Cancelled => BOXLITE_ERROR_CANCELLED,
        },
        Error::Io { .. } => BOXLITE_ERROR_IO,
        Error::StillRunning { .. } => BOXLITE_ERROR_STILL_RUNNING,
        Error::Copy { kind, .. } => match kind {
            CopyErrorKind::NotFound => BOXLITE_ERROR_NOT_FOUND,
            CopyErrorKind::Invalid => BOXLITE_ERROR_INVALID_ARGUMENT,
            CopyErrorKind::Io => BOXLITE_ERROR_IO,
            CopyErrorKind::Unsafe => BOXLITE_ERROR_AGENT,
        },
    }
}

pub(crate) fn new_error(code: boxlite_error_code_t, message: String) -> *mut boxlite_error_t {
    let message = super::c_string(&message);
    Box::into_raw(Box::new(boxlite_error_t { code, message }))
}

pub(crate) fn into_raw(error: &Error) -> *mut boxlite_error_t {
    let (code, message) = error_parts(error);
    new_error(code, message)
}

/// The code and message an error will have in C (for errors kept and reported later).
pub(crate) fn error_parts(error: &Error) -> (boxlite_error_code_t, String) {
    (code_of(error), error.to_string())
}

pub(crate) fn internal(panic: Box<dyn Any + Send>) -> *mut boxlite_error_t {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    new_error(BOXLITE_ERROR_INTERNAL, format!("internal error in boxlite (please report it): {what}"))
}

/// The error's code, one of BOXLITE_ERROR_*. Returns BOXLITE_ERROR_INVALID_ARGUMENT for a
/// NULL error. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live error returned by this library.
#[no_mangle]
pub unsafe extern "C" fn boxlite_error_code(error: *const boxlite_error_t) -> boxlite_error_code_t {
    // SAFETY: NULL or live (caller's contract).
    super::guard_value(BOXLITE_ERROR_INTERNAL, || unsafe { error.as_ref() }.map_or(BOXLITE_ERROR_INVALID_ARGUMENT, |e| e.code))
}

/// The error's message: NUL-terminated UTF-8, owned by the error (valid until
/// `boxlite_error_free`). Returns a static text for a NULL error. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live error returned by this library.
#[no_mangle]
pub unsafe extern "C" fn boxlite_error_message(error: *const boxlite_error_t) -> *const c_char {
    super::guard_value(c"boxlite_error_message: internal error".as_ptr(), || {
        // SAFETY: NULL or live (caller's contract).
        match unsafe { error.as_ref() } {
            Some(e) => e.message.as_ptr(),
            None => c"boxlite_error_message: the error is NULL".as_ptr(),
        }
    })
}

/// Frees an error. NULL does nothing.
///
/// # Safety
/// `error` is NULL or a live error returned by this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_error_free(error: *mut boxlite_error_t) {
    super::guard_void(|| {
        if !error.is_null() {
            // SAFETY: from Box::into_raw in new_error, given up by the caller.
            drop(unsafe { Box::from_raw(error) });
        }
    })
}
