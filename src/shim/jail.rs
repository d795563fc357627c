//! The shim's jail, applied before the engine starts, in this order (docs/jailer.md):
//! validate (the spec was parsed and checked by `read_spec`), close inherited descriptors,
//! clear the environment, join a per-VM cgroup, enter namespaces and pivot into the jail
//! directory (`jail_root`), set rlimits, (the volumes' servers start here,
//! `volumes::start`), drop to the VM's own uid/gid, set no_new_privs.
//! seccomp comes last, from the engine: each child's filter between fork and exec, the
//! shim's own once its children run (a filter is inherited, and would narrow theirs).
//! What was applied is logged and written to `protections.json`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use boxlite_shim::sys;
use boxlite_vmspec::engine::EngineKind;
use boxlite_vmspec::spec::{DiskFormat, Protections, VmSpec, JAIL_ID_BASE};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};

use crate::jail_root;

/// What the VMM process itself needs beyond guest RAM: qemu's TCG code cache, device
/// emulation and libraries (about 105 MiB idle here), and vhost-device-vsock's buffers.
const VMM_OVERHEAD_MIB: u64 = 512;
/// Threads and processes of one VM's processes (qemu's vCPU and I/O threads, the backend).
const PIDS_MAX: u64 = 256;
const CPU_PERIOD_US: u64 = 100_000;
const NOFILE: u64 = 4096;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The largest file the VMM may write beyond its disks' size: qcow2 metadata, the console log.
const FILE_SIZE_MARGIN: u64 = 256 << 20;

/// The applied protections, and their record (opened while the run directory was in view).
pub struct Jailed {
    pub protections: Protections,
    record: File,
}

impl Jailed {
    /// Rewrites `protections.json` with what is applied now.
    pub fn write_record(&self) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(&self.protections).expect("protections always serialize");
        self.record.set_len(0).and_then(|()| self.record.write_all_at(&json, 0)).map_err(|e| format!("write protections.json: {e}"))
    }
}

/// The jail's first half: validate, close inherited descriptors, clear the environment,
/// join the cgroup. What must run in the host's namespaces (the network gateway) starts
/// between this and `enclose`.
pub fn prepare(spec: &VmSpec) -> Result<Jailed, String> {
    // Files the shim creates in the jail are not writable by others, whatever the caller's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let mut applied = Protections::default();
    close_inherited_fds();
    applied.inherited_fds_closed = true;
    for (key, _) in std::env::vars_os() {
        // SAFETY: the only other thread, the watchdog, never reads the environment, so
        // nothing reads it concurrently.
        unsafe { std::env::remove_var(key) };
    }
    applied.environment_cleared = true;
    for step in spec.jail.turned_off() {
        eprintln!("boxlite-shim: WARNING: protection {step} is turned off (debugging only)");
    }
    if spec.jail.cgroups {
        applied.cgroups = join_cgroup(spec)?;
    }
    let record = File::create(spec.protections_file()).map_err(|e| format!("create {}: {e}", spec.protections_file().display()))?;
    let jailed = Jailed { protections: applied, record };
    // Recorded now too, so that the library removes the cgroups if a later step fails.
    jailed.write_record()?;
    Ok(jailed)
}

/// The jail's second half, first part: namespaces and pivot_root, rlimits. What must start
/// inside the jail but before the privileges go (the volumes' servers) starts between this
/// and `restrict`.
pub fn enclose(spec: &VmSpec, jailed: &mut Jailed) -> Result<(), String> {
    let applied = &mut jailed.protections;
    if spec.jail.namespaces {
        let mounts = jail_root::plan(spec)?;
        applied.namespaces = jail_root::enter(spec, &mounts)?;
        applied.jail_mounts = mounts.into_iter().map(|m| m.path).collect();
    }
    if spec.jail.rlimits {
        set_rlimit(Resource::RLIMIT_CORE, 0)?;
        set_rlimit(Resource::RLIMIT_NOFILE, NOFILE)?;
        set_rlimit(Resource::RLIMIT_FSIZE, largest_file(spec)?)?;
        applied.rlimits = true;
    }
    Ok(())
}

