//! The VM spec: everything the shim needs to run one VM, sent to it as JSON on stdin, and
//! the events the shim reports back as JSON lines on stdout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;
use crate::network::{BoundForward, NetworkSpec};

/// The guest CID both engines give the VM (vhost-device-vsock and libkrun both use 3).
pub const GUEST_CID: u32 = 3;

/// Each jailed VM runs as uid = gid = this + its shim's pid: unique among running VMs,
/// outside the ranges of login users and system accounts, with no name in /etc/passwd.
pub const JAIL_ID_BASE: u32 = 1_000_000_000;

/// The shim's record of the protections it applied, in the run directory.
pub const PROTECTIONS_FILE: &str = "protections.json";

/// Largest spec the shim accepts on stdin.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmSpec {
    pub engine: EngineKind,
    /// For qemu: use `-accel kvm` (hardware KVM usable) instead of `-accel tcg`.
    pub hardware_acceleration: bool,
    /// ELF vmlinux (both engines take the same file).
    pub kernel: PathBuf,
    /// Uncompressed cpio whose /init is boxlite-guest.
    pub initramfs: PathBuf,
    /// The whole kernel command line (engine-specific console and tuning included).
    pub cmdline: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub disks: Vec<DiskSpec>,
    /// Guest vsock ports the host connects to (the agent's port first).
    pub host_to_guest_ports: Vec<u32>,
    /// Host vsock ports the guest connects to; the host listens on `guest_to_host_socket`.
    pub guest_to_host_ports: Vec<u32>,
    /// The box's run directory: shim.log, pid files, protections.json, and `vmm/` (console.log
    /// and sockets: the only part of it the jailed VMM sees, see `vmm_dir`).
    pub run_dir: PathBuf,
    /// Programs the qemu engine runs (absolute paths, resolved by the library).
    pub qemu: Option<PathBuf>,
    pub vhost_vsock: Option<PathBuf>,
    /// The virtio-fs server for the qemu engine's shares (one process per share).
    #[serde(default)]
    pub virtiofsd: Option<PathBuf>,
    /// Keep running when the library's process goes away (stdin closing is then no signal).
    pub detached: bool,
    /// Which of the shim's protections are on (all, unless turned off for debugging).
    #[serde(default)]
    pub jail: JailOptions,
    /// The network device and its gateway; None: no device but the guest's loopback.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// Host directories shared into the guest with virtio-fs (docs/volumes.md), in the
    /// order the guest's command line names their tags.
    #[serde(default)]
    pub shares: Vec<ShareSpec>,
}

/// One host directory served to the guest over virtio-fs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareSpec {
    /// The virtio-fs tag the guest mounts (`vol0`, `vol1`, ...; at most 36 bytes).
    pub tag: String,
    /// Canonical absolute path (no symlink, no `..`): the jail binds it at this path.
    pub host_path: PathBuf,
    /// Served read-only: the server refuses writes and the jail binds it read-only.
    pub read_only: bool,
}

/// The shim's protections (docs/jailer.md). All on by default; each can be turned off only
/// explicitly, and the shim logs and records (`protections.json`) what it applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct JailOptions {
    /// A cgroup per VM (v1 or v2): memory = guest + VMM overhead, pids, cpu quota.
    pub cgroups: bool,
    /// New mount, pid, ipc, uts and net namespaces, and pivot_root into a jail directory that
    /// holds only what the engine needs.
    pub namespaces: bool,
    /// No core dumps, bounded open files and file size.
    pub rlimits: bool,
    /// Run the VMM as an unprivileged uid/gid of its own (when the shim starts as root).
    pub drop_privileges: bool,
    /// PR_SET_NO_NEW_PRIVS: no exec can gain privileges (also required by seccomp).
    pub no_new_privs: bool,
    /// seccomp filters (src/shim/seccomp/*.json) on the shim and every process it starts.
    pub seccomp: bool,
}

impl Default for JailOptions {
    fn default() -> Self {
        JailOptions { cgroups: true, namespaces: true, rlimits: true, drop_privileges: true, no_new_privs: true, seccomp: true }
    }
}

impl JailOptions {
    /// The names of the protections turned off, for warnings.
    pub fn turned_off(&self) -> Vec<&'static str> {
        let steps = [
            ("cgroups", self.cgroups),
            ("namespaces", self.namespaces),
            ("rlimits", self.rlimits),
            ("drop_privileges", self.drop_privileges),
            ("no_new_privs", self.no_new_privs),
            ("seccomp", self.seccomp),
        ];
        steps.into_iter().filter(|(_, on)| !on).map(|(name, _)| name).collect()
    }
}

