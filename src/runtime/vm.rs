//! Booting a VM through boxlite-shim and holding on to it: the shim process, its exit, the
//! agent connection, and the clean-up of every process, socket and cgroup it leaves.
//!
//! The shim reads the spec as one JSON line on stdin and keeps reading: stdin reaching EOF
//! means this process is gone (the kernel closes our end when we die, however we die), and a
//! non-detached shim then tears its VM down. That is the watchdog pipe; unlike
//! PR_SET_PDEATHSIG it does not fire when merely the spawning thread exits.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_protocol::agent::PingResponse;
use boxlite_protocol::{AGENT_HOST_PORT, AGENT_VSOCK_PORT};
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
use crate::runtime::spec::{self, DiskFormat, DiskSpec, JailOptions, Protections, ShimEvent, VmSpec};

/// Longest status line the shim may print; a longer one is an error, not an allocation.
const MAX_SHIM_LINE: usize = 64 * 1024;
/// Lines of console.log / shim.log quoted in errors.
const LOG_TAIL_LINES: usize = 20;
/// How much of the end of a log an error's quote is taken from.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// The longest log line an error quotes, in chars.
const LOG_TAIL_LINE_CHARS: usize = 300;
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
        }
    }

    fn validate(&self) -> Result<()> {
        validate_resources(self.vcpus, self.memory_mib)?;
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootTimings {
    /// The shim reported the VMM running the VM (qemu spawned; krun_start_enter entered).
    pub vm_running: Duration,
    /// The agent answered its first Ping.
    pub first_ping: Duration,
}

/// How the shim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimExit {
    /// `None` for a shim this process attached to (not its child: no status to collect).
    pub status: Option<ExitStatus>,
}

impl ShimExit {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for ShimExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self.status.map(|s| (s, s.code(), s.signal())) {
            Some((_, Some(code), _)) => write!(f, "exit code {code}"),
            Some((_, None, Some(libc::SIGSYS))) => {
                write!(f, "killed by SIGSYS: a system call outside its seccomp policy (docs/seccomp.md; `dmesg | grep type=1326` names it)")
            }
            Some((_, None, Some(signal))) => write!(f, "killed by signal {signal}"),
            Some((status, _, _)) => write!(f, "{status}"),
            None => write!(f, "exited (an attached shim: its status is its parent's to collect)"),
        }
    }
}

/// What a detached VM's box keeps (`vm.json`) so that a later runtime can attach to it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    pub spec: VmSpec,
    pub shim_pid: u32,
    pub vmm_pid: u32,
    pub boot_id: String,
}

/// A running VM and its agent connection. A non-detached VM is killed once the `Vm` and
/// every execution started in it are dropped.
pub struct Vm {
    spec: Arc<VmSpec>,
    shim_pid: u32,
    vmm_pid: u32,
    helper_pids: Vec<u32>,
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
            detached: true,
            jail: JailOptions::default(),
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
    /// Boots a VM and waits until its agent answers a Ping.
    pub async fn boot(options: VmOptions) -> Result<Vm> {
        options.validate()?;
        let choice = EngineChoice::with_env_override(options.engine)?;
        let host = HostVirtualization::detect();
        let engine = choice.resolve(&host)?;
        let spec = build_spec(&options, engine, host.hardware_kvm())?;
        if spec.jail != JailOptions::default() {
            let off = spec.jail.turned_off().join(", ");
            tracing::warn!(run_dir = %spec.run_dir.display(), "booting with protections turned off (debugging only): {off}");
        }
        Self::boot_spec(spec, options.shim.as_deref(), options.boot_timeout).await
    }