/// The jail's second half, second part: the VM's own uid, no_new_privs (seccomp comes from
/// the engine).
pub fn restrict(spec: &VmSpec, jailed: &mut Jailed) -> Result<(), String> {
    let applied = &mut jailed.protections;
    if spec.jail.drop_privileges {
        applied.uid = drop_privileges(spec)?;
        if applied.uid.is_some() && spec.engine == EngineKind::Krun && !spec.shares.is_empty() {
            // libkrun's virtio-fs server opens /proc/self/fd as this uid: after setresuid the
            // process is not dumpable, which makes its /proc entries root's. RLIMIT_CORE 0
            // keeps the guest's memory out of any core file, and no policy allows ptrace.
            nix::sys::prctl::set_dumpable(true).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
        }
    }
    if spec.jail.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
        applied.no_new_privs = true;
    }
    jailed.write_record()?;
    eprintln!("boxlite-shim: protections: {:?}", jailed.protections);
    Ok(())
}

/// The largest file the VMM has a reason to write: its biggest writable disk, plus a margin.
/// A guest that fills its console log past it ends its own VM (SIGXFSZ), not the host's disk.
fn largest_file(spec: &VmSpec) -> Result<u64, String> {
    let mut largest = 0;
    for disk in spec.disks.iter().filter(|d| !d.read_only) {
        let size = match disk.format {
            DiskFormat::Raw => std::fs::metadata(&disk.path).map_err(|e| format!("stat {}: {e}", disk.path.display()))?.len(),
            // The virtual size, plus an eighth for qcow2's tables.
            DiskFormat::Qcow2 => match crate::qcow2::read_header(&disk.path)? {
                Some(header) => header.virtual_size / 8 * 9,
                None => return Err(format!("{} is not a qcow2 image", disk.path.display())),
            },
        };
        largest = largest.max(size);
    }
    Ok(largest + FILE_SIZE_MARGIN)
}

/// Switches to the VM's own uid and gid (`JAIL_ID_BASE`), after handing it the files the
/// VMM writes: its directory with the console log and sockets, and the writable disks. Root
/// keeps nothing: every capability goes with the uid. A shim that does not run as root has
/// no privileges to drop.
fn drop_privileges(spec: &VmSpec) -> Result<Option<u32>, String> {
    if !Uid::effective().is_root() {
        eprintln!("boxlite-shim: running as uid {}: no privileges to drop", Uid::effective());
        return Ok(None);
    }
    let id = JAIL_ID_BASE + std::process::id();
    let (uid, gid) = (Uid::from_raw(id), Gid::from_raw(id));
    let mut owned: Vec<PathBuf> = vec![spec.vmm_dir()];
    let entries = std::fs::read_dir(spec.vmm_dir()).map_err(|e| format!("read {}: {e}", spec.vmm_dir().display()))?;
    owned.extend(entries.flatten().map(|entry| entry.path()));
    owned.extend(spec.disks.iter().filter(|d| !d.read_only).map(|d| d.path.clone()));
    for path in &owned {
        nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {} to {id}: {e}", path.display()))?;
    }
    // Hardware acceleration opens /dev/kvm, usually root:kvm 0660: keep that one group.
    let mut groups = Vec::new();
    if spec.uses_dev_kvm() {
        use std::os::unix::fs::MetadataExt;
        if let Ok(kvm) = std::fs::metadata("/dev/kvm") {
            groups.push(Gid::from_raw(kvm.gid()));
        }
    }
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid({id}): {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid({id}): {e}"))?;
    Ok(Some(id))
}

/// Closes every descriptor but stdin (the watchdog), stdout (status) and stderr (log): a
/// library user's process may have leaked descriptors without O_CLOEXEC into ours.
fn close_inherited_fds() {
    // SAFETY: called first in the jail, before the shim opens a descriptor of its own (its
    // tokio runtime starts later, in the engine): everything from 3 up was inherited, and
    // nothing in this process owns it.
    unsafe { sys::close_fds_from(3) };
}

fn set_rlimit(resource: Resource, value: u64) -> Result<(), String> {
    setrlimit(resource, value, value).map_err(|e| format!("setrlimit({resource:?}, {value}): {e}"))
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
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "create cgroup {}: {e}; a per-VM cgroup needs root or a delegated cgroup subtree \
             (systemd Delegate=yes), or (debugging only) turn the cgroups protection off",
            dir.display()
        )),
        Err(e) => Err(format!("create cgroup {}: {e}", dir.display())),
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("write {value:?} to {}: {e}", file.display()))
}
