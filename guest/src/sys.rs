//! The agent's system calls that nix does not offer safely, each behind a safe function.
//! Every unsafe block of the agent is here; the rest of the crate is safe code.
//!
//! What runs in a new process before it execs (`spawn`) is here too: it is the one place
//! where only raw system calls on data prepared beforehand are allowed, and keeping the
//! child's code here, fed plain data, is what makes the function safe to call.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// How a child is set up before it execs.
pub struct ChildSetup {
    /// chroot(2) here first (None: stay in the agent's root).
    pub root: Option<CString>,
    /// Then chdir(2) here (inside the new root).
    pub cwd: CString,
    /// Make stdin (a pty slave) the controlling terminal of the new session.
    pub tty: bool,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

/// A process to start (see [`spawn`]).
pub struct Spawn<'a> {
    /// The program's path, resolved inside `setup.root`.
    pub program: CString,
    /// argv, argv[0] included.
    pub argv: Vec<CString>,
    /// The whole environment, as "NAME=value" entries.
    pub envp: Vec<CString>,
    /// The child's stdin, stdout and stderr (descriptors above 2).
    pub stdio: [BorrowedFd<'a>; 3],
    pub setup: ChildSetup,
}

/// The step of [`spawn`] that failed in the child, and why.
#[derive(Debug)]
pub struct SpawnError {
    /// "execve" when the program itself could not be executed.
    pub step: &'static str,
    pub error: io::Error,
}

/// The child's steps, in order; the child reports a failure as an index into this.
const SPAWN_STEPS: [&str; 10] = ["signals", "dup2", "chroot", "chdir", "setsid", "TIOCSCTTY", "setgroups", "setgid", "setuid", "execve"];
/// Stack of the child until it execs: its code makes plain system calls on prepared data.
const SPAWN_STACK: usize = 64 * 1024;

/// What the child reads (prepared before the clone) and writes back on failure. It shares
/// the agent's memory, so it writes `failed_step` and `errno` straight into this.
#[repr(C)]
struct ChildContext {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdio: [libc::c_int; 3],
    root: *const libc::c_char,
    cwd: *const libc::c_char,
    tty: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    group_count: usize,
    no_signals: libc::sigset_t,
    failed_step: usize,
    errno: libc::c_int,
}

/// Starts `spawn.program` in `spawn.setup.root` as `clone(CLONE_VM | CLONE_VFORK)` does for
/// posix_spawn: the child shares the agent's memory until it execs and the calling thread
/// waits until then, so nothing is copied. A fork(2) of the agent (page tables, then a
/// copy-on-write fault per page either side touches) cost ~2 ms per exec under TCG.
/// The child: every signal to its default and none blocked, stdio, chroot, chdir, a session
/// of its own (and the tty as its terminal), the user's groups, gid and uid, execve.
/// Returns the child's pid once it has exec'd; the reaper sees its exit as usual.
pub fn spawn(spawn: &Spawn) -> Result<u32, SpawnError> {
    let internal = |error: io::Error| SpawnError { step: "clone", error };
    if spawn.stdio.iter().any(|fd| fd.as_raw_fd() <= 2) {
        return Err(internal(io::Error::new(io::ErrorKind::InvalidInput, "stdio descriptors must be above 2")));
    }
    let pointers = |strings: &[CString]| strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>();
    let (argv, envp) = (pointers(&spawn.argv), pointers(&spawn.envp));
    let setup = &spawn.setup;
    let mut context = ChildContext {
        program: spawn.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: spawn.stdio.map(|fd| fd.as_raw_fd()),
        root: setup.root.as_ref().map_or(std::ptr::null(), |root| root.as_ptr()),
        cwd: setup.cwd.as_ptr(),
        tty: setup.tty,
        uid: setup.uid,
        gid: setup.gid,
        groups: setup.groups.as_ptr(),
        group_count: setup.groups.len(),
        // SAFETY: sigset_t is plain integers; sigemptyset then initialises it.
        no_signals: unsafe { std::mem::zeroed() },
        failed_step: usize::MAX,
        errno: 0,
    };
    let mut stack = vec![0u8; SPAWN_STACK];
    // SAFETY: sigemptyset/sigfillset write the sigset_t they are given. pthread_sigmask only
    // changes this thread's mask (all blocked across the clone: no handler of the agent may
    // run in the child, which shares its memory, before the child resets them; restored
    // right after). clone: `child` is an extern "C" fn that only reads `context` (alive on
    // this frame until clone returns, which with CLONE_VFORK is after the child exec'd or
    // exited) and writes its failure fields; its stack is `stack`, alive as long, and the top
    // passed is 16-byte aligned and inside it. The child makes only raw system calls and
    // never returns into this frame.
    let pid = unsafe {
        libc::sigemptyset(&mut context.no_signals);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        let top = stack.as_mut_ptr().add(SPAWN_STACK);
        let top = top.sub(top as usize % 16);
        let pid =
            libc::clone(child, top.cast(), libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, (&mut context as *mut ChildContext).cast());
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        if pid < 0 {
            return Err(internal(clone_error));
        }
        pid
    };
    // SAFETY: the child has exec'd or exited (CLONE_VFORK); nothing writes these any more.
    let (failed_step, errno) = unsafe { (std::ptr::read_volatile(&context.failed_step), std::ptr::read_volatile(&context.errno)) };
    match SPAWN_STEPS.get(failed_step) {
        // The child has exited (127); the reaper reaps it.
        Some(step) => Err(SpawnError { step, error: io::Error::from_raw_os_error(errno) }),
        None => Ok(pid as u32),
    }
}

/// The kernel's `struct sigaction` on x86_64 (rt_sigaction(2) takes this, not glibc's).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child of [`spawn`], on its own stack in the agent's memory.
extern "C" fn child(context: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `context` is the ChildContext `spawn` passed, alive until this child execs or
    // exits (CLONE_VFORK holds the parent). Only raw system calls follow, on pointers built
    // by `spawn` and alive as long: no allocation, no lock, no glibc state (setgroups,
    // setgid and setuid go through syscall(2): glibc's wrappers would signal the agent's
    // threads to change their credentials too).
    unsafe {
        let c = &mut *context.cast::<ChildContext>();
        let fail = |c: &mut ChildContext, step: usize| -> libc::c_int {
            std::ptr::write_volatile(&mut c.errno, *libc::__errno_location());
            std::ptr::write_volatile(&mut c.failed_step, step);
            libc::_exit(127)
        };
        // Every handler back to its default (the child has its own copy of the table), then
        // nothing blocked: the program starts as after a fork from a clean parent. The raw
        // call reaches glibc's internal signals too; SIGKILL and SIGSTOP fail, as they may.
        let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for signal in 1..=64 {
            libc::syscall(libc::SYS_rt_sigaction, signal, &default, std::ptr::null_mut::<KernelSigaction>(), 8);
        }
        if libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &c.no_signals, std::ptr::null_mut::<libc::sigset_t>(), 8) != 0 {
            return fail(c, 0);
        }
        for (target, fd) in c.stdio.into_iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                return fail(c, 1);
            }
        }
        if !c.root.is_null() && libc::chroot(c.root) != 0 {
            return fail(c, 2);
        }
        if libc::chdir(c.cwd) != 0 {
            return fail(c, 3);
        }
        // A session (and process group) of its own: signals and the timeout reach the whole
        // group, and a tty becomes its controlling terminal.
        if libc::setsid() < 0 {
            return fail(c, 4);
        }
        if c.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            return fail(c, 5);
        }
        if libc::syscall(libc::SYS_setgroups, c.group_count, c.groups) != 0 {
            return fail(c, 6);
        }
        if libc::syscall(libc::SYS_setgid, c.gid) != 0 {
            return fail(c, 7);
        }
        if libc::syscall(libc::SYS_setuid, c.uid) != 0 {
            return fail(c, 8);
        }
        libc::execve(c.program, c.argv, c.envp);
        fail(c, 9)
    }
}

