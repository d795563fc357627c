//! `boxlite_box_t` and its options.

use std::ffi::{c_char, CString};
use std::path::PathBuf;

use super::error::boxlite_error_t;
use super::runtime::boxlite_runtime_t;
use super::{
    block_on, c_string, check_flags, free_handle, guard, guard_value, guard_void, handle, out_arg, out_of_range, owned_string, sized_len,
    str_arg, write_sized, SizedStruct,
};
use crate::runtime::boxes::{BoxOptions, BoxStatus, LiteBox};
use crate::runtime::error::Error;
use crate::runtime::home::BoxliteRuntime;
use crate::runtime::spec::DiskFormat;
use crate::runtime::vm::RootDisk;
use crate::runtime::volumes::Volume;

/// Options for `boxlite_box_create` (an opaque builder). Defaults: 1 vCPU, 256 MiB, no
/// name, no root disk, network BOXLITE_NETWORK_OUTBOUND without port forwards, no volumes.
pub struct boxlite_box_options_t {
    pub(super) options: BoxOptions,
}

/// A box. Keeps its runtime alive; may be freed while running (the runtime keeps the box;
/// once neither holds it, the VM is stopped).
pub struct boxlite_box_t {
    pub(crate) lite_box: LiteBox,
    runtime: BoxliteRuntime,
    id_c: CString,
    name_c: Option<CString>,
    image_c: Option<CString>,
}

impl boxlite_box_t {
    fn new(lite_box: LiteBox, runtime: BoxliteRuntime) -> boxlite_box_t {
        // Ids are hex digits; names are checked to be [A-Za-z0-9._-]; image references
        // are normalised by oci-client: none holds a NUL.
        let text = |s: &str| CString::new(s).expect("ids, names and references hold no NUL");
        boxlite_box_t {
            id_c: text(lite_box.id()),
            name_c: lite_box.name().map(text),
            image_c: lite_box.image().map(text),
            lite_box,
            runtime,
        }
    }

    fn into_raw(self) -> *mut boxlite_box_t {
        Box::into_raw(Box::new(self))
    }
}

/// Flags of `boxlite_box_remove` and `boxlite_runtime_remove_image`: stop a running box
/// first / remove an image even though boxes use it.
pub const BOXLITE_REMOVE_FORCE: u32 = 1;

/// Flags of `boxlite_box_options_set_root_disk`: the disk is opened read-only (several
/// boxes may share it).
pub const BOXLITE_DISK_READ_ONLY: u32 = 1;

/// Flags of `boxlite_box_options_add_volume`: the box may read the volume but not write it
/// (enforced on the host: the server refuses writes, whatever the guest mounts).
pub const BOXLITE_VOLUME_READ_ONLY: u32 = 1;

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
pub(super) unsafe fn with_options(
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

/// Sets the box's root disk: a raw ext4 image (path copied; must exist at create). `flags`:
/// 0 or BOXLITE_DISK_READ_ONLY (several boxes may then share one image). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments, a non-UTF-8 path or unknown flag
/// bits. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_root_disk(
    options: *mut boxlite_box_options_t,
    path: *const c_char,
    flags: u32,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            check_flags(flags, BOXLITE_DISK_READ_ONLY, "flags")?;
            let path = PathBuf::from(str_arg(path, "path")?);
            let read_only = flags & BOXLITE_DISK_READ_ONLY != 0;
            o.root_disk = Some(RootDisk { path, format: DiskFormat::Raw, read_only });
            Ok(())
        })
    }
}

