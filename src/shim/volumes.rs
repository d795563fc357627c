//! The qemu engine's virtio-fs servers: one `virtiofsd` per share (docs/volumes.md).
//!
//! They start inside the jail (after pivot_root, so they see only what the jail binds: the
//! shared directories, their own program and libraries) but before the shim drops its
//! privileges, because each runs as the owner of its shared directory rather than the VM's
//! uid: the least privilege with which files written in the box land on the host as that
//! owner's and the owner's files can be read and written. No capability is kept, not even
//! for uid 0 (the bounding set is emptied, so no execve can give one back), and every guest
//! uid and gid is squashed to the owner's (`virtiofsd_args`).
//!
//! In the child, before exec: a mount namespace of its own with a /proc of the box's pid
//! namespace (virtiofsd reopens files through /proc/self/fd), the listening socket as
//! descriptor 3 (the shim binds it, so virtiofsd needs no access to the VM's directory),
//! rlimits (no core, 65536 files, no file-size limit: a volume is as large as its host file
//! system), no supplementary groups, the owner's gid and uid, no capabilities,
//! PR_SET_PDEATHSIG with the pidfd check, then its seccomp policy (`virtiofsd`).
//!
//! The shim cannot signal a server (another uid), and needs not: a server exits when qemu
//! disconnects, and the kernel kills it when the shim dies.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use boxlite_shim::seccomp::{self, Policy};
use boxlite_shim::sys;
use boxlite_vmspec::qemu::{virtiofsd_args, VIRTIOFSD_LISTEN_FD};
use boxlite_vmspec::spec::VmSpec;

/// Descriptors one server may hold: virtiofsd keeps an O_PATH descriptor per inode the guest
/// has looked up (until the guest forgets it) and one per open file.
const SERVER_NOFILE: u64 = 65536;

/// A running share server.
pub struct ShareServer {
    pub child: Child,
    /// Readable once the server has exited (opened now: the shim's own policy has no pidfd_open).
    pub pidfd: OwnedFd,
    /// The uid it runs as.
    pub uid: u32,
}

/// Starts one server per share. Call inside the jail, before the shim drops privileges.
pub fn start(spec: &VmSpec) -> Result<Vec<ShareServer>, String> {
    if spec.shares.is_empty() {
        return Ok(Vec::new());
    }
    let program = spec.virtiofsd.as_deref().ok_or("the spec names no virtiofsd binary")?;
    let switch_user = spec.jail.drop_privileges && nix::unistd::Uid::effective().is_root();
    let filter = spec.jail.seccomp.then(|| seccomp::program(Policy::Virtiofsd));
    let mut servers = Vec::new();
    for (index, share) in spec.shares.iter().enumerate() {
        let (uid, gid) = if switch_user {
            let meta = std::fs::metadata(&share.host_path).map_err(|e| format!("stat {}: {e}", share.host_path.display()))?;
            (meta.uid(), meta.gid())
        } else {
            (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
        };
        let socket = spec.share_socket(index);
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| format!("listen on {}: {e}", socket.display()))?;
        let listener = OwnedFd::from(listener);
        // Numbered above the target, so that dup2 never has source == target.
        let passed = sys::dup_cloexec_at_least(listener.as_fd(), VIRTIOFSD_LISTEN_FD + 1).map_err(|e| format!("dup: {e}"))?;
        let passed_fd = passed.as_raw_fd();
        let log = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| format!("dup stderr: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("dup stderr: {e}"))?;
        let shim = sys::pidfd_open_self().map_err(|e| format!("pidfd_open: {e}"))?;
        let shim_fd = shim.as_raw_fd();
        let own_proc = spec.jail.namespaces;
        let rlimits = spec.jail.rlimits;
        let no_new_privs = spec.jail.no_new_privs;
        let filter = filter.clone();
        let mut command = Command::new(program);
        command
            .args(virtiofsd_args(spec, index, uid, gid))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls (unshare, mount, dup2, setrlimit, prctl, setgroups,
        // setresgid, setresuid, capset, poll, seccomp, _exit) on data prepared before the
        // fork, allocating nothing (the mount arguments are static C strings; `filter` moves
        // in). `passed_fd` and `shim_fd` stay open in the parent until spawn returns, so the
        // child's copies are open too. PR_SET_PDEATHSIG ties the child to the forking thread,
        // the shim's main thread, which lives as long as the shim does.
        unsafe {
            command.pre_exec(move || {
                if own_proc {
                    // A /proc of the box's pid namespace, seen by this process alone.
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    if libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), flags, std::ptr::null()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::dup2(passed_fd, VIRTIOFSD_LISTEN_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if rlimits {
                    // Raising a limit past the shim's needs root; a shim without it keeps its own.
                    for (resource, value) in
                        [(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, SERVER_NOFILE), (libc::RLIMIT_FSIZE, libc::RLIM_INFINITY)]
                    {
                        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
                        if libc::setrlimit(resource, &limit) != 0 && resource == libc::RLIMIT_CORE {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                if switch_user {
                    sys::drop_bounding_set()?;
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    // uid 0 keeps its capabilities across setresuid: clear them.
                    sys::clear_capabilities()?;
                }
                // After the uid change, which clears the parent-death signal (prctl(2)).
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                let mut shim = libc::pollfd { fd: shim_fd, events: libc::POLLIN, revents: 0 };
                if libc::poll(&mut shim, 1, 0) != 0 {
                    libc::_exit(1);
                }
                if no_new_privs {
                    nix::sys::prctl::set_no_new_privs()?;
                }
                if let Some(filter) = &filter {
                    seccomp::apply_prepared(filter)?;
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("spawn {} for {}: {e}", program.display(), share.host_path.display()))?;
        drop((passed, shim, listener));
        let pidfd = sys::pidfd_open(child.id()).map_err(|e| format!("pidfd_open: {e}"))?;
        eprintln!(
            "boxlite-shim: virtiofsd pid {} serves {} as {} ({}, uid {uid} gid {gid})",
            child.id(),
            share.host_path.display(),
            share.tag,
            if share.read_only { "read-only" } else { "read-write" }
        );
        servers.push(ShareServer { child, pidfd, uid });
    }
    Ok(servers)
}
