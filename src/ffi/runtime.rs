//! `boxlite_runtime_t` and its options.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::error::boxlite_error_t;
use super::{free_handle, guard, guard_value, guard_void, handle, out_arg, str_arg, write_sized, SizedStruct};
use crate::runtime::engine::EngineChoice;
use crate::runtime::error::Error;
use crate::runtime::home::{BoxliteRuntime, RuntimeOptions};
use crate::runtime::images::pull::Credentials;

/// Engine choice for `boxlite_runtime_options_set_engine`.
pub type boxlite_engine_t = u32;
/// krun on hosts with hardware KVM, qemu elsewhere; `BOXLITE_ENGINE` may override it.
pub const BOXLITE_ENGINE_AUTO: boxlite_engine_t = 0;
/// libkrun; needs hardware KVM.
pub const BOXLITE_ENGINE_KRUN: boxlite_engine_t = 1;
/// QEMU: KVM where usable, TCG emulation elsewhere.
pub const BOXLITE_ENGINE_QEMU: boxlite_engine_t = 2;

/// Options for `boxlite_runtime_new` (an opaque builder).
pub struct boxlite_runtime_options_t {
    options: RuntimeOptions,
}

/// A runtime: the boxes of one home directory. Boxes keep it alive, so it may be freed
/// before them.
pub struct boxlite_runtime_t {
    pub(crate) runtime: BoxliteRuntime,
    home_c: CString,
}

/// Creates runtime options with the defaults (home: $BOXLITE_HOME or ~/.boxlite; engine:
/// auto). On success `*out` owns the options (free with `boxlite_runtime_options_free`).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT if `out` is NULL. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_new(out: *mut *mut boxlite_runtime_options_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        let options = Box::new(boxlite_runtime_options_t { options: RuntimeOptions::default() });
        // SAFETY: checked non-NULL above; valid for writes by the caller's contract.
        unsafe { *out = Box::into_raw(options) };
        Ok(())
    })
}

/// Sets the home directory (copied). Errors: BOXLITE_ERROR_INVALID_ARGUMENT if an argument
/// is NULL or `home` is not UTF-8. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `home` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_set_home(
    options: *mut boxlite_runtime_options_t,
    home: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract); exclusive for this call.
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        options.options.home = Some(PathBuf::from(unsafe { str_arg(home, "home") }?));
        Ok(())
    })
}

/// Sets the engine: one of BOXLITE_ENGINE_*. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a
/// NULL `options` or an unknown engine value. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_set_engine(
    options: *mut boxlite_runtime_options_t,
    engine: boxlite_engine_t,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract); exclusive for this call.
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        options.options.engine = match engine {
            BOXLITE_ENGINE_AUTO => EngineChoice::Auto,
            BOXLITE_ENGINE_KRUN => EngineChoice::Krun,
            BOXLITE_ENGINE_QEMU => EngineChoice::Qemu,
            other => return Err(Error::InvalidOption { field: "engine", reason: format!("{other} is not a BOXLITE_ENGINE_* value") }),
        };
        Ok(())
    })
}

/// Lets the runtime speak plain HTTP to `registry` (`host[:port]`, copied). Only for
/// registries on networks you trust. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL
/// arguments or non-UTF-8 text. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `registry` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_add_insecure_registry(
    options: *mut boxlite_runtime_options_t,
    registry: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract); exclusive for this call.
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let registry = unsafe { str_arg(registry, "registry") }?;
        options.options.registries.insecure.push(registry.to_string());
        Ok(())
    })
}

/// Sets basic-auth credentials (copied) for pulls from `registry` (`host[:port]`).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments or non-UTF-8 text. Not
/// thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; the strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_set_registry_credentials(
    options: *mut boxlite_runtime_options_t,
    registry: *const c_char,
    username: *const c_char,
    password: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract); exclusive for this call.
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let (registry, username, password) =
            unsafe { (str_arg(registry, "registry")?, str_arg(username, "username")?, str_arg(password, "password")?) };
        let credentials = Credentials::Basic { username: username.into(), password: password.into() };
        options.options.registries.credentials.insert(registry.into(), credentials);
        Ok(())
    })
}