/// Adds a volume: the host directory `host_path` (absolute; copied) shared into the box at
/// `guest_path` (absolute, not `/`; created in the box if missing) with virtio-fs
/// (docs/volumes.md). `flags`: 0 (read-write) or BOXLITE_VOLUME_READ_ONLY. May be called up
/// to 16 times. The paths are checked at create (`boxlite_box_create`): the host path must
/// be an existing directory that neither lies inside nor contains the runtime's home, and
/// guest paths must not be equal or nested. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL
/// arguments, non-UTF-8 paths or unknown flag bits. Not thread-safe for the same options
/// object.
///
/// # Safety
/// `options` is NULL or live; `host_path` and `guest_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_add_volume(
    options: *mut boxlite_box_options_t,
    host_path: *const c_char,
    guest_path: *const c_char,
    flags: u32,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            check_flags(flags, BOXLITE_VOLUME_READ_ONLY, "flags")?;
            let host_path = PathBuf::from(str_arg(host_path, "host_path")?);
            let guest_path = str_arg(guest_path, "guest_path")?.to_string();
            o.volumes.push(Volume { host_path, guest_path, read_only: flags & BOXLITE_VOLUME_READ_ONLY != 0 });
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
/// disk, how the network options fit together: allow rules need BOXLITE_NETWORK_ALLOW_LIST,
/// a host address and port forwarded twice...), each with its own message; nothing boots
/// until `boxlite_box_start` or the first exec. `options` may be NULL for the defaults; it
/// is only read. On success `*out` owns the box handle (free with `boxlite_box_free`).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_IO. Thread-safe.
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
        // SAFETY: checked non-NULL above.
        unsafe { *out = boxlite_box_t::new(lite_box, runtime).into_raw() };
        Ok(())
    })
}

/// Finds a box of `runtime` by id or by name: boxes created by earlier runtimes on the same
/// home (and detached boxes still running) are found too. On success `*out` owns a new
/// handle to it (free with `boxlite_box_free`; handles to one box share its state).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULLs, non-UTF-8 text), BOXLITE_ERROR_NOT_FOUND.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `runtime` is NULL or live;
/// `id_or_name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_get_box(
    out: *mut *mut boxlite_box_t,
    runtime: *const boxlite_runtime_t,
    id_or_name: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?.runtime.clone();
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let id_or_name = unsafe { str_arg(id_or_name, "id_or_name") }?;
        let lite_box = runtime
            .get_box(id_or_name)
            .ok_or_else(|| Error::NotFound { what: format!("box {id_or_name:?} (neither an id nor a name of this runtime's boxes)") })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = boxlite_box_t::new(lite_box, runtime).into_raw() };
        Ok(())
    })
}

/// A snapshot of a runtime's boxes (`boxlite_runtime_list_boxes`), oldest first, and of
/// the box directories that could not be loaded.
pub struct boxlite_box_list_t {
    boxes: Vec<LiteBox>,
    runtime: BoxliteRuntime,
    invalid: Vec<InvalidEntry>,
}

/// A box directory whose record could not be read, as C strings owned by the list.
struct InvalidEntry {
    id: CString,
    reason: CString,
    dir: CString,
}

/// Lists the runtime's boxes: every box of its home, whatever its state, ordered by
/// creation time. On success `*out` owns the list (free with `boxlite_box_list_free`); it
/// is a snapshot: boxes created or removed later do not change it. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `runtime` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_list_boxes(
    out: *mut *mut boxlite_box_list_t,
    runtime: *const boxlite_runtime_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?.runtime.clone();
        let mut boxes = runtime.list_boxes();
        boxes.sort_by(|a, b| a.created_at().cmp(&b.created_at()).then_with(|| a.id().cmp(b.id())));
        let invalid = runtime
            .invalid_boxes()
            .iter()
            .map(|i| InvalidEntry { id: c_string(&i.id), reason: c_string(&i.reason), dir: c_string(&i.dir.to_string_lossy()) })
            .collect();
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_box_list_t { boxes, runtime, invalid })) };
        Ok(())
    })
}

/// The number of boxes in the list. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_len(out: *mut usize, list: *const boxlite_box_list_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let len = unsafe { handle(list, "list") }?.boxes.len();
        // SAFETY: checked non-NULL above.
        unsafe { *out = len };
        Ok(())
    })
}

/// A new handle to the list's box number `index` (0-based). On success `*out` owns it
/// (free with `boxlite_box_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs or an
/// index past the end. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_get(
    out: *mut *mut boxlite_box_t,
    list: *const boxlite_box_list_t,
    index: usize,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let list = unsafe { handle(list, "list") }?;
        let lite_box = list.boxes.get(index).ok_or_else(|| out_of_range(index, list.boxes.len()))?.clone();
        // SAFETY: checked non-NULL above.
        unsafe { *out = boxlite_box_t::new(lite_box, list.runtime.clone()).into_raw() };
        Ok(())
    })
}

