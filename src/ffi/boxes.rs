//! `boxlite_box_t` and its options.

use std::ffi::{c_char, CString};
use std::path::PathBuf;

use super::error::boxlite_error_t;
use super::runtime::boxlite_runtime_t;
use super::{block_on, free_handle, guard, guard_value, guard_void, handle, out_arg, str_arg};
use crate::runtime::boxes::{BoxOptions, BoxStatus, LiteBox};
use crate::runtime::error::Error;
use crate::runtime::home::BoxliteRuntime;
use crate::runtime::spec::DiskFormat;
use crate::runtime::vm::RootDisk;

/// Options for `boxlite_box_create` (an opaque builder). Defaults: 1 vCPU, 256 MiB, no
/// name, no root disk.
pub struct boxlite_box_options_t {
    options: BoxOptions,
}

/// A box. Keeps its runtime alive; may be freed while running (the runtime keeps the box;
/// once neither holds it, the VM is stopped).
pub struct boxlite_box_t {
    pub(crate) lite_box: LiteBox,
    runtime: BoxliteRuntime,
    id_c: CString,
}

/// Creates box options with the defaults. On success `*out` owns them (free with
/// `boxlite_box_options_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT if `out` is NULL.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_new(out: *mut *mut boxlite_box_options_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        let options = Box::new(boxlite_box_options_t { options: BoxOptions::default() });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(options) };
        Ok(())
    })
}

/// Runs `change` on options that must not be NULL.
///
/// # Safety
/// `options` is NULL or live and not used elsewhere during the call.
unsafe fn with_options(
    options: *mut boxlite_box_options_t,
    change: impl FnOnce(&mut BoxOptions) -> Result<(), Error>,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live, exclusive for this call (caller's contract).
        let options = unsafe { options.as_mut() }.ok_or_else(|| super::null_argument("options"))?;
        change(&mut options.options)
    })
}

/// Sets the box's name (copied; unique within the runtime, checked at create).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments or a non-UTF-8 name.
/// Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_name(options: *mut boxlite_box_options_t, name: *const c_char) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            o.name = Some(str_arg(name, "name")?.to_string());
            Ok(())
        })
    }
}

/// Sets the number of vCPUs (1 to the host's cores; checked at create).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options` or a value over 255.
/// Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_cpus(options: *mut boxlite_box_options_t, cpus: u32) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.vcpus = u8::try_from(cpus).map_err(|_| Error::InvalidOption {
                field: "vcpus",
                reason: format!("{cpus} vCPUs asked for; at most 255 are possible"),
            })?;
            Ok(())
        })
    }
}

/// Sets the memory in MiB (64 to the host's memory; checked at create).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options`. Not thread-safe for the
/// same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_memory_mib(options: *mut boxlite_box_options_t, memory_mib: u32) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.memory_mib = memory_mib;
            Ok(())
        })
    }
}

/// Sets the image the box runs (`name[:tag][@digest]`, copied). It is checked at create and
/// pulled (if not cached) and turned into the box's disk at first start. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments or non-UTF-8 text. Not thread-safe for
/// the same options object.
///
/// # Safety
/// `options` is NULL or live; `image` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_image(options: *mut boxlite_box_options_t, image: *const c_char) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            o.image = Some(str_arg(image, "image")?.to_string());
            Ok(())
        })
    }
}

/// Keeps the box's VM running after this process exits (`detached` true); the next runtime
/// on the same home attaches to it. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL
/// `options`. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_detached(options: *mut boxlite_box_options_t, detached: bool) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.detached = detached;
            Ok(())
        })
    }
}

/// Sets the size of an image box's disk in GiB (1 to 4096; at least the image's base size,
/// checked at first start; the guest grows its root file system to fill it). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options` (the range is checked at create).
/// Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_disk_size_gib(options: *mut boxlite_box_options_t, gib: u32) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.disk_size_gib = Some(gib);
            Ok(())
        })
    }
}

/// Sets the box's root disk: a raw ext4 image (path copied; must exist at create). With
/// `read_only`, several boxes may share one image. Errors: BOXLITE_ERROR_INVALID_ARGUMENT
/// for NULL arguments or a non-UTF-8 path. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_root_disk(
    options: *mut boxlite_box_options_t,
    path: *const c_char,
    read_only: bool,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            let path = PathBuf::from(str_arg(path, "path")?);
            o.root_disk = Some(RootDisk { path, format: DiskFormat::Raw, read_only });
            Ok(())
        })
    }
}

/// Frees box options. NULL does nothing.
///
/// # Safety
/// `options` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_free(options: *mut boxlite_box_options_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(options) })
}

/// Creates a box in `runtime`. Every option is checked here (vCPUs, memory, name, root
/// disk), each with its own message; nothing boots until `boxlite_box_start` or the first
/// exec. `options` may be NULL for the defaults; it is only read. On success `*out` owns the
/// box handle (free with `boxlite_box_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT,
/// BOXLITE_ERROR_IO. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `runtime` and `options` are NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_create(
    out: *mut *mut boxlite_box_t,
    runtime: *const boxlite_runtime_t,
    options: *const boxlite_box_options_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?.runtime.clone();
        // SAFETY: NULL or live (caller's contract).
        let options = unsafe { options.as_ref() }.map(|o| o.options.clone()).unwrap_or_default();
        let lite_box = runtime.create_box(options)?;
        let id_c = CString::new(lite_box.id()).expect("box ids are hex digits");
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_box_t { lite_box, runtime, id_c })) };
        Ok(())
    })
}

