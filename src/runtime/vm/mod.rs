//! Booting a VM through boxlite-shim and holding on to it: the shim process, its exit, the
//! agent connection, and the clean-up of every process, socket and cgroup it leaves.
//!
//! The shim reads the spec as one JSON line on stdin and keeps reading: stdin reaching EOF
//! means this process is gone (the kernel closes our end when we die, however we die), and a
//! non-detached shim then tears its VM down. That is the watchdog pipe; unlike
//! PR_SET_PDEATHSIG it does not fire when merely the spawning thread exits.
//!
//! Here: the options, the `Vm` handle and its agent link. Booting is in `spawn`, attaching
//! to a detached VM in `attach`, watching the shim end in `supervise`, and the logs quoted
//! in errors in `logs`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_protocol::agent::PingResponse;
use boxlite_protocol::{AGENT_HOST_PORT, AGENT_VSOCK_PORT, CONSOLE_AGENT_AWAITS_HOST};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, watch};

use crate::runtime::agent::AgentClient;
use crate::runtime::cgroups;
use crate::runtime::engine::{self, EngineChoice, EngineKind, HostVirtualization};
use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_MESSAGE};
use crate::runtime::exec::{ExecCommand, ExecCounters, ExecMetrics, ExecOutput, Execution};
use crate::runtime::helpers;
use crate::runtime::network::{BoundForward, NetworkOptions, NetworkStats};
use crate::runtime::spec::{self, DiskFormat, DiskSpec, JailOptions, Protections, ShimEvent, VmSpec};
use crate::runtime::volumes::{self, Volume};

mod attach;
mod logs;
mod spawn;
mod supervise;

pub use attach::AttachInfo;
pub use logs::log_tail;
use logs::shim_exited_error;
pub(crate) use supervise::shim_running;
use supervise::wait_exit;
pub use supervise::ShimExit;

/// How long a failed agent call waits for the shim's exit before blaming the agent.
const SHIM_EXIT_SETTLE: Duration = Duration::from_millis(300);
/// Deadline of an ordinary agent call.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIN_MEMORY_MIB: u32 = 64;

/// How to boot a VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub engine: EngineChoice,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The VM's run directory (console.log, shim.log, pid files, sockets). Created if missing.
    pub run_dir: PathBuf,
    /// The disk the guest mounts as the processes' root (ext4). Without one, processes run
    /// in the initramfs, which holds only the agent.
    pub root_disk: Option<RootDisk>,
    /// Explicit helper paths; `None` means the usual search (see `helpers`).
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub shim: Option<PathBuf>,
    /// Appended to the kernel command line (e.g. `rdinit=/other` for debugging).
    pub extra_cmdline: String,
    /// From spawning the shim to the agent's first answer.
    pub boot_timeout: Duration,
    /// Keep the VM running after this process exits (a later runtime can attach to it).
    pub detached: bool,
    /// The shim's protections; all on unless turned off (for debugging only).
    pub jail: JailOptions,
    /// The VM's network. `VmOptions::new` gives none (a bare VM); boxes default to outbound.
    pub network: NetworkOptions,
    /// Host directories shared into the VM (docs/volumes.md); none by default.
    pub volumes: Vec<Volume>,
    /// Directories no volume may overlap, besides the run directory (a box adds its
    /// runtime's home: the boxes and the image store).
    pub protected_dirs: Vec<PathBuf>,
}

