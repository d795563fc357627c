//! The shim's jail, applied before the engine starts, in this order (docs/jailer.md):
//! validate (the spec was parsed and checked by `read_spec`), close inherited descriptors,
//! clear the environment, join a per-VM cgroup, set rlimits, set no_new_privs. Namespaces,
//! pivot_root, dropping privileges and seccomp are the next steps of the jailer and are not
//! applied yet. What was applied is logged and written to `protections.json`.

use std::path::{Path, PathBuf};

use boxlite::runtime::spec::{Protections, VmSpec};

/// What the VMM process itself needs beyond guest RAM: qemu's TCG code cache, device
/// emulation and libraries (about 105 MiB idle here), and vhost-device-vsock's buffers.
const VMM_OVERHEAD_MIB: u64 = 512;
/// Threads and processes of one VM's processes (qemu's vCPU and I/O threads, the backend).
const PIDS_MAX: u64 = 256;
const CPU_PERIOD_US: u64 = 100_000;
const NOFILE: u64 = 4096;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn apply(spec: &VmSpec) -> Result<Protections, String> {
    let mut applied = Protections::default();
    close_inherited_fds();
    applied.inherited_fds_closed = true;
    for (key, _) in std::env::vars_os() {
        // SAFETY: the shim is single-threaded until the engine starts, so nothing reads the
        // environment concurrently.
        unsafe { std::env::remove_var(key) };
    }
    applied.environment_cleared = true;
    if spec.jail.cgroups {
        applied.cgroups = join_cgroup(spec)?;
    }
    if spec.jail.rlimits {
        set_rlimit(libc::RLIMIT_CORE, 0)?;
        set_rlimit(libc::RLIMIT_NOFILE, NOFILE)?;
        applied.rlimits = true;
    }
    if spec.jail.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error()));
        }
        applied.no_new_privs = true;
    }
    for (step, on) in [("cgroups", spec.jail.cgroups), ("rlimits", spec.jail.rlimits), ("no_new_privs", spec.jail.no_new_privs)] {
        if !on {
            eprintln!("boxlite-shim: WARNING: protection {step} is turned off (debugging only)");
        }
    }
    let json = serde_json::to_vec_pretty(&applied).expect("protections always serialize");
    std::fs::write(spec.protections_file(), json).map_err(|e| format!("write {}: {e}", spec.protections_file().display()))?;
    eprintln!("boxlite-shim: protections: {applied:?}");
    Ok(applied)
}

/// Closes every descriptor but stdin (the watchdog), stdout (status) and stderr (log): a
/// library user's process may have leaked descriptors without O_CLOEXEC into ours.
fn close_inherited_fds() {
    // SAFETY: close_range on descriptors this process owns; 3.. are none of Rust's.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), String> {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(format!("setrlimit({resource}, {value}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Puts this process in `boxlite/shim-<pid>` (v2: one directory; v1: one per controller)
/// with the VM's limits. Children (qemu, the vsock backend) inherit it.
fn join_cgroup(spec: &VmSpec) -> Result<Vec<PathBuf>, String> {
    let pid = std::process::id();
    let leaf = format!("boxlite/shim-{pid}");
    let memory = (u64::from(spec.memory_mib) + VMM_OVERHEAD_MIB) << 20;
    // vCPUs plus one core for device emulation and I/O threads.
    let quota = (u64::from(spec.vcpus) + 1) * CPU_PERIOD_US;
    let root = Path::new(CGROUP_ROOT);
    let fix = "mount the cgroup controllers, or (debugging only) turn the cgroups protection off";
    if root.join("cgroup.controllers").is_file() {
        // v2: enable the controllers for boxlite's subtree, then one leaf per VM.
        let parent = root.join("boxlite");
        mkdir(&parent)?;
        write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu")
            .and_then(|()| write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu"))
            .map_err(|e| format!("{e}; {fix}"))?;
        let dir = root.join(&leaf);
        mkdir(&dir)?;
        write(&dir.join("memory.max"), &memory.to_string())?;
        write(&dir.join("pids.max"), &PIDS_MAX.to_string())?;
        write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
        return Ok(vec![dir]);
    }
    // v1: one hierarchy per controller.
    let mut dirs = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let mount = root.join(controller);
        if !mount.join("cgroup.procs").is_file() {
            return Err(format!("the cgroup v1 controller {controller} is not mounted at {}; {fix}", mount.display()));
        }
        let dir = mount.join(&leaf);
        mkdir(&dir)?;
        match controller {
            "memory" => write(&dir.join("memory.limit_in_bytes"), &memory.to_string())?,
            "pids" => write(&dir.join("pids.max"), &PIDS_MAX.to_string())?,
            _ => {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
        dirs.push(dir);
    }
    Ok(dirs)
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("create cgroup {}: {e}", dir.display())),
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("write {value:?} to {}: {e}", file.display()))
}