/// The box's id: NUL-terminated, owned by the handle (valid until `boxlite_box_free`).
/// NULL for a NULL box. Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_id(r#box: *const boxlite_box_t) -> *const c_char {
    // SAFETY: NULL or live (caller's contract).
    guard_value(std::ptr::null(), || unsafe { handle(r#box, "box") }.map_or(std::ptr::null(), |b| b.id_c.as_ptr()))
}

/// Boots the box's VM and waits until its agent answers (no-op if running). Blocks.
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_ENGINE_UNAVAILABLE,
/// BOXLITE_ERROR_HELPER_NOT_FOUND, BOXLITE_ERROR_BOOT_FAILED (the message quotes the guest
/// console), BOXLITE_ERROR_INVALID_STATE (removed box). Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_start(r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?;
        block_on(lite_box.lite_box.start())
    })
}

/// Stops the box: the guest syncs and powers off (killed after 10 s). Blocks. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_INVALID_STATE (removed box). Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_stop(r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?;
        block_on(lite_box.lite_box.stop())
    })
}

/// Removes the box and its files. A running box is refused
/// (BOXLITE_ERROR_INVALID_STATE) unless `force`, which stops it first. The handle stays
/// valid (only for `boxlite_box_id` and `boxlite_box_free`). Blocks. Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_remove(r#box: *const boxlite_box_t, force: bool) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?;
        block_on(lite_box.runtime.remove_box(lite_box.lite_box.id(), force))
    })
}

/// Frees a box handle (the box itself lives on in its runtime). NULL does nothing.
///
/// # Safety
/// `box` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_free(r#box: *mut boxlite_box_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(r#box) })
}

/// A box's state.
pub type boxlite_box_status_t = u32;
pub const BOXLITE_BOX_CONFIGURED: boxlite_box_status_t = 0;
pub const BOXLITE_BOX_RUNNING: boxlite_box_status_t = 1;
pub const BOXLITE_BOX_STOPPED: boxlite_box_status_t = 2;
pub const BOXLITE_BOX_REMOVED: boxlite_box_status_t = 3;

/// Figures of one box (`boxlite_box_metrics`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_box_metrics_t {
    /// Boots of this box by this runtime.
    pub boots: u64,
    /// Milliseconds from start to agent ready of the last boot (0 before the first).
    pub last_boot_ms: f64,
    pub executions_started: u64,
    /// Executions the box refused (no such program, directory, user...).
    pub executions_failed: u64,
    /// Output bytes received and stdin bytes sent.
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// The box's state (BOXLITE_BOX_*); BOXLITE_BOX_REMOVED for a NULL box. Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_status(r#box: *const boxlite_box_t) -> boxlite_box_status_t {
    // SAFETY: NULL or live (caller's contract).
    guard_value(BOXLITE_BOX_REMOVED, || match unsafe { handle(r#box, "box") } {
        Ok(b) => match b.lite_box.status() {
            BoxStatus::Configured => BOXLITE_BOX_CONFIGURED,
            BoxStatus::Running => BOXLITE_BOX_RUNNING,
            BoxStatus::Stopped => BOXLITE_BOX_STOPPED,
            BoxStatus::Removed => BOXLITE_BOX_REMOVED,
        },
        Err(_) => BOXLITE_BOX_REMOVED,
    })
}

/// Writes the box's figures to `*out`. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_metrics(out: *mut boxlite_box_metrics_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let metrics = unsafe { handle(r#box, "box") }?.lite_box.metrics();
        let c = boxlite_box_metrics_t {
            boots: metrics.boots,
            last_boot_ms: metrics.last_boot_ms.unwrap_or(0.0),
            executions_started: metrics.exec.started,
            executions_failed: metrics.exec.failed,
            bytes_out: metrics.exec.bytes_out,
            bytes_in: metrics.exec.bytes_in,
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out = c };
        Ok(())
    })
}

/// What the guest reports of itself (`boxlite_box_guest_stats`); the guest's word, untrusted.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_guest_stats_t {
    /// Busy CPU time of all vCPUs since boot, in milliseconds.
    pub cpu_busy_ms: u64,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub uptime_us: u64,
}

/// Asks the running box's agent for its CPU time, memory and uptime. Blocks (briefly).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_INVALID_STATE (not running),
/// BOXLITE_ERROR_AGENT, BOXLITE_ERROR_VM_EXITED. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_guest_stats(out: *mut boxlite_guest_stats_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?.lite_box.clone();
        let stats = block_on(lite_box.guest_stats())?;
        let c = boxlite_guest_stats_t {
            cpu_busy_ms: stats.cpu_busy_ms,
            memory_total_kib: stats.memory_total_kib,
            memory_available_kib: stats.memory_available_kib,
            uptime_us: stats.uptime_us,
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out = c };
        Ok(())
    })
}
