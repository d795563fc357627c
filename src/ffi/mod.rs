//! The C ABI (include/boxlite.h). The only place with `extern "C"`: it converts and
//! delegates to `runtime`, catches every panic, and never exits the host process.
//! For now it carries the version; the box and exec surface follows the Rust API as it lands.

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime ("0.1.0").
/// Never NULL; the caller must not free it. Thread-safe.
#[no_mangle]
pub extern "C" fn boxlite_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_package_version() {
        // SAFETY: boxlite_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(super::boxlite_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
