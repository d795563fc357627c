//! `boxlite_runtime_t` and its options.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::error::boxlite_error_t;
use super::{free_handle, guard, guard_value, guard_void, handle, out_arg, str_arg};
use crate::runtime::engine::EngineChoice;
use crate::runtime::error::Error;
use crate::runtime::home::{BoxliteRuntime, RuntimeOptions};
use crate::runtime::images::pull::{Credentials, ProgressFn, PullProgress};

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
            other => {
                return Err(Error::InvalidOption {
                    field: "engine",
                    reason: format!("{other} is not a BOXLITE_ENGINE_* value"),
                })
            }
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
        let home_c = CString::new(runtime.home().as_os_str().as_bytes()).map_err(|_| Error::InvalidOption {
            field: "home",
            reason: "contains a NUL byte".into(),
        })?;
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

/// Receives pull progress: the blob's digest (valid during the call), bytes so far and its
/// size. Return 0 to go on; non-zero cancels the pull (BOXLITE_ERROR_CANCELLED).
pub type boxlite_pull_progress_cb =
    Option<unsafe extern "C" fn(digest: *const c_char, done: u64, total: u64, user_data: *mut c_void) -> i32>;

/// Pulls an image (`name[:tag][@digest]`) into the runtime's cache, fetching only blobs it
/// does not have. `progress` may be NULL; it runs on the calling thread. Blocks. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT (NULLs, a malformed reference), BOXLITE_ERROR_NOT_FOUND,
/// BOXLITE_ERROR_UNAUTHORIZED, BOXLITE_ERROR_PULL (network, or an HTTP registry not marked
/// insecure: the message says so), BOXLITE_ERROR_IMAGE (verification failed),
/// BOXLITE_ERROR_CANCELLED. Thread-safe.
///
/// # Safety
/// `runtime` is NULL or live; `reference` is NULL or NUL-terminated; `progress` obeys its
/// contract.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_pull_image(
    runtime: *const boxlite_runtime_t,
    reference: *const c_char,
    progress: boxlite_pull_progress_cb,
    user_data: *mut c_void,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?.runtime.clone();
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let reference = unsafe { str_arg(reference, "reference") }?.to_string();
        let user_data = UserData(user_data);
        let progress: Option<ProgressFn> = progress.map(|callback| {
            let report = move |p: &PullProgress| {
                let digest = CString::new(p.digest.as_str()).expect("digests are ASCII");
                // SAFETY: the caller's callback, with a string valid for the call.
                unsafe { callback(digest.as_ptr(), p.done, p.total, user_data.get()) == 0 }
            };
            Arc::new(report) as ProgressFn
        });
        super::block_on(runtime.images().pull(&reference, progress)).map(|_| ())
    })
}

/// Imports an image from an OCI image layout directory and caches it as `name`. `tag`
/// picks the layout's image (`org.opencontainers.image.ref.name`); NULL takes its only
/// image. Blocks. Errors: BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_NOT_FOUND (no such
/// tag), BOXLITE_ERROR_IMAGE (not a layout, or a blob failed verification). Thread-safe.
///
/// # Safety
/// `runtime` is NULL or live; the strings are NULL or NUL-terminated (`tag` may be NULL).
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_import_image(
    runtime: *const boxlite_runtime_t,
    layout_dir: *const c_char,
    tag: *const c_char,
    name: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let (dir, name) = unsafe { (str_arg(layout_dir, "layout_dir")?, str_arg(name, "name")?) };
        // SAFETY: as above; NULL means "the only image".
        let tag = if tag.is_null() { None } else { Some(unsafe { str_arg(tag, "tag") }?) };
        runtime.runtime.images().import_layout(std::path::Path::new(dir), tag, name).map(|_| ())
    })
}

/// Removes an image from the cache; refused (BOXLITE_ERROR_INVALID_STATE) while a box uses
/// it unless `force`. Errors also: BOXLITE_ERROR_NOT_FOUND. Thread-safe.
///
/// # Safety
/// `runtime` is NULL or live; `reference` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_remove_image(
    runtime: *const boxlite_runtime_t,
    reference: *const c_char,
    force: bool,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        runtime.runtime.remove_image(unsafe { str_arg(reference, "reference") }?, force)
    })
}

/// The caller's user_data, passed back to its callbacks.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

impl UserData {
    fn get(self) -> *mut c_void {
        self.0
    }
}

// SAFETY: the C contract lets callbacks receive user_data on library threads.
unsafe impl Send for UserData {}
// SAFETY: as above; the library only passes the pointer back, never dereferences it.
unsafe impl Sync for UserData {}

/// Runtime-wide figures (`boxlite_runtime_metrics`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_runtime_metrics_t {
    pub boxes_created: u64,
    pub boxes_running: u64,
    pub boots: u64,
    pub boot_failures: u64,
    pub executions: u64,
}

/// Writes the runtime's figures to `*out`. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `runtime` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_metrics(out: *mut boxlite_runtime_metrics_t, runtime: *const boxlite_runtime_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let m = unsafe { handle(runtime, "runtime") }?.runtime.metrics();
        let c = boxlite_runtime_metrics_t {
            boxes_created: m.boxes_created,
            boxes_running: m.boxes_running,
            boots: m.boots,
            boot_failures: m.boot_failures,
            executions: m.executions,
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out = c };
        Ok(())
    })
}
