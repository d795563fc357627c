//! Booting: the spec built from the options, the run directory, the shim spawned with the
//! spec on its stdin (the watchdog pipe), its status events read, and the agent's first
//! Ping awaited on the connection it dials to the host.

use super::supervise::supervise;
use super::*;
use boxlite_vmspec::network;

/// Longest status line the shim may print; a longer one is an error, not an allocation.
const MAX_SHIM_LINE: usize = 64 * 1024;
/// x86's COMMAND_LINE_SIZE, terminating NUL included.
const MAX_CMDLINE: usize = 2047;

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
        let shim_log = std::fs::File::create(spec.shim_log()).map_err(|e| Error::io(format!("create {}", spec.shim_log().display()), e))?;
        // Listen for the agent before the VM exists, so that its first dial reaches us.
        let ready_socket = spec.guest_to_host_socket(AGENT_HOST_PORT);
        let ready = UnixListener::bind(&ready_socket).map_err(|e| Error::io(format!("listen on {}", ready_socket.display()), e))?;
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
        let (vmm_pid, helper_pids, forwards) = match started_event {
            Ok(ShimEvent::VmStarted { vmm_pid, helper_pids, forwards }) => (vmm_pid, helper_pids, forwards),
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

        // The agent dials the host's ready port once it serves; wait for that connection. If
        // its dial fails, it says so on the console and keeps serving its own port: then dial
        // that instead of waiting out the deadline.
        let waiting = format!("the agent never connected to {}", ready_socket.display());
        let mut shim_exit = exit.clone();
        let connected = tokio::select! {
            accepted = ready.accept() => accepted.map(|(stream, _)| AgentClient::over(stream)).map_err(|e| format!("accept on {}: {e}", ready_socket.display())),
            agent = dial_agent(&spec) => Ok(agent),
            _ = tokio::time::sleep_until(deadline.into()) => Err(waiting),
            Ok(_) = shim_exit.wait_for(Option::is_some) => Err("the shim exited".into()),
        };
        drop(ready);
        let _ = std::fs::remove_file(&ready_socket);
        let pinged = match connected {
            Ok(agent) => {
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
        let timings = BootTimings { vm_running, first_ping: started.elapsed(), guest_steps: guest_boot_steps(&first_ping) };
        guard.kill = None;
        let spec = Arc::new(spec);
        let lifeline = Arc::new(Lifeline { kill: kill.clone(), detached: spec.detached, _watchdog: watchdog });
        let link = Link { agent, exit: exit.clone(), spec: spec.clone(), _lifeline: lifeline };
        Ok(Vm { spec, shim_pid, vmm_pid, helper_pids, forwards, link, first_ping, timings, exec_counters: Arc::default(), exit, kill })
    }
}

/// The way in when the agent's dial to the host failed (seen once under heavy host load: the
/// guest's connects timed out for all of its 10 s of retries): it then says so on the console
/// and keeps serving its own port, so connect to that. Only then: a host connection requested
/// while the guest's vsock driver is still coming up can wedge the backend (docs/boot.md).
/// The console is the guest's, but all it can steer here is a dial to its own port. The
/// boot's deadline bounds the whole.
async fn dial_agent(spec: &VmSpec) -> AgentClient {
    let console = spec.console_log();
    while !log_tail(&console).contains(CONSOLE_AGENT_AWAITS_HOST) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let endpoint = spec.host_to_guest(AGENT_VSOCK_PORT);
    loop {
        match AgentClient::connect(&endpoint, Duration::from_secs(2)).await {
            Ok(agent) => return agent,
            Err(e) => tracing::debug!(run_dir = %spec.run_dir.display(), "dialing the agent: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
    // The qemu engine serves each volume with a virtiofsd; krun has virtio-fs built in.
    let virtiofsd = match engine {
        EngineKind::Qemu if !options.volumes.is_empty() => Some(real_path(&helpers::virtiofsd()?)?),
        _ => None,
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
    let network = options.network.spec()?;
    if network.is_some() {
        cmdline_extra.push_str(&format!("{}={} ", boxlite_protocol::CMDLINE_NETWORK, network::guest_cmdline_value()));
    }
    let mut protected = options.protected_dirs.clone();
    protected.push(options.run_dir.clone());
    let (shares, mounts) = volumes::shares(&options.volumes, &protected)?;
    if !mounts.is_empty() {
        cmdline_extra.push_str(&format!("{}={} ", boxlite_protocol::CMDLINE_VOLUMES, boxlite_protocol::volumes_cmdline_value(&mounts)));
    }
    cmdline_extra.push_str(&options.extra_cmdline);
    let kernel = real_path(&helpers::kernel(options.kernel.as_deref())?)?;
    let initramfs = real_path(&helpers::initramfs(options.initramfs.as_deref())?)?;
    // Created last: a spec that fails leaves no directory behind.
    std::fs::create_dir_all(&options.run_dir).map_err(|e| Error::io(format!("create {}", options.run_dir.display()), e))?;
    let run_dir = real_path(&options.run_dir)?;
    let cmdline = engine::kernel_cmdline(engine, hardware_kvm, AGENT_VSOCK_PORT, &cmdline_extra);
    if cmdline.len() >= MAX_CMDLINE {
        return Err(Error::InvalidOption {
            field: "volumes",
            reason: format!(
                "the kernel command line would be {} bytes (at most {MAX_CMDLINE}); use fewer or shorter guest paths",
                cmdline.len()
            ),
        });
    }
    Ok(VmSpec {
        engine,
        hardware_acceleration: hardware_kvm,
        kernel,
        initramfs,
        cmdline,
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
        network,
        shares,
        virtiofsd,
    })
}

/// The path with every symlink and `..` resolved: the jail binds each file at this path, and
/// the VMM must find it there by the same name.
fn real_path(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io(format!("resolve {}", path.display()), e))
}

fn prepare_run_dir(spec: &VmSpec) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&spec.run_dir).map_err(|e| Error::io(format!("create {}", spec.run_dir.display()), e))?;
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
    std::fs::write(spec.console_log(), b"").map_err(|e| Error::io(format!("create {}", spec.console_log().display()), e))
}