impl VmOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> VmOptions {
        VmOptions {
            engine: EngineChoice::Auto,
            vcpus: 1,
            memory_mib: 256,
            run_dir: run_dir.into(),
            root_disk: None,
            kernel: None,
            initramfs: None,
            shim: None,
            extra_cmdline: String::new(),
            boot_timeout: Duration::from_secs(30),
            detached: false,
            jail: JailOptions::default(),
            network: NetworkOptions::none(),
            volumes: Vec::new(),
            protected_dirs: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        validate_resources(self.vcpus, self.memory_mib)?;
        self.network.validate()?;
        if self.boot_timeout.is_zero() {
            return Err(Error::InvalidOption { field: "boot_timeout", reason: "must be more than zero".into() });
        }
        if self.jail.drop_privileges && !self.jail.namespaces {
            return Err(Error::InvalidOption {
                field: "jail",
                reason: "drop_privileges needs namespaces: outside the jail the VM's own uid cannot reach files under \
                         private directories (e.g. ~/.cache/boxlite); turn drop_privileges off too"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Checks vCPUs (1 to the host's cores) and memory (64 MiB to the host's memory): the one
/// place both VM options and box options are checked.
pub(crate) fn validate_resources(vcpus: u8, memory_mib: u32) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if vcpus == 0 || usize::from(vcpus) > cores {
        return Err(Error::InvalidOption { field: "vcpus", reason: format!("{vcpus} vCPUs asked for; this host allows 1 to {cores}") });
    }
    let host_mib = host_memory_mib();
    if memory_mib < MIN_MEMORY_MIB || host_mib.is_some_and(|m| u64::from(memory_mib) > m) {
        return Err(Error::InvalidOption {
            field: "memory_mib",
            reason: format!(
                "{memory_mib} MiB asked for; a box needs {MIN_MEMORY_MIB} MiB to {} MiB (the host's memory)",
                host_mib.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            ),
        });
    }
    Ok(())
}

fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// An ext4 image to mount as the box's root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootDisk {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// Mount it read-only (several VMs may then share one image).
    pub read_only: bool,
}

/// When the boot reached each stage, measured from spawning the shim.
#[derive(Debug, Clone, PartialEq)]
pub struct BootTimings {
    /// The shim reported the VMM running the VM (qemu spawned; krun_start_enter entered).
    pub vm_running: Duration,
    /// The agent answered its first Ping.
    pub first_ping: Duration,
    /// The guest's side of the boot, step by step on its own clock, as the agent reports it
    /// (untrusted: bounded, and cut at the first malformed step): "kernel" (kernel start to
    /// the agent's start), the agent's steps, and "first_ping". Empty for a reattached VM.
    pub guest_steps: Vec<GuestBootStep>,
}

/// One step of the guest's boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBootStep {
    /// The agent's name for it: "kernel", "pseudo_file_systems", "network", "root", ...
    pub name: String,
    /// From the end of the step before it (the first: from the kernel's start).
    pub took: Duration,
}

/// The most guest boot steps taken from a Ping, and the longest name of one.
const MAX_BOOT_STEPS: usize = 16;
const MAX_BOOT_STEP_NAME: usize = 32;

/// The guest's boot steps in the agent's first Ping answer, as durations, ending with the
/// Ping itself. Stops at the first step with a malformed name or a time before the last.
pub(crate) fn guest_boot_steps(pong: &PingResponse) -> Vec<GuestBootStep> {
    let ends = pong.boot_steps.iter().map(|step| (step.name.as_str(), step.uptime_us));
    let mut steps = Vec::new();
    let mut previous = 0;
    for (name, at) in ends.chain(std::iter::once(("first_ping", pong.first_ping_uptime_us))).take(MAX_BOOT_STEPS) {
        let well_named = !name.is_empty()
            && name.len() <= MAX_BOOT_STEP_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_named || at < previous {
            break;
        }
        steps.push(GuestBootStep { name: name.to_string(), took: Duration::from_micros(at - previous) });
        previous = at;
    }
    steps
}
/// A running VM and its agent connection. A non-detached VM is killed once the `Vm` and
/// every execution started in it are dropped.
pub struct Vm {
    spec: Arc<VmSpec>,
    shim_pid: u32,
    vmm_pid: u32,
    helper_pids: Vec<u32>,
    /// The port forwards as bound on the host (requested port 0 resolved).
    forwards: Vec<BoundForward>,
    link: Link,
    first_ping: PingResponse,
    timings: BootTimings,
    exec_counters: Arc<ExecCounters>,
    exit: watch::Receiver<Option<ShimExit>>,
    kill: mpsc::UnboundedSender<()>,
}

/// An agent connection plus what turns its failures into the right error: a shim that has
/// died is reported as such (with its logs), not as a broken pipe. Shared by the VM and its
/// executions.
#[derive(Clone)]
pub(crate) struct Link {
    pub agent: AgentClient,
    exit: watch::Receiver<Option<ShimExit>>,
    spec: Arc<VmSpec>,
    /// An execution keeps its VM alive, as a child handle keeps its parent.
    _lifeline: Arc<Lifeline>,
}

/// What keeps a non-detached VM running: held by the `Vm` and by every execution's `Link`;
/// when the last holder goes, the VM is killed.
struct Lifeline {
    kill: mpsc::UnboundedSender<()>,
    detached: bool,
    /// Our end of the watchdog pipe; closing it tells a non-detached shim to stop.
    _watchdog: Option<ChildStdin>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.kill.send(());
        }
    }
}