/// The number of box directories of the home that could not be loaded (an unreadable or
/// corrupt record, moved aside to `boxes/.invalid-<id>` with its disk; or a record written
/// by a newer boxlite, left in place). They are never deleted by the library. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_invalid_len(out: *mut usize, list: *const boxlite_box_list_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let len = unsafe { handle(list, "list") }?.invalid.len();
        // SAFETY: checked non-NULL above.
        unsafe { *out = len };
        Ok(())
    })
}

/// Invalid box number `index`: its id, why it could not be loaded, and the directory that
/// now holds it (each out-parameter may be NULL if not wanted; the strings are owned by
/// the list, valid until `boxlite_box_list_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT
/// for a NULL list or an index past the end. Thread-safe.
///
/// # Safety
/// Each out-parameter is NULL or valid for writing a pointer; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_invalid_get(
    out_id: *mut *const c_char,
    out_reason: *mut *const c_char,
    out_dir: *mut *const c_char,
    list: *const boxlite_box_list_t,
    index: usize,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let list = unsafe { handle(list, "list") }?;
        let entry = list.invalid.get(index).ok_or_else(|| out_of_range(index, list.invalid.len()))?;
        for (out, text) in [(out_id, &entry.id), (out_reason, &entry.reason), (out_dir, &entry.dir)] {
            if !out.is_null() {
                // SAFETY: non-NULL and valid for writes (caller's contract).
                unsafe { *out = text.as_ptr() };
            }
        }
        Ok(())
    })
}

/// Frees a box list (handles taken from it stay valid). NULL does nothing.
///
/// # Safety
/// `list` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_list_free(list: *mut boxlite_box_list_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(list) })
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

/// The box's name: NUL-terminated, owned by the handle (valid until `boxlite_box_free`);
/// NULL if it has none or for a NULL box. Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_name(r#box: *const boxlite_box_t) -> *const c_char {
    // SAFETY: NULL or live (caller's contract).
    guard_value(std::ptr::null(), || unsafe { r#box.as_ref() }.and_then(|b| b.name_c.as_ref()).map_or(std::ptr::null(), |n| n.as_ptr()))
}

/// The image the box runs, as normalised at create (`registry/repository:tag`):
/// NUL-terminated, owned by the handle; NULL for a box on a root disk or a NULL box.
/// Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_image(r#box: *const boxlite_box_t) -> *const c_char {
    // SAFETY: NULL or live (caller's contract).
    guard_value(std::ptr::null(), || unsafe { r#box.as_ref() }.and_then(|b| b.image_c.as_ref()).map_or(std::ptr::null(), |n| n.as_ptr()))
}

/// When the box was created, in milliseconds since the Unix epoch (0 for a box recorded by
/// a boxlite older than 0.2). Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_created_at(out: *mut u64, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let created = unsafe { handle(r#box, "box") }?.lite_box.created_at();
        let ms = created.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // SAFETY: checked non-NULL above.
        unsafe { *out = ms };
        Ok(())
    })
}

/// Why the box last stopped when nobody asked it to (e.g. "its VM ended on its own (shim
/// killed by signal 9)"): on success `*out` is a NUL-terminated string the caller owns
/// (free with `boxlite_string_free`), or NULL if the box is running, was stopped on
/// request, or never ran. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_stop_reason(out: *mut *mut c_char, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let reason = unsafe { handle(r#box, "box") }?.lite_box.stop_reason();
        // SAFETY: checked non-NULL above.
        unsafe { *out = reason.as_deref().map_or(std::ptr::null_mut(), owned_string) };
        Ok(())
    })
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

/// Stops the box (as `boxlite_box_stop`) and boots it again: its disk, and so its files
/// and installed packages, are kept. Blocks. Errors: those of `boxlite_box_stop` and
/// `boxlite_box_start`. Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_restart(r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?;
        block_on(lite_box.lite_box.restart())
    })
}

