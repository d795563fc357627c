//! Finding the programs and guest files a VM needs: boxlite-shim, the guest kernel and
//! initramfs, the network gateway, and for the qemu engine qemu-system-x86_64,
//! vhost-device-vsock and virtiofsd (volumes).
//!
//! Each is looked up in order: an explicit path, its environment variable (the override for
//! development), then an install prefix's libexec/boxlite/ and share/boxlite/ found from
//! libboxlite.so's own location (or the executable's), then cargo's target directory, then
//! the boxlite cache (`$BOXLITE_CACHE`, default ~/.cache/boxlite) and PATH where that makes
//! sense. Errors list every place that was searched.

use std::path::{Path, PathBuf};

use crate::runtime::error::{Error, Result};

pub const SHIM_ENV: &str = "BOXLITE_SHIM";
pub const KERNEL_ENV: &str = "BOXLITE_KERNEL";
pub const INITRAMFS_ENV: &str = "BOXLITE_INITRAMFS";
pub const GUEST_DIR_ENV: &str = "BOXLITE_GUEST_DIR";
pub const QEMU_ENV: &str = "BOXLITE_QEMU";
pub const VHOST_VSOCK_ENV: &str = "BOXLITE_VHOST_VSOCK";
pub const CACHE_ENV: &str = "BOXLITE_CACHE";
pub const NETGW_ENV: &str = "BOXLITE_NETGW";
pub const VIRTIOFSD_ENV: &str = "BOXLITE_VIRTIOFSD";

const SETUP_FIX: &str = "Run scripts/setup.sh (it builds the kernel, the agent and the tools), or set";

/// The boxlite cache: `$BOXLITE_CACHE`, else `$XDG_CACHE_HOME/boxlite`, else ~/.cache/boxlite.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("boxlite");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    home.join(".cache/boxlite")
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_path_buf)
}

/// The directory of the file this code was loaded from: libboxlite.so when boxlite is used
/// as a shared library (so an installed library finds its helpers without environment
/// variables), the executable itself when it is linked in statically.
fn library_dir() -> Option<PathBuf> {
    let path = crate::runtime::sys::object_file_of(library_dir as *const libc::c_void)?;
    std::fs::canonicalize(path).ok()?.parent().map(Path::to_path_buf)
}

/// Where an install prefix keeps boxlite's helpers, relative to the library or executable:
/// `<prefix>/lib[/<multiarch>]/` next to `<prefix>/libexec/boxlite/` and `<prefix>/share/boxlite/`.
fn prefix_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for base in [library_dir(), exe_dir()].into_iter().flatten() {
        for up in ["..", "../.."] {
            let dir = base.join(up).join(sub);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
}

/// Returns the first candidate that is a file, or an error naming all of them.
fn first_file(what: &'static str, env_var: &str, explicit: Option<&Path>, candidates: Vec<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::HelperNotFound { what, searched: path.display().to_string(), fix: "Pass the path of an existing file".into() })
        };
    }
    if let Some(path) = env_path(env_var) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::HelperNotFound {
                what,
                searched: format!("{env_var}={}", path.display()),
                fix: format!("Point {env_var} at an existing file, or unset it"),
            })
        };
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let searched = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    Err(Error::HelperNotFound { what, searched, fix: format!("{SETUP_FIX} {env_var}") })
}

/// Directories that may hold the guest files, most specific first.
fn guest_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = env_path(GUEST_DIR_ENV) {
        dirs.push(dir);
    }
    dirs.extend(prefix_dirs("share/boxlite"));
    // cargo: target/guest beside target/<profile>/.
    dirs.extend(cargo_output_dirs().into_iter().map(|d| d.join("../guest")));
    dirs
}

/// Where cargo leaves the helpers it builds with the library: target/<profile>/, found from
/// libboxlite.so in it (a program in another language loading the library from a source
/// tree), from an executable in it, or from a test binary in its deps/.
fn cargo_output_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = library_dir().into_iter().collect();
    if let Some(exe) = exe_dir() {
        dirs.push(exe.clone());
        dirs.push(exe.join(".."));
    }
    dirs
}

pub fn kernel(explicit: Option<&Path>) -> Result<PathBuf> {
    first_file("the guest kernel (vmlinux)", KERNEL_ENV, explicit, guest_dirs().into_iter().map(|d| d.join("vmlinux")).collect())
}

pub fn initramfs(explicit: Option<&Path>) -> Result<PathBuf> {
    first_file(
        "the guest initramfs (initramfs.cpio)",
        INITRAMFS_ENV,
        explicit,
        guest_dirs().into_iter().map(|d| d.join("initramfs.cpio")).collect(),
    )
}

pub fn shim(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = prefix_dirs("libexec/boxlite").into_iter().map(|d| d.join("boxlite-shim")).collect();
    candidates.extend(cargo_output_dirs().into_iter().map(|d| d.join("boxlite-shim")));
    first_file("boxlite-shim", SHIM_ENV, explicit, candidates)
}

/// The network gateway, installed and built beside the shim.
pub fn netgw() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = prefix_dirs("libexec/boxlite").into_iter().map(|d| d.join("boxlite-netgw")).collect();
    candidates.extend(cargo_output_dirs().into_iter().map(|d| d.join("boxlite-netgw")));
    first_file("boxlite-netgw (the network gateway)", NETGW_ENV, None, candidates)
}

pub fn qemu() -> Result<PathBuf> {
    let candidates = path_dirs().into_iter().map(|d| d.join("qemu-system-x86_64")).collect();
    first_file("qemu-system-x86_64", QEMU_ENV, None, candidates).map_err(|e| match e {
        Error::HelperNotFound { what, searched, .. } => {
            Error::HelperNotFound { what, searched, fix: format!("Install it (apt-get install qemu-system-x86) or set {QEMU_ENV}") }
        }
        other => other,
    })
}

pub fn vhost_vsock() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = prefix_dirs("libexec/boxlite").into_iter().map(|d| d.join("vhost-device-vsock")).collect();
    candidates.push(cache_dir().join("tools/bin/vhost-device-vsock"));
    candidates.extend(path_dirs().into_iter().map(|d| d.join("vhost-device-vsock")));
    first_file("vhost-device-vsock", VHOST_VSOCK_ENV, None, candidates)
}

/// The virtio-fs server the qemu engine runs for each volume (`cargo install virtiofsd`,
/// done by scripts/setup.sh; Debian's /usr/libexec/virtiofsd works too).
pub fn virtiofsd() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = prefix_dirs("libexec/boxlite").into_iter().map(|d| d.join("virtiofsd")).collect();
    candidates.push(cache_dir().join("tools/bin/virtiofsd"));
    candidates.extend(path_dirs().into_iter().map(|d| d.join("virtiofsd")));
    candidates.push("/usr/libexec/virtiofsd".into());
    first_file("virtiofsd (the virtio-fs server for volumes)", VIRTIOFSD_ENV, None, candidates)
}