    async fn boot_spec(spec: VmSpec, shim: Option<&Path>, timeout: Duration) -> Result<Vm> {
        let shim = helpers::shim(shim)?;
        prepare_run_dir(&spec)?;
        let started = Instant::now();
        let deadline = started + timeout;
        let shim_log = std::fs::File::create(spec.shim_log())
            .map_err(|e| Error::io(format!("create {}", spec.shim_log().display()), e))?;
        // Listen for the agent before the VM exists, so that its first dial reaches us.
        let ready_socket = spec.guest_to_host_socket(AGENT_HOST_PORT);
        let ready = UnixListener::bind(&ready_socket)
            .map_err(|e| Error::io(format!("listen on {}", ready_socket.display()), e))?;
        let mut child = Command::new(&shim)
            // The application's environment (API keys, tokens) stays out of the VM's processes.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            // Its own process group: a Ctrl-C meant for the application does not hit the VM
            // directly; the watchdog pipe decides its fate.
            .process_group(0)
            .kill_on_drop(!spec.detached)
            .spawn()
            .map_err(|e| Error::io(format!("spawn {}", shim.display()), e))?;
        let shim_pid = child.id().unwrap_or(0);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (exit, kill) = supervise(child, spec.clone());
        let mut guard = KillOnError { kill: Some(kill.clone()), exit: exit.clone() };

        let mut line = serde_json::to_vec(&spec).expect("a VmSpec always serializes");
        line.push(b'\n');
        // A shim that died at once shows up below with its log; a write error alone says less.
        let _ = stdin.write_all(&line).await;
        let watchdog = if spec.detached { None } else { Some(stdin) };

        let mut events = BufReader::new(stdout);
        let started_event = tokio::select! {
            event = next_event(&mut events) => event,
            _ = tokio::time::sleep_until(deadline.into()) => Err(format!("the shim did not start the VM within {timeout:?}")),
        };
        let (vmm_pid, helper_pids) = match started_event {
            Ok(ShimEvent::VmStarted { vmm_pid, helper_pids }) => (vmm_pid, helper_pids),
            // The shim hosts the VMM (krun): its words are bounded like the guest's.
            Ok(ShimEvent::Failed { message }) => return Err(Error::ShimFailed { message: quoted(&message, MAX_QUOTED_MESSAGE) }),
            Err(reason) => {
                let exited = wait_exit(&exit, Duration::from_secs(1)).await;
                return Err(match exited {
                    Some(e) => shim_exited_error(&spec, &e),
                    None => Error::ShimFailed { message: reason },
                });
            }
        };
        let vm_running = started.elapsed();
        // For the operator (docs/jailer.md); the jailed shim cannot write outside vmm/.
        let _ = std::fs::write(spec.run_dir.join("vmm.pid"), format!("{vmm_pid}\n"));
        // Keep draining the shim's stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while next_event(&mut events).await.is_ok() {} });

        // The agent dials the host's ready port once it serves; wait for that connection.
        let waiting = format!("the agent never connected to {}", ready_socket.display());
        let mut shim_exit = exit.clone();
        let accepted = tokio::select! {
            accepted = ready.accept() => accepted.map(|(stream, _)| stream).map_err(|e| format!("accept on {}: {e}", ready_socket.display())),
            _ = tokio::time::sleep_until(deadline.into()) => Err(waiting),
            Ok(_) = shim_exit.wait_for(Option::is_some) => Err("the shim exited".into()),
        };
        drop(ready);
        let _ = std::fs::remove_file(&ready_socket);
        let pinged = match accepted {
            Ok(stream) => {
                let agent = AgentClient::over(stream);
                let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
                match agent.ping(remaining).await {
                    Ok(pong) => Ok((agent, pong)),
                    Err(e) => Err(format!("ping: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        let (agent, first_ping) = match pinged {
            Ok(connected) => connected,
            Err(last_error) => {
                if let Some(e) = wait_exit(&exit, Duration::from_millis(100)).await {
                    return Err(shim_exited_error(&spec, &e));
                }
                return Err(Error::AgentTimeout {
                    timeout,
                    last_error,
                    console: spec.console_log(),
                    console_tail: log_tail(&spec.console_log()),
                });
            }
        };
        let timings = BootTimings { vm_running, first_ping: started.elapsed() };
        guard.kill = None;
        let spec = Arc::new(spec);
        let lifeline = Arc::new(Lifeline { kill: kill.clone(), detached: spec.detached, _watchdog: watchdog });
        let link = Link { agent, exit: exit.clone(), spec: spec.clone(), _lifeline: lifeline };
        Ok(Vm {
            spec,
            shim_pid,
            vmm_pid,
            helper_pids,
            link,
            first_ping,
            timings,
            exec_counters: Arc::default(),
            exit,
            kill,
        })
    }

    /// Reconnects to a detached VM that another runtime booted: checks that its shim still
    /// runs, follows it through a pidfd, and pings its agent, which must answer with the
    /// boot id recorded at boot (the socket could otherwise lead to another VM).
    pub async fn attach(info: AttachInfo) -> Result<Vm> {
        if !shim_running(info.shim_pid) {
            return Err(Error::NotFound { what: format!("the shim (pid {}) of the detached VM", info.shim_pid) });
        }
        let (exit, kill) = supervise_attached(info.shim_pid, info.spec.clone())?;
        let endpoint = info.spec.host_to_guest(AGENT_VSOCK_PORT);
        let agent = AgentClient::connect(&endpoint, RPC_TIMEOUT).await.map_err(|cause| Error::Agent { rpc: "connect", cause })?;
        let first_ping = agent.ping(RPC_TIMEOUT).await.map_err(|cause| Error::Agent { rpc: "Ping", cause })?;
        if first_ping.boot_id != info.boot_id {
            return Err(Error::InvalidState {
                what: format!("the VM behind {}", endpoint.socket.display()),
                reason: "it answered with another boot id: it is not the VM this box started".into(),
            });
        }
        let spec = Arc::new(info.spec);
        let lifeline = Arc::new(Lifeline { kill: kill.clone(), detached: true, _watchdog: None });
        let link = Link { agent, exit: exit.clone(), spec: spec.clone(), _lifeline: lifeline };
        Ok(Vm {
            spec,
            shim_pid: info.shim_pid,
            vmm_pid: info.vmm_pid,
            helper_pids: Vec::new(),
            link,
            first_ping,
            timings: BootTimings { vm_running: Duration::ZERO, first_ping: Duration::ZERO },
            exec_counters: Arc::default(),
            exit,
            kill,
        })
    }

    /// What a later runtime needs to attach to this VM.
    pub fn attach_info(&self) -> AttachInfo {
        AttachInfo { spec: (*self.spec).clone(), shim_pid: self.shim_pid, vmm_pid: self.vmm_pid, boot_id: self.first_ping.boot_id.clone() }
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
        self.timings
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
        self.exec(command).await?.output().await
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

/// Kills the shim if the boot fails after it was spawned.
struct KillOnError {
    kill: Option<mpsc::UnboundedSender<()>>,
    exit: watch::Receiver<Option<ShimExit>>,
}

impl Drop for KillOnError {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            if self.exit.borrow().is_none() {
                let _ = kill.send(());
            }
        }
    }
}

/// Owns the shim's `Child`: waits for it, kills it on request, publishes its exit, and then
/// removes what a SIGKILLed shim leaves: the VM's socket files and its cgroups.
fn supervise(child: Child, spec: VmSpec) -> (watch::Receiver<Option<ShimExit>>, mpsc::UnboundedSender<()>) {
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<()>();
    let shim_pid = child.id().unwrap_or(0);
    let mut shim = Supervised { child, shim_pid, spec: Some(spec) };
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                status = shim.child.wait() => break status,
                Some(()) = kill_rx.recv() => { let _ = shim.child.start_kill(); }
            }
        };
        let spec = shim.spec.take().expect("the spec is taken once, here or on drop");
        let status = match status {
            Ok(status) => status,
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(libc::SIGKILL)
            }
        };
        if !spec.detached {
            spec::remove_socket_files(&spec);
        }
        // After a clean exit they are empty now (the shim waits for its children); after a
        // SIGKILL the VM's processes are still exiting: those are retried off this task, so
        // that the exit is published at once.
        let left = cgroups::remove(&cgroups::of_shim(shim_pid, &recorded_cgroups(&spec)), Duration::ZERO);
        let _ = exit_tx.send(Some(ShimExit { status: Some(status) }));
        remove_cgroups_later(left.into_iter().map(|(dir, _)| dir).collect());
    });
    (exit_rx, kill_tx)
}

