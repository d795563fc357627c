//! Gives libboxlite.so its SONAME, so that programs link against the ABI major version
//! (libboxlite.so.0) rather than the unversioned development symlink.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libboxlite.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