/// Removes the box and its files. `flags`: 0 refuses a running box
/// (BOXLITE_ERROR_INVALID_STATE); BOXLITE_REMOVE_FORCE stops it first. The handle stays
/// valid (only for `boxlite_box_id` and `boxlite_box_free`). Blocks. Errors also:
/// BOXLITE_ERROR_INVALID_ARGUMENT (NULL box, unknown flag bits). Thread-safe.
///
/// # Safety
/// `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_remove(r#box: *const boxlite_box_t, flags: u32) -> *mut boxlite_error_t {
    guard(|| {
        check_flags(flags, BOXLITE_REMOVE_FORCE, "flags")?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?;
        block_on(lite_box.runtime.remove_box(lite_box.lite_box.id(), flags & BOXLITE_REMOVE_FORCE != 0))
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

/// Figures of one box (`boxlite_box_metrics`). A sized struct: set `size` to
/// `sizeof(boxlite_box_metrics_t)` first (BOXLITE_BOX_METRICS_INIT); the library writes
/// no more than that.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_box_metrics_t {
    /// Set by the caller to the size of the struct it was compiled with.
    pub size: u32,
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

/// Writes the box's state (BOXLITE_BOX_*) to `*out` (see `boxlite_box_stop_reason` for why
/// a box stopped). Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_status(out: *mut boxlite_box_status_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let status = match unsafe { handle(r#box, "box") }?.lite_box.status() {
            BoxStatus::Configured => BOXLITE_BOX_CONFIGURED,
            BoxStatus::Running => BOXLITE_BOX_RUNNING,
            BoxStatus::Stopped => BOXLITE_BOX_STOPPED,
            BoxStatus::Removed => BOXLITE_BOX_REMOVED,
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out = status };
        Ok(())
    })
}

// SAFETY: repr(C), plain data, a u32 size first.
unsafe impl SizedStruct for boxlite_box_metrics_t {}
// SAFETY: repr(C), plain data, a u32 size first.
unsafe impl SizedStruct for boxlite_guest_stats_t {}

/// Writes the box's figures to `*out`, a sized struct (its `size` set by the caller).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs or a `size` under 4. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_metrics(out: *mut boxlite_box_metrics_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let metrics = unsafe { handle(r#box, "box") }?.lite_box.metrics();
        let c = boxlite_box_metrics_t {
            size: std::mem::size_of::<boxlite_box_metrics_t>() as u32,
            boots: metrics.boots,
            last_boot_ms: metrics.last_boot_ms.unwrap_or(0.0),
            executions_started: metrics.exec.started,
            executions_failed: metrics.exec.failed,
            bytes_out: metrics.exec.bytes_out,
            bytes_in: metrics.exec.bytes_in,
        };
        // SAFETY: valid for `out->size` bytes (caller's contract).
        unsafe { write_sized(out, c, "out") }
    })
}

/// What the guest reports of itself (`boxlite_box_guest_stats`); the guest's word, untrusted.
/// A sized struct: set `size` first (BOXLITE_GUEST_STATS_INIT).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_guest_stats_t {
    /// Set by the caller to the size of the struct it was compiled with.
    pub size: u32,
    /// Busy CPU time of all vCPUs since boot, in milliseconds.
    pub cpu_busy_ms: u64,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub uptime_us: u64,
}

/// Asks the running box's agent for its CPU time, memory and uptime, written to `*out` (a
/// sized struct). Blocks (briefly). Errors: BOXLITE_ERROR_INVALID_ARGUMENT,
/// BOXLITE_ERROR_INVALID_STATE (not running), BOXLITE_ERROR_AGENT, BOXLITE_ERROR_VM_EXITED.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_guest_stats(out: *mut boxlite_guest_stats_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: valid for its size or NULL (caller's contract).
        unsafe { sized_len(out, "out") }?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?.lite_box.clone();
        let stats = block_on(lite_box.guest_stats())?;
        let c = boxlite_guest_stats_t {
            size: std::mem::size_of::<boxlite_guest_stats_t>() as u32,
            cpu_busy_ms: stats.cpu_busy_ms,
            memory_total_kib: stats.memory_total_kib,
            memory_available_kib: stats.memory_available_kib,
            uptime_us: stats.uptime_us,
        };
        // SAFETY: valid for `out->size` bytes (caller's contract).
        unsafe { write_sized(out, c, "out") }
    })
}