/// The shim being supervised. If the supervising task is dropped before the shim ended (its
/// async runtime shut down), this kills a non-detached shim (as the `Child`'s kill_on_drop
/// would) and removes its cgroups once its VM has gone.
struct Supervised {
    child: Child,
    shim_pid: u32,
    /// Taken by the task when the shim ended.
    spec: Option<VmSpec>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let Some(spec) = self.spec.take() else { return };
        if spec.detached {
            return; // it keeps running, for the next runtime to attach to
        }
        let _ = self.child.start_kill();
        remove_cgroups_later(cgroups::of_shim(self.shim_pid, &recorded_cgroups(&spec)));
    }
}

/// Removes cgroups of an ended shim while its VM's processes finish exiting (bounded by
/// `cgroups::REMOVE_PATIENCE`). A thread of its own: it must not hold up the async runtime,
/// nor depend on it still running. What it cannot remove, the next runtime does.
fn remove_cgroups_later(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let removing = std::thread::Builder::new()
        .name("boxlite-cgroups".into())
        .spawn(move || cgroups::report_left(&cgroups::remove(&dirs, cgroups::REMOVE_PATIENCE)));
    if let Err(e) = removing {
        tracing::warn!("cannot start a thread to remove an ended shim's cgroups: {e}; the next runtime removes them");
    }
}