impl Link {
    /// A link to an agent that no shim of ours runs (a test's fake agent): its exit never
    /// comes, and there is no VM to keep alive.
    pub(crate) fn unsupervised(agent: AgentClient) -> Link {
        // The sender goes at once: `call` then never waits for an exit.
        let (_, exit) = watch::channel(None);
        let (kill, _) = mpsc::unbounded_channel();
        let spec = VmSpec {
            engine: EngineKind::Qemu,
            hardware_acceleration: false,
            kernel: PathBuf::new(),
            initramfs: PathBuf::new(),
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: MIN_MEMORY_MIB,
            disks: Vec::new(),
            host_to_guest_ports: Vec::new(),
            guest_to_host_ports: Vec::new(),
            run_dir: PathBuf::new(),
            qemu: None,
            vhost_vsock: None,
            virtiofsd: None,
            detached: true,
            jail: JailOptions::default(),
            network: None,
            shares: Vec::new(),
        };
        let lifeline = Arc::new(Lifeline { kill, detached: true, _watchdog: None });
        Link { agent, exit, spec: Arc::new(spec), _lifeline: lifeline }
    }

    fn exit_status(&self) -> Option<ShimExit> {
        self.exit.borrow().clone()
    }

    /// Runs an agent call; a shim that is dead, or dies meanwhile, becomes that error.
    pub async fn call<T, E: std::fmt::Display>(
        &self,
        rpc: &'static str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T> {
        if let Some(e) = self.exit_status() {
            return Err(shim_exited_error(&self.spec, &e));
        }
        let mut exit = self.exit.clone();
        let failed = tokio::select! {
            result = call => match result {
                Ok(value) => return Ok(value),
                // A ttrpc status carries the agent's own message, of any length.
                Err(cause) => quoted(&cause.to_string(), MAX_QUOTED_MESSAGE),
            },
            Ok(e) = exit.wait_for(Option::is_some) => {
                let e = e.clone().expect("waited for Some");
                return Err(shim_exited_error(&self.spec, &e));
            }
        };
        // The connection usually breaks a moment before the shim's exit is reaped and
        // published: a call that fails because the VM is dying reports the VM's death.
        match wait_exit(&self.exit, SHIM_EXIT_SETTLE).await {
            Some(e) => Err(shim_exited_error(&self.spec, &e)),
            None => Err(Error::Agent { rpc, cause: failed }),
        }
    }
}
impl Vm {
    /// The port forwards as the shim bound them on the host (a requested port 0 resolved).
    pub fn forwarded_ports(&self) -> &[BoundForward] {
        &self.forwards
    }

    /// The network gateway's figures, read from the file it rewrites (None: no network
    /// device, or no figures written yet).
    pub fn network_stats(&self) -> Option<NetworkStats> {
        self.spec.network.as_ref()?;
        // The gateway rewrites the file in place; a read that races a rewrite is retried.
        (0..3).find_map(|_| std::fs::read(self.spec.network_stats_file()).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    pub fn engine(&self) -> EngineKind {
        self.spec.engine
    }

    pub fn shim_pid(&self) -> u32 {
        self.shim_pid
    }

    /// qemu's pid for the qemu engine; the shim's own pid for krun (libkrun runs in it).
    pub fn vmm_pid(&self) -> u32 {
        self.vmm_pid
    }

    /// Other processes the shim runs for this VM (the vsock backend for qemu).
    pub fn helper_pids(&self) -> &[u32] {
        &self.helper_pids
    }

    /// Every host process of this VM: shim, VMM, helpers (deduplicated).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.shim_pid, self.vmm_pid];
        pids.extend(&self.helper_pids);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub fn timings(&self) -> BootTimings {
        self.timings.clone()
    }

    /// The agent's answer to the Ping that ended the boot.
    pub fn first_ping(&self) -> &PingResponse {
        &self.first_ping
    }

    pub fn console_log(&self) -> PathBuf {
        self.spec.console_log()
    }

    /// Follows the shim's exit (None until it ends).
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<ShimExit>> {
        self.exit.clone()
    }

    /// How the shim ended, if it has.
    pub fn exit_status(&self) -> Option<ShimExit> {
        self.exit.borrow().clone()
    }

    /// Waits for the shim to end, up to `timeout`.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ShimExit> {
        wait_exit(&self.exit, timeout).await
    }

    /// The connection to the agent, shared with executions and copies.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    pub async fn ping(&self) -> Result<PingResponse> {
        self.link.call("Ping", self.link.agent.ping(RPC_TIMEOUT)).await
    }

