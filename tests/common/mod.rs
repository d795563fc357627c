//! Helpers shared by the integration tests that boot real VMs.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxlite::{BoxliteRuntime, DiskFormat, EngineChoice, RootDisk, RuntimeOptions, Vm, VmOptions};

pub mod net;
pub mod registry;

/// A fresh run directory per test, removed when the test passes.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(name: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("boxlite-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        RunDir(dir)
    }

    pub fn options(&self, engine: EngineChoice) -> VmOptions {
        let mut options = VmOptions::new(&self.0);
        options.engine = engine;
        options.boot_timeout = Duration::from_secs(20);
        options
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {} for inspection", self.0.display());
        }
    }
}

/// Boots with the qemu engine, or fails the test showing the whole error (logs included).
pub async fn boot_qemu(dir: &RunDir) -> Vm {
    match Vm::boot(dir.options(EngineChoice::Qemu)).await {
        Ok(vm) => vm,
        Err(e) => panic!("boot failed: {e}"),
    }
}

pub fn process_alive(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // Fields after "(comm)": state is the first, flags the seventh.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // A zombie has exited; only its parent's wait is missing. An exiting task has freed its
    // memory and runs no more user code: the init of a VM's pid namespace stays exiting until
    // every process of the namespace is reaped, which for a child whose shim died is the
    // host's init's job (slow on some hosts).
    let exiting = fields.get(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|flags| flags & PF_EXITING != 0);
    fields.first() != Some(&"Z") && !exiting
}

/// Waits up to `limit` for every pid to be gone; returns the ones still alive.
pub fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
        if alive.is_empty() || started.elapsed() > limit {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn socket_files(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_socket()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The busybox root disk that scripts/build-test-rootfs.sh builds.
pub fn busybox_root() -> RootDisk {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/guest/busybox-rootfs.ext4");
    assert!(path.is_file(), "{} is missing: run scripts/build-test-rootfs.sh (scripts/test.sh does)", path.display());
    RootDisk { path, format: DiskFormat::Raw, read_only: true }
}

/// The reference [`qemu_runtime_with_python`] imports the Python test image as.
pub const PYTHON_IMAGE: &str = "localhost/boxlite/python:3";

/// A qemu runtime in `dir`'s home with the Python test image (scripts/build-python-image.sh)
/// imported as [`PYTHON_IMAGE`].
pub fn qemu_runtime_with_python(dir: &RunDir) -> BoxliteRuntime {
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/python");
    assert!(
        layout.join("index.json").is_file(),
        "{} is missing: run scripts/build-python-image.sh (scripts/test.sh does)",
        layout.display()
    );
    let rt =
        BoxliteRuntime::new(RuntimeOptions { home: Some(dir.0.join("home")), engine: EngineChoice::Qemu, ..Default::default() }).unwrap();
    rt.images().import_layout(&layout, Some("3"), PYTHON_IMAGE).unwrap();
    rt
}

/// Boots with the qemu engine and the busybox root disk.
pub async fn boot_busybox(dir: &RunDir) -> Vm {
    let mut options = dir.options(EngineChoice::Qemu);
    options.root_disk = Some(busybox_root());
    match Vm::boot(options).await {
        Ok(vm) => vm,
        Err(e) => panic!("boot failed: {e}"),
    }
}