/// kill(2) with a raw signal number, as the host sent it: nix's `Signal` has no real-time
/// signals and no signal 0, both of which the host may ask for. A negative `pid` names a
/// process group.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes integers only; an invalid pid or signal is an error, not UB.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings a network interface up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP), as
/// `ip link set NAME up` does. The kernel gives `lo` its 127.0.0.1/8 and ::1 once it is up.
pub fn set_interface_up(name: &str) -> io::Result<()> {
    let socket = inet_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: both ioctls read and write one ifreq through the pointer, which points at
    // `request`, alive and exclusively borrowed for each call; its name is NUL-terminated
    // (checked by `interface_request`); the descriptor is open (owned above). Reading
    // `ifru_flags` after SIOCGIFFLAGS reads the union member the kernel just wrote.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives a network interface its IPv4 address, then its netmask (SIOCSIFADDR, then
/// SIOCSIFNETMASK), as `ip addr add ADDR/PREFIX dev NAME` does. The address alone would get
/// its class's mask (/8 for 10.x); setting the mask second also moves the broadcast address
/// and the on-link route to the right prefix.
pub fn set_interface_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    let socket = inet_socket()?;
    for (ioctl, value) in [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, netmask)] {
        let mut request = interface_request(name)?;
        request.ifr_ifru.ifru_addr = sockaddr_ipv4(value);
        // SAFETY: both ioctls read one ifreq (a NUL-terminated name, checked by
        // `interface_request`, and an AF_INET sockaddr in the union) through the pointer,
        // which points at `request`, alive for the call; the descriptor is open (owned above).
        if unsafe { libc::ioctl(socket.as_raw_fd(), ioctl, &request) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Adds the IPv4 default route (0.0.0.0/0) via `gateway` (SIOCADDRT), as `ip route add
/// default via GATEWAY` does. The kernel picks the interface whose on-link route holds the
/// gateway, so that interface must be up with its address set first.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let socket = inet_socket()?;
    // SAFETY: rtentry is plain data (integers, sockaddrs, and a device-name pointer for which
    // null means "no device given"), for which all-zero bytes are a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_ipv4(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr_ipv4(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr_ipv4(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads one rtentry through the pointer, which points at `route`, alive
    // for the call; its rt_dev is null, so the kernel follows no other pointer; the
    // descriptor is open (owned above).
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &route) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A datagram socket for the interface and route ioctls (it is never bound or used to send).
fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes integers only; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An ifreq naming the interface `name` (NUL-terminated), the rest zero.
fn interface_request(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain data (a name array and a union of integers, addresses and a
    // pointer the ioctls used here never follow), for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

/// `addr` as the generic sockaddr that ifreq and rtentry hold: the bytes of a sockaddr_in
/// (family, then port and address in network byte order, then zeroes), port 0.
fn sockaddr_ipv4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    // sa_data[0..2] is sin_port (0); sa_data[2..6] is sin_addr, most significant octet first.
    for (slot, octet) in data[2..6].iter_mut().zip(addr.octets()) {
        *slot = octet as libc::c_char;
    }
    libc::sockaddr { sa_family: libc::AF_INET as libc::sa_family_t, sa_data: data }
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at `size`, alive
    // for the call; the descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// openat2(2) of `path` under `dir` with RESOLVE_IN_ROOT: `..` and absolute symlinks stay
/// inside `dir`, as they would after a chroot to it.
pub fn openat2_in_root(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain integers, for which all zeroes is a valid value (and the
    // one the kernel wants in fields we do not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: openat2 reads `how` (of the size we pass) and the NUL-terminated path, both
    // alive for the call; `dir` is borrowed, so it is open.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// openat(2) of one `name` under `dir` (no resolution rules beyond `flags`: pass O_NOFOLLOW
/// to refuse a symlink as the last component).
pub fn open_at(dir: &impl AsRawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: openat reads the NUL-terminated name, alive for the call; `dir` is borrowed
    // from an object that holds its descriptor open (an OwnedFd, a nix Dir).
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The size of a block device in bytes (BLKGETSIZE64).
pub fn block_device_size(device: BorrowedFd<'_>) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `bytes`; the
    // descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(device.as_raw_fd(), BLKGETSIZE64, &mut bytes) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes)
}

/// Grows the mounted ext4 file system that `mounted` is open on to `blocks` blocks, online
/// (EXT4_IOC_RESIZE_FS).
pub fn ext4_resize(mounted: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count) through the pointer,
    // which points at `blocks`; the descriptor is borrowed, so it is open.
    if unsafe { libc::ioctl(mounted.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` from getrandom(2) with GRND_INSECURE (never waits for the CRNG). Returns how
/// many bytes were written.
pub fn getrandom_insecure(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_INSECURE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Registers a descriptor with the tokio reactor (which must be running).
pub fn register_async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped and always names the same descriptor, and
    // it moves into the AsyncFd, so it stays open for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;

    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (std::fs::File::from(read), write)
    }

    /// Spawns `sh -c script` as root in `cwd` with `env`; its stdout, stderr and exit code.
    fn run_sh(script: &str, cwd: &str, env: &[&str]) -> Result<(String, String, i32), SpawnError> {
        assert!(nix::unistd::geteuid().is_root(), "these tests set the child's groups and ids: run them as root");
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let ((mut out, out_w), (mut err, err_w)) = (pipe(), pipe());
        let spawned = spawn(&Spawn {
            program: c("/bin/sh"),
            argv: vec![c("sh"), c("-c"), c(script)],
            envp: env.iter().map(|e| c(e)).collect(),
            stdio: [null.as_fd(), out_w.as_fd(), err_w.as_fd()],
            setup: ChildSetup { root: None, cwd: c(cwd), tty: false, uid: 0, gid: 0, groups: vec![0] },
        });
        drop((out_w, err_w));
        let pid = spawned?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        out.read_to_string(&mut stdout).unwrap();
        err.read_to_string(&mut stderr).unwrap();
        match waitpid(Pid::from_raw(pid as i32), None).unwrap() {
            WaitStatus::Exited(_, code) => Ok((stdout, stderr, code)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spawn_gives_the_program_its_stdio_environment_directory_and_exit() {
        let (out, err, code) = run_sh("echo \"$GREETING\"; pwd; echo oops >&2; exit 3", "/tmp", &["GREETING=hi there"]).unwrap();
        assert_eq!((out.as_str(), err.as_str(), code), ("hi there\n/tmp\n", "oops\n", 3));
    }

    #[test]
    fn spawn_starts_the_program_with_no_signal_blocked_or_ignored() {
        // The test process ignores SIGPIPE (Rust's runtime does) and `spawn` blocks every
        // signal around the clone: neither may reach the program (cat, exec'd by sh, inherits
        // both; handlers are reset by exec, and cat sets none).
        let (out, _, code) = run_sh("exec cat /proc/self/status", "/", &[]).unwrap();
        assert_eq!(code, 0);
        let masks: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(masks.len(), 2, "{out}");
        assert!(masks.iter().all(|m| m.chars().all(|c| c == '0')), "{out}");
    }

    #[test]
    fn spawn_names_the_step_that_failed() {
        let missing_dir = run_sh("true", "/no/such/dir", &[]).unwrap_err();
        assert_eq!((missing_dir.step, missing_dir.error.raw_os_error()), ("chdir", Some(libc::ENOENT)));
        let null = std::fs::File::open("/dev/null").unwrap();
        let missing_program = spawn(&Spawn {
            program: c("/no/such/program"),
            argv: vec![c("x")],
            envp: vec![],
            stdio: [null.as_fd(), null.as_fd(), null.as_fd()],
            setup: ChildSetup { root: None, cwd: c("/"), tty: false, uid: 0, gid: 0, groups: vec![0] },
        })
        .unwrap_err();
        assert_eq!((missing_program.step, missing_program.error.raw_os_error()), ("execve", Some(libc::ENOENT)));
        let low = spawn(&Spawn {
            program: c("/bin/true"),
            argv: vec![c("true")],
            envp: vec![],
            stdio: [null.as_fd(), null.as_fd(), std::io::stderr().as_fd()],
            setup: ChildSetup { root: None, cwd: c("/"), tty: false, uid: 0, gid: 0, groups: vec![0] },
        })
        .unwrap_err();
        assert_eq!(low.step, "clone", "{low:?}");
    }

    #[test]
    fn sockaddr_ipv4_has_the_layout_of_a_sockaddr_in() {
        let addr = Ipv4Addr::new(10, 0, 2, 15);
        let expected = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
            sin_zero: [0; 8],
        };
        assert_eq!(std::mem::size_of::<libc::sockaddr>(), std::mem::size_of::<libc::sockaddr_in>());
        // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain integers (checked
        // above), so any sockaddr_in's bytes are a valid sockaddr.
        let expected: libc::sockaddr = unsafe { std::mem::transmute(expected) };
        let got = sockaddr_ipv4(addr);
        assert_eq!((got.sa_family, got.sa_data), (expected.sa_family, expected.sa_data));
    }
}