/// Follows a shim that is not our child (a detached VM another runtime started) through a
/// pidfd: publishes its end, kills it on request, and removes its cgroups once it ended.
fn supervise_attached(pid: u32, spec: VmSpec) -> Result<(watch::Receiver<Option<ShimExit>>, mpsc::UnboundedSender<()>)> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return Err(Error::io(format!("pidfd_open({pid})"), std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor nothing else owns.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) };
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
    let pidfd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::io(format!("watching shim {pid}"), std::io::Error::other(e.to_string())))?;
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = pidfd.readable() => break,
                Some(()) = kill_rx.recv() => {
                    // SAFETY: pidfd_send_signal on our pidfd: it cannot reach a reused pid.
                    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.get_ref().as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
                }
            }
        }
        let left = cgroups::remove(&cgroups::of_shim(pid, &recorded_cgroups(&spec)), Duration::ZERO);
        let _ = exit_tx.send(Some(ShimExit { status: None }));
        remove_cgroups_later(left.into_iter().map(|(dir, _)| dir).collect());
    });
    Ok((exit_rx, kill_tx))
}

/// The cgroups the shim recorded in `protections.json` (`cgroups::of_shim` checks each).
fn recorded_cgroups(spec: &VmSpec) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(spec.protections_file()) else { return Vec::new() };
    serde_json::from_slice::<Protections>(&bytes).map(|p| p.cgroups).unwrap_or_default()
}

/// Whether `pid` is a running boxlite-shim (a pid can be reused by another program).
pub(crate) fn shim_running(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("boxlite-shim")
}

async fn wait_exit(exit: &watch::Receiver<Option<ShimExit>>, timeout: Duration) -> Option<ShimExit> {
    let mut exit = exit.clone();
    let exited = tokio::time::timeout(timeout, exit.wait_for(Option::is_some)).await;
    exited.ok().and_then(|r| r.ok().and_then(|e| e.clone()))
}

