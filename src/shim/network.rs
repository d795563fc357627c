//! The box's network gateway (`boxlite-netgw`), started by the shim after it joins the
//! box's cgroup and before it enters its namespaces: the gateway has to stay in the host's
//! network namespace to make the box's connections, while the VMM gets an empty one.
//!
//! The shim prepares everything the gateway needs as descriptors, so that the gateway never
//! opens a path (its seccomp policy allows no open): one end of a socketpair carrying the
//! VMM's frames (the other end goes to qemu's `-netdev stream` or libkrun), the stats file,
//! and the port forwards' host sockets, bound here so that a port in use fails the start
//! with a clear reason and a requested port 0 is known before the VM runs. The config goes
//! on the gateway's stdin as one JSON line.
//!
//! The gateway runs as a uid of its own (`JAIL_ID_BASE` + its pid) with no_new_privs,
//! bounded rlimits and PR_SET_PDEATHSIG, so it dies with the shim; it installs its seccomp
//! policy itself once its descriptors and runtime are set up (docs/seccomp.md).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use boxlite_shim::sys;
use boxlite_vmspec::network::{gateway_fds, BoundForward, ForwardTarget, GatewayConfig, NetworkSpec, PortForward, Protocol};
use boxlite_vmspec::spec::{VmSpec, JAIL_ID_BASE};

/// Descriptors the gateway may hold: its connections (bounded by its own limits), the
/// forwards and its runtime's.
const GATEWAY_NOFILE: u64 = 4096;
/// The largest file the gateway writes: its stats (a few hundred bytes).
const GATEWAY_FSIZE: u64 = 1 << 20;

/// The running gateway and what the engine needs from it.
///
/// The shim cannot signal the gateway (another uid), and needs not: the gateway exits when
/// the VMM's end of the frame socket closes, and the kernel kills it when the shim dies
/// (PR_SET_PDEATHSIG). So the engine hands `vmm_end` to the VMM and keeps no copy.
pub struct Gateway {
    pub pid: u32,
    /// The VMM's end of the frame socket (close-on-exec; the engine passes it on).
    pub vmm_end: OwnedFd,
    /// Readable once the gateway has exited (opened now: the shim's own policy has no
    /// pidfd_open). The gateway stays unreaped; it goes with the shim.
    pub pidfd: OwnedFd,
    /// The forwards as bound (port 0 resolved), for the VmStarted event.
    pub forwards: Vec<BoundForward>,
    /// The uid the gateway runs as, when the shim dropped its privileges.
    pub uid: Option<u32>,
}

