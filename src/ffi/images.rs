//! Images from C: pull (progress on the calling thread), import a layout or an archive,
//! list, remove.

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::boxes::BOXLITE_REMOVE_FORCE;
use super::error::boxlite_error_t;
use super::runtime::boxlite_runtime_t;
use super::{block_on, check_flags, free_handle, guard, guard_void, handle, out_arg, out_of_range, owned_string, str_arg};
use crate::runtime::images::pull::{ProgressFn, PullProgress};
use crate::runtime::images::Image;

/// Receives pull progress: the blob's digest (valid during the call), bytes so far and its
/// size. Return 0 to go on; non-zero cancels the pull (BOXLITE_ERROR_CANCELLED).
pub type boxlite_pull_progress_cb =
    Option<unsafe extern "C" fn(digest: *const c_char, done: u64, total: u64, user_data: *mut c_void) -> i32>;

/// Hands the image's manifest digest to the caller when it asked for it.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
unsafe fn give_digest(out: *mut *mut c_char, image: &Image) {
    if !out.is_null() {
        // SAFETY: non-NULL and valid for writes (caller's contract).
        unsafe { *out = owned_string(image.manifest_digest.as_str()) };
    }
}

/// Pulls an image (`name[:tag][@digest]`) into the runtime's cache, fetching only blobs it
/// does not have. On success, if `out_digest` is not NULL, `*out_digest` is the manifest
/// digest it resolved to (`sha256:...`, owned by the caller: free with
/// `boxlite_string_free`). `progress` may be NULL; it runs on the calling thread, outside
/// the library's locks, so it may call back into the library. Blocks. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT (NULLs, a malformed reference), BOXLITE_ERROR_NOT_FOUND,
/// BOXLITE_ERROR_UNAUTHORIZED, BOXLITE_ERROR_PULL (network, or an HTTP registry not marked
/// insecure: the message says so), BOXLITE_ERROR_IMAGE (verification failed),
/// BOXLITE_ERROR_CANCELLED. Thread-safe.
///
/// # Safety
/// `out_digest` is NULL or valid for writing a pointer; `runtime` is NULL or live;
/// `reference` is NULL or NUL-terminated; `progress` obeys its contract.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_pull_image(
    out_digest: *mut *mut c_char,
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
        let Some(callback) = progress else {
            let image = block_on(runtime.images().pull(&reference, None))?;
            // SAFETY: forwarded caller contract.
            unsafe { give_digest(out_digest, &image) };
            return Ok(());
        };
        // The pull runs on a thread of its own (its future is not Send, so it cannot be
        // spawned on the runtime); each report is handed to this thread, which runs the
        // callback with no runtime context entered and hands back its verdict.
        let (reports, queue) = std::sync::mpsc::sync_channel::<(PullProgress, SyncSender<bool>)>(0);
        let report: ProgressFn = Arc::new(move |p: &PullProgress| {
            let (answer, verdict) = std::sync::mpsc::sync_channel(1);
            reports.send((p.clone(), answer)).is_ok() && verdict.recv().unwrap_or(false)
        });
        let image = std::thread::scope(|scope| {
            let pull = scope.spawn(move || block_on(runtime.images().pull(&reference, Some(report))));
            // Ends when the pull is over and has dropped its sender.
            for (p, answer) in queue {
                let digest = CString::new(p.digest.as_str()).expect("digests are ASCII");
                // SAFETY: the caller's callback, with a string valid for the call.
                let go_on = unsafe { callback(digest.as_ptr(), p.done, p.total, user_data) } == 0;
                let _ = answer.send(go_on);
            }
            pull.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        // SAFETY: forwarded caller contract.
        unsafe { give_digest(out_digest, &image) };
        Ok(())
    })
}

/// Imports an image from an OCI image layout directory and caches it as `name`. `tag`
/// picks the layout's image (`org.opencontainers.image.ref.name`); NULL takes its only
/// image. `out_digest` as for `boxlite_runtime_pull_image`. Blocks. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_NOT_FOUND (no such tag),
/// BOXLITE_ERROR_IMAGE (not a layout, or a blob failed verification). Thread-safe.
///
/// # Safety
/// `out_digest` is NULL or valid for writing a pointer; `runtime` is NULL or live; the
/// strings are NULL or NUL-terminated (`tag` may be NULL).
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_import_image(
    out_digest: *mut *mut c_char,
    runtime: *const boxlite_runtime_t,
    layout_dir: *const c_char,
    tag: *const c_char,
    name: *const c_char,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe { import(out_digest, runtime, ImportSource::Layout, layout_dir, tag, name) }
}

/// Imports an image from an archive: a tar of an OCI image layout, or what `docker save`
/// writes; otherwise as `boxlite_runtime_import_image` (`tag` picks the image, NULL takes
/// the only one). Blocks. Errors: BOXLITE_ERROR_INVALID_ARGUMENT, BOXLITE_ERROR_NOT_FOUND,
/// BOXLITE_ERROR_IMAGE (neither kind of archive, or a blob failed verification),
/// BOXLITE_ERROR_IO. Thread-safe.
///
/// # Safety
/// As `boxlite_runtime_import_image`.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_import_image_archive(
    out_digest: *mut *mut c_char,
    runtime: *const boxlite_runtime_t,
    archive: *const c_char,
    tag: *const c_char,
    name: *const c_char,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe { import(out_digest, runtime, ImportSource::Archive, archive, tag, name) }
}

