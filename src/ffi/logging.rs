//! The process-wide log callback (sqlite's `SQLITE_CONFIG_LOG` is the model).

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::error::boxlite_error_t;
use super::exec::boxlite_user_data_free_cb;
use super::{c_string, guard};
use crate::runtime::error::Error;
use crate::runtime::logging::{self, LogHandler, LogLevel};

/// A log record's level (`boxlite_log_cb`, `boxlite_log_set_callback`).
pub type boxlite_log_level_t = u32;
pub const BOXLITE_LOG_ERROR: boxlite_log_level_t = 1;
pub const BOXLITE_LOG_WARN: boxlite_log_level_t = 2;
pub const BOXLITE_LOG_INFO: boxlite_log_level_t = 3;
pub const BOXLITE_LOG_DEBUG: boxlite_log_level_t = 4;
pub const BOXLITE_LOG_TRACE: boxlite_log_level_t = 5;

/// Receives one log record: its level, its source (a module path) and its text, both
/// NUL-terminated and valid only during the call. Runs on whichever library thread logged,
/// possibly on several at once: it must be thread-safe, should return quickly, and must not
/// call `boxlite_log_set_callback`.
pub type boxlite_log_cb =
    Option<unsafe extern "C" fn(level: boxlite_log_level_t, target: *const c_char, message: *const c_char, user_data: *mut c_void)>;

/// The caller's callback and data; frees the data when replaced or removed.
struct CallbackLog {
    callback: boxlite_log_cb,
    user_data: *mut c_void,
    user_data_free: boxlite_user_data_free_cb,
}

// SAFETY: the C contract says the callback is thread-safe and user_data may be passed to it
// from any thread, concurrently.
unsafe impl Send for CallbackLog {}
// SAFETY: as above.
unsafe impl Sync for CallbackLog {}

impl CallbackLog {
    fn deliver(&self, level: LogLevel, target: &str, message: &str) {
        if let Some(callback) = self.callback {
            let (target, message) = (c_string(target), c_string(message));
            // SAFETY: the caller's callback, with strings valid for the call.
            unsafe { callback(level as boxlite_log_level_t, target.as_ptr(), message.as_ptr(), self.user_data) };
        }
    }
}

impl Drop for CallbackLog {
    fn drop(&mut self) {
        if let Some(free) = self.user_data_free.take() {
            // SAFETY: the caller's own function, with the caller's own pointer, once.
            unsafe { free(self.user_data) };
        }
    }
}

/// Routes the library's log records of `max_level` (a BOXLITE_LOG_* value) and more severe
/// to `callback`, for the whole process, replacing any callback set before (whose
/// `user_data_free` then runs, once no record is being delivered to it). A NULL `callback`
/// stops the routing. Without a callback (and without `boxlite_runtime_options_set_log_to_home`)
/// the library installs no logger of its own. `user_data_free` runs exactly once: when the
/// callback is replaced or removed, at once if `callback` is NULL, or before an error
/// returns. Errors: BOXLITE_ERROR_INVALID_ARGUMENT (an
/// unknown level), BOXLITE_ERROR_INVALID_STATE (the application installed a Rust `tracing`
/// subscriber of its own, which already receives the records). Thread-safe.
///
/// # Safety
/// `callback` obeys its contract; `user_data_free`, if not NULL, may be called with
/// `user_data` once.
#[no_mangle]
pub unsafe extern "C" fn boxlite_log_set_callback(
    callback: boxlite_log_cb,
    max_level: boxlite_log_level_t,
    user_data: *mut c_void,
    user_data_free: boxlite_user_data_free_cb,
) -> *mut boxlite_error_t {
    // Owned from here on, so that user_data_free runs exactly once on every path.
    let log = CallbackLog { callback, user_data, user_data_free };
    guard(move || {
        let level = match max_level {
            BOXLITE_LOG_ERROR => LogLevel::Error,
            BOXLITE_LOG_WARN => LogLevel::Warn,
            BOXLITE_LOG_INFO => LogLevel::Info,
            BOXLITE_LOG_DEBUG => LogLevel::Debug,
            BOXLITE_LOG_TRACE => LogLevel::Trace,
            other => {
                return Err(Error::InvalidOption { field: "max_level", reason: format!("{other} is not a BOXLITE_LOG_* value (1-5)") })
            }
        };
        let handler = log
            .callback
            .is_some()
            .then(|| Arc::new(move |level: LogLevel, target: &str, message: &str| log.deliver(level, target, message)) as LogHandler);
        logging::set_handler(handler, level)
    })
}