/// Reads the next status line from the shim, bounded in length.
async fn next_event(events: &mut BufReader<ChildStdout>) -> Result<ShimEvent, String> {
    let mut line = Vec::new();
    let read = (&mut *events)
        .take(MAX_SHIM_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the shim's status: {e}"))?;
    match (read, line.last()) {
        (0, _) => Err("the shim closed its status pipe".into()),
        (_, Some(b'\n')) => serde_json::from_slice(&line)
            .map_err(|e| format!("unreadable shim status {:?}: {e}", quoted(&String::from_utf8_lossy(&line), MAX_QUOTED_MESSAGE))),
        _ => Err(format!("the shim printed a status line longer than {MAX_SHIM_LINE} bytes")),
    }
}

fn build_spec(options: &VmOptions, engine: EngineKind, hardware_kvm: bool) -> Result<VmSpec> {
    let (qemu, vhost_vsock) = match engine {
        EngineKind::Qemu => (Some(real_path(&helpers::qemu()?)?), Some(real_path(&helpers::vhost_vsock()?)?)),
        EngineKind::Krun => (None, None),
    };
    let mut cmdline_extra = String::new();
    let mut disks = Vec::new();
    if let Some(root) = &options.root_disk {
        if !root.path.is_file() {
            return Err(Error::InvalidOption {
                field: "root_disk",
                reason: format!("{} does not exist or is not a file", root.path.display()),
            });
        }
        disks.push(DiskSpec { id: "root".into(), path: real_path(&root.path)?, format: root.format, read_only: root.read_only });
        // The only disk, so the guest sees it as the first virtio-blk device.
        let mode = if root.read_only { "ro" } else { "rw" };
        cmdline_extra = format!("{}=/dev/vda {}={mode} ", boxlite_protocol::CMDLINE_ROOT_DEVICE, boxlite_protocol::CMDLINE_ROOT_MODE);
    }
    cmdline_extra.push_str(&options.extra_cmdline);
    let kernel = real_path(&helpers::kernel(options.kernel.as_deref())?)?;
    let initramfs = real_path(&helpers::initramfs(options.initramfs.as_deref())?)?;
    // Created last: a spec that fails leaves no directory behind.
    std::fs::create_dir_all(&options.run_dir)
        .map_err(|e| Error::io(format!("create {}", options.run_dir.display()), e))?;
    let run_dir = real_path(&options.run_dir)?;
    Ok(VmSpec {
        engine,
        hardware_acceleration: hardware_kvm,
        kernel,
        initramfs,
        cmdline: engine::kernel_cmdline(engine, hardware_kvm, AGENT_VSOCK_PORT, &cmdline_extra),
        vcpus: options.vcpus,
        memory_mib: options.memory_mib,
        disks,
        host_to_guest_ports: vec![AGENT_VSOCK_PORT],
        guest_to_host_ports: vec![AGENT_HOST_PORT],
        run_dir,
        qemu,
        vhost_vsock,
        detached: options.detached,
        jail: options.jail,
    })
}

/// The path with every symlink and `..` resolved: the jail binds each file at this path, and
/// the VMM must find it there by the same name.
fn real_path(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io(format!("resolve {}", path.display()), e))
}

fn prepare_run_dir(spec: &VmSpec) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&spec.run_dir)
        .map_err(|e| Error::io(format!("create {}", spec.run_dir.display()), e))?;
    // Owner only: the sockets in it lead into the VM, and the first connection to the ready
    // socket is taken to be the agent's.
    std::fs::set_permissions(&spec.run_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod 700 {}", spec.run_dir.display()), e))?;
    // The jailed VMM's directory; the shim hands it to the VMM's uid.
    std::fs::create_dir_all(spec.vmm_dir())
        .and_then(|()| std::fs::set_permissions(spec.vmm_dir(), std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("create {}", spec.vmm_dir().display()), e))?;
    // Sockets of an earlier VM in this directory would make the backends fail to bind.
    spec::remove_socket_files(spec);
    std::fs::write(spec.console_log(), b"")
        .map_err(|e| Error::io(format!("create {}", spec.console_log().display()), e))
}

fn shim_exited_error(spec: &VmSpec, exit: &ShimExit) -> Error {
    Error::ShimExited {
        status: exit.to_string(),
        log: spec.shim_log(),
        log_tail: log_tail(&spec.shim_log()),
        console: spec.console_log(),
        console_tail: log_tail(&spec.console_log()),
    }
}

/// The last lines of a log file, for error messages. The guest writes the console log (and
/// a VMM can fill the shim's), so the quote is bounded: only the last `LOG_TAIL_BYTES` (64 KiB) are
/// read, control characters and escape sequences are dropped (a terminal showing the error
/// does not interpret them), and each line is cut at `LOG_TAIL_LINE_CHARS`.
pub fn log_tail(path: &Path) -> String {
    let tail = std::fs::File::open(path).and_then(tail_of);
    match tail {
        Ok(tail) => tail,
        Err(e) => format!("  (cannot read {}: {e})", path.display()),
    }
}