enum ImportSource {
    Layout,
    Archive,
}

/// # Safety
/// As `boxlite_runtime_import_image`.
unsafe fn import(
    out_digest: *mut *mut c_char,
    runtime: *const boxlite_runtime_t,
    kind: ImportSource,
    source: *const c_char,
    tag: *const c_char,
    name: *const c_char,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?;
        let source_name = match kind {
            ImportSource::Layout => "layout_dir",
            ImportSource::Archive => "archive",
        };
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let (source, name) = unsafe { (str_arg(source, source_name)?, str_arg(name, "name")?) };
        // SAFETY: as above; NULL means "the only image".
        let tag = if tag.is_null() { None } else { Some(unsafe { str_arg(tag, "tag") }?) };
        let images = runtime.runtime.images();
        let image = match kind {
            ImportSource::Layout => images.import_layout(Path::new(source), tag, name)?,
            ImportSource::Archive => images.import_archive(Path::new(source), tag, name)?,
        };
        // SAFETY: forwarded caller contract.
        unsafe { give_digest(out_digest, &image) };
        Ok(())
    })
}

/// Removes an image from the cache. `flags`: 0 refuses (BOXLITE_ERROR_INVALID_STATE) while
/// a box uses it; BOXLITE_REMOVE_FORCE removes it anyway. Errors also:
/// BOXLITE_ERROR_NOT_FOUND, BOXLITE_ERROR_INVALID_ARGUMENT (unknown flag bits). Thread-safe.
///
/// # Safety
/// `runtime` is NULL or live; `reference` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_remove_image(
    runtime: *const boxlite_runtime_t,
    reference: *const c_char,
    flags: u32,
) -> *mut boxlite_error_t {
    guard(|| {
        check_flags(flags, BOXLITE_REMOVE_FORCE, "flags")?;
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        runtime.runtime.remove_image(unsafe { str_arg(reference, "reference") }?, flags & BOXLITE_REMOVE_FORCE != 0)
    })
}

/// A snapshot of a runtime's cached images (`boxlite_runtime_list_images`).
pub struct boxlite_image_list_t {
    images: Vec<ImageEntry>,
}

struct ImageEntry {
    reference: CString,
    digest: CString,
    size: u64,
}

/// Lists the cached images, ordered by reference. On success `*out` owns the list (free
/// with `boxlite_image_list_free`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULLs),
/// BOXLITE_ERROR_IO, BOXLITE_ERROR_IMAGE (an unreadable cache entry). Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `runtime` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_list_images(
    out: *mut *mut boxlite_image_list_t,
    runtime: *const boxlite_runtime_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let runtime = unsafe { handle(runtime, "runtime") }?;
        let mut images = runtime.runtime.images().list()?;
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let images = images
            .into_iter()
            .map(|i| ImageEntry {
                reference: CString::new(i.reference).expect("normalised references hold no NUL"),
                digest: CString::new(i.manifest_digest.as_str()).expect("digests are ASCII"),
                size: i.size,
            })
            .collect();
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_image_list_t { images })) };
        Ok(())
    })
}

/// The number of images in the list. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs.
///
/// # Safety
/// `out` is NULL or valid for writing; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_image_list_len(out: *mut usize, list: *const boxlite_image_list_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let len = unsafe { handle(list, "list") }?.images.len();
        // SAFETY: checked non-NULL above.
        unsafe { *out = len };
        Ok(())
    })
}

/// Image number `index`: its reference, its manifest digest (strings owned by the list,
/// valid until `boxlite_image_list_free`) and the size of its layers in bytes. Each
/// out-parameter may be NULL if not wanted. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a
/// NULL list or an index past the end. Thread-safe.
///
/// # Safety
/// Each out-parameter is NULL or valid for writing; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_image_list_get(
    out_reference: *mut *const c_char,
    out_digest: *mut *const c_char,
    out_size: *mut u64,
    list: *const boxlite_image_list_t,
    index: usize,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let list = unsafe { handle(list, "list") }?;
        let entry = list.images.get(index).ok_or_else(|| out_of_range(index, list.images.len()))?;
        for (out, text) in [(out_reference, &entry.reference), (out_digest, &entry.digest)] {
            if !out.is_null() {
                // SAFETY: non-NULL and valid for writes (caller's contract).
                unsafe { *out = text.as_ptr() };
            }
        }
        if !out_size.is_null() {
            // SAFETY: non-NULL and valid for writes (caller's contract).
            unsafe { *out_size = entry.size };
        }
        Ok(())
    })
}

/// Frees an image list. NULL does nothing.
///
/// # Safety
/// `list` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_image_list_free(list: *mut boxlite_image_list_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(list) })
}