/// Binds the forwards, creates the frame socketpair and the stats file, and starts the
/// gateway. Must run before the shim unshares its network namespace.
pub fn start(spec: &VmSpec, network: &NetworkSpec) -> Result<Gateway, String> {
    let mut sockets: Vec<OwnedFd> = Vec::new();
    let mut forwards = Vec::new();
    for forward in &network.forwards {
        let (socket, bound) = bind_forward(forward)?;
        sockets.push(socket);
        forwards.push(bound);
    }
    // A stream socketpair, close-on-exec: each end reaches its process as a chosen number.
    let (vmm_end, gateway_end) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair for the network frames: {e}"))?;
    let (vmm_end, gateway_end) = (OwnedFd::from(vmm_end), OwnedFd::from(gateway_end));
    let stats =
        std::fs::File::create(spec.network_stats_file()).map_err(|e| format!("create {}: {e}", spec.network_stats_file().display()))?;
    let drop_privileges = spec.jail.drop_privileges && nix::unistd::Uid::effective().is_root();

    // The gateway's descriptors, in their order (gateway_fds), copied above the highest
    // target so that no dup2 in the child overwrites a source it still needs.
    let mut sources: Vec<std::os::fd::BorrowedFd<'_>> = vec![gateway_end.as_fd(), stats.as_fd()];
    sources.extend(sockets.iter().map(|s| s.as_fd()));
    let first_free = gateway_fds::FIRST_FORWARD + sockets.len() as RawFd;
    let copies = sources
        .iter()
        .map(|fd| sys::dup_cloexec_at_least(*fd, first_free).map_err(|e| format!("dup a gateway descriptor: {e}")))
        .collect::<Result<Vec<OwnedFd>, String>>()?;
    let plan: Vec<(RawFd, RawFd)> = copies.iter().enumerate().map(|(i, fd)| (fd.as_raw_fd(), gateway_fds::FRAMES + i as RawFd)).collect();

    let config = GatewayConfig {
        egress: network.egress.clone(),
        dns_upstreams: network.dns_upstreams.clone(),
        forwards: network.forwards.iter().map(|f| ForwardTarget { protocol: f.protocol, guest_port: f.guest_port }).collect(),
        limits: Default::default(),
        seccomp: spec.jail.seccomp,
    };
    let mut line = serde_json::to_vec(&config).expect("a GatewayConfig always serializes");
    line.push(b'\n');

    let log = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| format!("dup stderr: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("dup stderr: {e}"))?;
    let shim = sys::pidfd_open_self().map_err(|e| format!("pidfd_open: {e}"))?;
    let shim_fd = shim.as_raw_fd();
    let limits = [(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, GATEWAY_NOFILE), (libc::RLIMIT_FSIZE, GATEWAY_FSIZE)];
    let rlimits = spec.jail.rlimits;
    let no_new_privs = spec.jail.no_new_privs;
    let mut command = Command::new(&network.gateway);
    command.env_clear().stdin(Stdio::piped()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (dup2, setrlimit, setgroups, setresgid, setresuid,
    // getpid, prctl, poll, _exit) on plain data prepared before the fork, allocating nothing:
    // `plan` holds descriptor numbers that stay open in the parent until spawn returns (the
    // copies and `shim` are dropped after it), so the child's copies are open too.
    // PR_SET_PDEATHSIG ties the child to the forking thread, the shim's main thread, which
    // lives as long as the shim does (under krun, libkrun takes it over and exits the process).
    unsafe {
        command.pre_exec(move || {
            for &(source, target) in &plan {
                if libc::dup2(source, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if rlimits {
                for (resource, value) in limits {
                    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if drop_privileges {
                let id = JAIL_ID_BASE + libc::getpid() as u32;
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(id, id, id) != 0 || libc::setresuid(id, id, id) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the uid change, which clears the parent-death signal (prctl(2)).
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The shim may have died before that; its pidfd says so.
            let mut shim = libc::pollfd { fd: shim_fd, events: libc::POLLIN, revents: 0 };
            if libc::poll(&mut shim, 1, 0) != 0 {
                libc::_exit(1);
            }
            if no_new_privs {
                nix::sys::prctl::set_no_new_privs()?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| format!("spawn {}: {e}", network.gateway.display()))?;
    drop((copies, shim, gateway_end, stats, sockets));
    let pid = child.id();
    let pidfd = sys::pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    if let Some(Err(e)) = child.stdin.take().map(|mut stdin| stdin.write_all(&line)) {
        // It exits on its own (its config never came); the shim exits now too.
        return Err(format!("sending the network gateway its config: {e}"));
    }
    // Its files need no new owner: it writes its stats through the descriptor it was given.
    let uid = drop_privileges.then(|| JAIL_ID_BASE + pid);
    eprintln!("boxlite-shim: network gateway pid {pid} ({:?}; {} forward(s))", network.egress, forwards.len());
    Ok(Gateway { pid, vmm_end, pidfd, forwards, uid })
}

/// Binds one forward's host socket: a listening TCP socket or a bound UDP socket.
fn bind_forward(forward: &PortForward) -> Result<(OwnedFd, BoundForward), String> {
    let addr = SocketAddr::new(forward.host_addr, forward.host_port);
    let failed = |e: std::io::Error| {
        let fix = if e.kind() == std::io::ErrorKind::AddrInUse {
            "choose another host port, or 0 for any free one"
        } else {
            "check the host address is one of this host's"
        };
        format!("cannot bind {addr}/{} for the port forward {forward}: {e}; {fix}", forward.protocol)
    };
    let (socket, local): (OwnedFd, SocketAddr) = match forward.protocol {
        Protocol::Tcp => {
            let listener = TcpListener::bind(addr).map_err(failed)?;
            let local = listener.local_addr().map_err(failed)?;
            (listener.into(), local)
        }
        Protocol::Udp => {
            let socket = UdpSocket::bind(addr).map_err(failed)?;
            let local = socket.local_addr().map_err(failed)?;
            (socket.into(), local)
        }
    };
    let bound = BoundForward { protocol: forward.protocol, host_addr: local.ip(), host_port: local.port(), guest_port: forward.guest_port };
    Ok((socket, bound))
}