    /// Starts a process in the VM. See [`Execution`] for its streams and status.
    pub async fn exec(&self, command: ExecCommand) -> Result<Execution> {
        Execution::start(self.link.clone(), self.exec_counters.clone(), command).await
    }

    /// Starts a process, counting it in `counters` (a box's, which outlive its VMs).
    pub(crate) async fn exec_counted(&self, command: ExecCommand, counters: Arc<ExecCounters>) -> Result<Execution> {
        Execution::start(self.link.clone(), counters, command).await
    }

    /// Guest CPU, memory and uptime, as the agent reports them.
    pub async fn guest_stats(&self) -> Result<crate::runtime::agent::GuestStats> {
        self.link.call("Stats", self.link.agent.stats(RPC_TIMEOUT)).await
    }

    /// Runs a process to completion and collects its output and status.
    pub async fn exec_output(&self, command: ExecCommand) -> Result<ExecOutput> {
        self.exec(command.no_stdin()).await?.output().await
    }

    /// Counters of this VM's executions so far.
    pub fn exec_metrics(&self) -> ExecMetrics {
        self.exec_counters.snapshot()
    }

    /// Asks the agent to sync and power off, then waits up to `grace` for the VM to end;
    /// past that the shim is killed. Returns how the shim ended (see [`Vm::kill`]).
    pub async fn shutdown(&self, grace: Duration) -> Result<Option<ShimExit>> {
        let asked = self.link.call("Shutdown", self.link.agent.shutdown(RPC_TIMEOUT)).await;
        let exited = match wait_exit(&self.exit, grace).await {
            Some(e) => Some(e),
            None => self.kill_and_wait().await,
        };
        asked.map(|()| exited)
    }

    /// Kills the VM at once (SIGKILL to the shim; qemu and its helpers die with it).
    /// `None` only if the async runtime is shutting down and the shim's supervisor is gone.
    pub async fn kill(&self) -> Option<ShimExit> {
        self.kill_and_wait().await
    }

    async fn kill_and_wait(&self) -> Option<ShimExit> {
        let _ = self.kill.send(());
        let mut exit = self.exit.clone();
        let exited = exit.wait_for(Option::is_some).await.map(|e| e.clone());
        exited.ok().flatten()
    }
}
/// VmRSS of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use boxlite_protocol::agent::BootStep;

    use super::*;

    fn pong(steps: &[(&str, u64)], first_ping_us: u64) -> PingResponse {
        let boot_steps = steps.iter().map(|&(name, uptime_us)| BootStep { name: name.into(), uptime_us, ..Default::default() }).collect();
        PingResponse { boot_steps, first_ping_uptime_us: first_ping_us, ..Default::default() }
    }

    fn named(steps: &[GuestBootStep]) -> Vec<(&str, u64)> {
        steps.iter().map(|s| (s.name.as_str(), s.took.as_micros() as u64)).collect()
    }

    #[test]
    fn guest_boot_steps_are_durations_ending_with_the_first_ping() {
        let steps = guest_boot_steps(&pong(&[("kernel", 300), ("network", 350), ("root", 500)], 800));
        assert_eq!(named(&steps), [("kernel", 300), ("network", 50), ("root", 150), ("first_ping", 300)]);
    }

    #[test]
    fn a_hostile_agents_boot_steps_are_bounded_and_cut_at_the_first_bad_one() {
        let many: Vec<(String, u64)> = (0..1000).map(|i| (format!("s{i}"), i)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(guest_boot_steps(&pong(&many, 5000)).len(), MAX_BOOT_STEPS);
        let long = "x".repeat(MAX_BOOT_STEP_NAME + 1);
        assert_eq!(named(&guest_boot_steps(&pong(&[("kernel", 10), (&long, 20)], 30))), [("kernel", 10)]);
        assert_eq!(named(&guest_boot_steps(&pong(&[("kernel", 10), ("a\nb", 20)], 30))), [("kernel", 10)]);
        assert_eq!(named(&guest_boot_steps(&pong(&[("kernel", 10), ("back", 5)], 30))), [("kernel", 10)]);
        assert_eq!(named(&guest_boot_steps(&pong(&[("kernel", 10)], 5))), [("kernel", 10)], "a first Ping before the last step");
    }
}