/// Writes the process's boxlite logs (info and more severe) to `<home>/logs/boxlite.log`,
/// rotated daily, when `enabled` (off by default: see also `boxlite_log_set_callback`).
/// `boxlite_runtime_new` then fails with BOXLITE_ERROR_INVALID_STATE if the application
/// installed a Rust `tracing` subscriber of its own. Errors: BOXLITE_ERROR_INVALID_ARGUMENT
/// for a NULL `options`. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_set_log_to_home(
    options: *mut boxlite_runtime_options_t,
    enabled: bool,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract); exclusive for this call.
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        options.options.log_to_home = enabled;
        Ok(())
    })
}

/// Frees runtime options. NULL does nothing.
///
/// # Safety
/// `options` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_options_free(options: *mut boxlite_runtime_options_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(options) })
}

/// Opens a runtime on its home directory (created if missing) and locks it. `options` may
/// be NULL for the defaults; it is only read. On success `*out` owns the runtime (free with
/// `boxlite_runtime_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULL `out`),
/// BOXLITE_ERROR_HOME_LOCKED (another runtime holds the home; the message names its pid),
/// BOXLITE_ERROR_IO. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_new(
    out: *mut *mut boxlite_runtime_t,
    options: *const boxlite_runtime_options_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let options = unsafe { options.as_ref() }.map(|o| o.options.clone()).unwrap_or_default();
        let runtime = BoxliteRuntime::new(options)?;
        let home_c = CString::new(runtime.home().as_os_str().as_bytes())
            .map_err(|_| Error::InvalidOption { field: "home", reason: "contains a NUL byte".into() })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_runtime_t { runtime, home_c })) };
        Ok(())
    })
}

/// Frees a runtime handle. Boxes and executions still alive keep what they need (the home
/// lock included) until they are freed too; boxes nobody holds any more are stopped.
/// NULL does nothing.
///
/// # Safety
/// `runtime` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_free(runtime: *mut boxlite_runtime_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(runtime) })
}

/// The runtime's home directory: NUL-terminated, owned by the runtime (valid until it is
/// freed). NULL for a NULL runtime. Thread-safe.
///
/// # Safety
/// `runtime` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_home(runtime: *const boxlite_runtime_t) -> *const c_char {
    // SAFETY: NULL or live (caller's contract).
    guard_value(std::ptr::null(), || unsafe { handle(runtime, "runtime") }.map_or(std::ptr::null(), |r| r.home_c.as_ptr()))
}

/// Runtime-wide figures (`boxlite_runtime_metrics`). A sized struct: set `size` first
/// (BOXLITE_RUNTIME_METRICS_INIT).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_runtime_metrics_t {
    /// Set by the caller to the size of the struct it was compiled with.
    pub size: u32,
    pub boxes_created: u64,
    pub boxes_running: u64,
    pub boots: u64,
    pub boot_failures: u64,
    pub executions: u64,
}

// SAFETY: repr(C), plain data, a u32 size first.
unsafe impl SizedStruct for boxlite_runtime_metrics_t {}

/// Writes the runtime's figures to `*out`, a sized struct (its `size` set by the caller).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs or a `size` under 4. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `runtime` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_metrics(
    out: *mut boxlite_runtime_metrics_t,
    runtime: *const boxlite_runtime_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let m = unsafe { handle(runtime, "runtime") }?.runtime.metrics();
        let c = boxlite_runtime_metrics_t {
            size: std::mem::size_of::<boxlite_runtime_metrics_t>() as u32,
            boxes_created: m.boxes_created,
            boxes_running: m.boxes_running,
            boots: m.boots,
            boot_failures: m.boot_failures,
            executions: m.executions,
        };
        // SAFETY: valid for `out->size` bytes (caller's contract).
        unsafe { write_sized(out, c, "out") }
    })
}