/// The last [`LOG_TAIL_LINES`] non-empty lines of what `reader` holds, cleaned and indented,
/// reading no more than its last [`LOG_TAIL_BYTES`].
fn tail_of(mut reader: impl Read + Seek) -> std::io::Result<String> {
    let end = reader.seek(SeekFrom::End(0))?;
    let start = end.saturating_sub(LOG_TAIL_BYTES);
    reader.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    reader.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // Read from mid-file, the first line is a piece of one: drop it when a whole one follows.
    let text = match text.split_once('\n') {
        Some((_, rest)) if start > 0 => rest,
        _ => &text,
    };
    let lines: Vec<String> = text.lines().map(clean_log_line).filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Ok("  (empty)".into());
    }
    let last = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    Ok(last.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"))
}

/// One log line without escape sequences (CSI: ESC [ ... final byte) or other control
/// characters but tab (C0, DEL, C1), cut at [`LOG_TAIL_LINE_CHARS`] chars.
fn clean_log_line(line: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to and including the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        if kept == LOG_TAIL_LINE_CHARS {
            out.push_str("...");
            break;
        }
        out.push(c);
        kept += 1;
    }
    out
}

/// VmRSS of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn a_100_mb_log_is_tailed_from_its_last_64_kib() {
        let path = std::env::temp_dir().join(format!("boxlite-log-tail-{}.log", std::process::id()));
        let tail: String = (1..=25).map(|n| format!("line {n}\n")).collect();
        {
            let file = std::fs::File::create(&path).unwrap();
            // Sparse: 100 MB of NULs (control characters, dropped) and then the lines.
            file.set_len(100_000_000).unwrap();
            use std::os::unix::fs::FileExt;
            file.write_all_at(tail.as_bytes(), 100_000_000).unwrap();
        }
        let mut counting = Counting { inner: std::fs::File::open(&path).unwrap(), read: 0 };
        let quoted = tail_of(&mut counting).unwrap();
        let from_path = log_tail(&path);
        let _ = std::fs::remove_file(&path);
        assert!(counting.read <= LOG_TAIL_BYTES, "read {} bytes of a 100 MB file", counting.read);
        let expected: Vec<String> = (6..=25).map(|n| format!("  | line {n}")).collect();
        assert_eq!(quoted, expected.join("\n"));
        assert_eq!(from_path, quoted);
    }

    #[test]
    fn a_read_from_mid_file_drops_the_partial_first_line() {
        let mut log = vec![b'a'; LOG_TAIL_BYTES as usize];
        log.extend_from_slice(b"\nwhole\n");
        let quoted = tail_of(std::io::Cursor::new(log)).unwrap();
        assert_eq!(quoted, "  | whole");
    }

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        let log = "\u{1b}[31mred\u{1b}[0m plain\u{7} bell\u{7f} del\u{9b} c1\u{8} bs\ttab\rcr\u{1b}[2J\u{1b}[1;1H\n\u{1b}[K\n";
        let quoted = tail_of(std::io::Cursor::new(log.as_bytes().to_vec())).unwrap();
        assert_eq!(quoted, "  | red plain bell del c1 bs\ttabcr");
        assert!(!quoted.chars().any(|c| c.is_control() && c != '\t' && c != '\n'), "{quoted:?}");
    }

    #[test]
    fn long_lines_are_cut() {
        let log = format!("{}\nshort\n", "y".repeat(10_000));
        let quoted = tail_of(std::io::Cursor::new(log.into_bytes())).unwrap();
        let lines: Vec<&str> = quoted.lines().collect();
        assert_eq!(lines, [format!("  | {}...", "y".repeat(LOG_TAIL_LINE_CHARS)).as_str(), "  | short"]);
    }

    #[test]
    fn an_empty_or_blank_log_says_so() {
        assert_eq!(tail_of(std::io::Cursor::new(b"\n \n\x1b[0m\n".to_vec())).unwrap(), "  (empty)");
    }
}