/// What the shim applied, written to `protections.json` in the run directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Protections {
    /// The cgroup directories the shim put itself (and so its children) in.
    pub cgroups: Vec<PathBuf>,
    /// Namespaces the VMM processes run in, apart from the host's ("mnt", "pid", ...).
    pub namespaces: Vec<String>,
    /// What the jail's root holds (host paths bound at the same path), when pivoted.
    pub jail_mounts: Vec<PathBuf>,
    pub rlimits: bool,
    /// The uid (= gid) the VMM runs as, when privileges were dropped.
    pub uid: Option<u32>,
    pub no_new_privs: bool,
    /// seccomp policies installed: "supervisor", "qemu", "vhost_vsock", "krun" or "netgw".
    pub seccomp: Vec<String>,
    pub environment_cleared: bool,
    pub inherited_fds_closed: bool,
    /// The uid (= gid) the network gateway runs as, when privileges were dropped.
    pub network_gateway_uid: Option<u32>,
    /// The uid each share's virtio-fs server (virtiofsd) runs as: the owner of the shared
    /// directory (docs/volumes.md), in the order of `VmSpec::shares`.
    pub share_server_uids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskSpec {
    /// Stable name, also the virtio-blk serial the guest sees.
    pub id: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

/// Where the host connects to reach a guest vsock port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostToGuestEndpoint {
    pub socket: PathBuf,
    /// qemu's vhost-device-vsock multiplexes every port over one socket: the client first
    /// sends `CONNECT <port>\n` and reads `OK <host port>\n`. libkrun listens per port.
    pub connect_line: Option<String>,
}

impl VmSpec {
    /// The only part of the run directory the jailed VMM sees, and the only one it may write
    /// (owned by its uid): the console log and the sockets.
    pub fn vmm_dir(&self) -> PathBuf {
        self.run_dir.join("vmm")
    }

    /// Where the shim mounts its jail's root (in its own mount namespace; an empty directory
    /// from the host's side).
    pub fn jail_dir(&self) -> PathBuf {
        self.run_dir.join("jail")
    }

    /// Whether the VMM opens /dev/kvm (qemu with hardware acceleration, and krun always).
    pub fn uses_dev_kvm(&self) -> bool {
        self.hardware_acceleration || self.engine == EngineKind::Krun
    }

    pub fn console_log(&self) -> PathBuf {
        self.vmm_dir().join("console.log")
    }

    pub fn shim_log(&self) -> PathBuf {
        self.run_dir.join("shim.log")
    }

    pub fn shim_pid_file(&self) -> PathBuf {
        self.run_dir.join("shim.pid")
    }

    /// Where the network gateway writes its figures (`NetworkStats` as JSON).
    pub fn network_stats_file(&self) -> PathBuf {
        self.run_dir.join("network-stats.json")
    }

    pub fn protections_file(&self) -> PathBuf {
        self.run_dir.join(PROTECTIONS_FILE)
    }

    /// The vhost-user control socket between qemu and vhost-device-vsock.
    pub fn vhost_user_socket(&self) -> PathBuf {
        self.vmm_dir().join("vhost-vsock.sock")
    }

    /// The vhost-user socket between qemu and the virtio-fs server of share `index`.
    pub fn share_socket(&self, index: usize) -> PathBuf {
        self.vmm_dir().join(format!("fs-{index}.sock"))
    }

    /// The host side of the guest's vsock: connections to guest ports go through it, and
    /// (both engines) guest connections to host port P arrive on `<this>_P`.
    pub fn vsock_socket(&self) -> PathBuf {
        self.vmm_dir().join("vsock.sock")
    }

    pub fn host_to_guest(&self, port: u32) -> HostToGuestEndpoint {
        match self.engine {
            EngineKind::Qemu => HostToGuestEndpoint { socket: self.vsock_socket(), connect_line: Some(format!("CONNECT {port}\n")) },
            EngineKind::Krun => HostToGuestEndpoint { socket: self.vmm_dir().join(format!("vsock-{port}.sock")), connect_line: None },
        }
    }

    /// Where the host listens for the guest's connections to host port `port` (both engines:
    /// vhost-device-vsock's convention, which the krun shim follows).
    pub fn guest_to_host_socket(&self, port: u32) -> PathBuf {
        let mut name = self.vsock_socket().into_os_string();
        name.push(format!("_{port}"));
        PathBuf::from(name)
    }

    /// Every socket file the VM's processes may create; removed when the VM is gone.
    pub fn socket_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.vhost_user_socket(), self.vsock_socket()];
        files.extend(self.host_to_guest_ports.iter().map(|&p| self.host_to_guest(p).socket));
        files.extend((0..self.shares.len()).map(|i| self.share_socket(i)));
        files.sort();
        files.dedup();
        files
    }
}

/// Removes the VM's socket files (ignoring ones that are already gone).
pub fn remove_socket_files(spec: &VmSpec) {
    for path in spec.socket_files() {
        let _ = std::fs::remove_file(&path);
    }
    // Guest -> host listeners (`vsock.sock_<port>`) are created by whoever listens (the
    // library, or a program in the box's future); sweep them all.
    if let Ok(entries) = std::fs::read_dir(spec.vmm_dir()) {
        let prefix = format!("{}_", file_name(&spec.vsock_socket()));
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// What the shim reports on stdout, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ShimEvent {
    /// The VMM is running the guest. `vmm_pid` is qemu's pid, or the shim's own for krun.
    /// `forwards`: the port forwards as bound on the host (a requested port 0 resolved).
    VmStarted {
        vmm_pid: u32,
        helper_pids: Vec<u32>,
        #[serde(default)]
        forwards: Vec<BoundForward>,
    },
    /// The shim could not start the VM; it exits after this.
    Failed { message: String },
}
