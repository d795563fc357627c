//! The jailed shim (docs/jailer.md): for a running VM, the shim, qemu and its vsock backend
//! run in the VM's cgroup with its limits, in their own namespaces, inside the jail root,
//! as the VM's own uid, with no_new_privs and a seccomp filter; turning a protection off
//! is explicit, logged and recorded; the cgroup limits hold against a guest that touches
//! all its memory and a fork loop in the VM's pid namespace; the cgroups go with the VM even
//! when its async runtime shuts down under it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxlite::runtime::spec::JAIL_ID_BASE;
use boxlite::{EngineChoice, ExecCommand, JailOptions, Protections, Vm};
use common::{busybox_root, wait_gone, RunDir};

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn limit(pid: u32, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc/{pid}/limits"));
    line[name.len()..].split_whitespace().next().unwrap().to_string()
}

fn namespace(pid: impl std::fmt::Display, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

fn protections(dir: &RunDir) -> Protections {
    serde_json::from_slice(&std::fs::read(dir.0.join("protections.json")).unwrap()).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn boot_jailed(dir: &RunDir, memory_mib: u32) -> Vm {
    let mut options = dir.options(EngineChoice::Qemu);
    options.memory_mib = memory_mib;
    options.root_disk = Some(busybox_root());
    Vm::boot(options).await.unwrap_or_else(|e| panic!("boot: {e}"))
}

/// The v1 or v2 file of the VM's cgroup that holds `v1_name`/`v2_name`.
fn cgroup_file(protections: &Protections, v1_name: &str, v2_name: &str) -> PathBuf {
    for dir in &protections.cgroups {
        for name in [v1_name, v2_name] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!("no {v1_name} or {v2_name} in {:?}", protections.cgroups);
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vm_process_is_jailed_and_the_box_still_boots_and_execs() {
    let dir = RunDir::new("jail-on");
    let vm = boot_jailed(&dir, 256).await;
    let applied = protections(&dir);
    assert!(applied.rlimits && applied.no_new_privs && applied.environment_cleared && applied.inherited_fds_closed);
    assert_eq!(applied.namespaces, ["mnt", "ipc", "uts", "net", "pid"]);
    assert_eq!(applied.seccomp, ["vhost_vsock", "qemu", "supervisor"]);
    let id = JAIL_ID_BASE + vm.shim_pid();
    assert_eq!(applied.uid, Some(id));
    let leaf = format!("boxlite/shim-{}", vm.shim_pid());

    for pid in vm.pids() {
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "pid {pid}");
        assert_eq!(status_field(pid, "Seccomp:"), "2", "pid {pid}");
        assert_eq!(status_field(pid, "Uid:"), id.to_string(), "pid {pid}");
        assert_eq!(status_field(pid, "Gid:"), id.to_string(), "pid {pid}");
        assert_eq!(status_field(pid, "CapEff:"), "0000000000000000", "pid {pid}");
        assert_eq!(limit(pid, "Max core file size"), "0", "pid {pid}");
        assert_eq!(limit(pid, "Max open files"), "4096", "pid {pid}");
        assert_ne!(limit(pid, "Max file size"), "unlimited", "pid {pid}");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroups.lines().any(|l| l.ends_with(&leaf)), "pid {pid} not in {leaf}:\n{cgroups}");
        for kind in ["mnt", "ipc", "uts", "net"] {
            assert_ne!(namespace(pid, kind), namespace("self", kind), "pid {pid} shares the host's {kind} namespace");
        }
        assert!(std::fs::read(format!("/proc/{pid}/environ")).unwrap().is_empty(), "pid {pid} inherited an environment");
    }
    // qemu and its backend live in a pid namespace of their own; the shim starts them there.
    for pid in [vm.vmm_pid()].into_iter().chain(vm.helper_pids().iter().copied()) {
        assert_ne!(namespace(pid, "pid"), namespace("self", "pid"), "pid {pid}");
    }
    assert_ne!(namespace(vm.shim_pid(), "pid_for_children"), namespace("self", "pid_for_children"));

    // The jail's root: only what the engine needs, read-only, the box's own vmm/ and nothing
    // else of its run directory, no /home, /proc or /sys.
    let root = PathBuf::from(format!("/proc/{}/root", vm.vmm_pid()));
    let top = entries(&root);
    for hidden in ["home", "proc", "sys", "tmp", "var", "boot"] {
        assert!(
            !top.contains(&hidden.to_string()) || hidden == "tmp" && dir.0.starts_with("/tmp"),
            "/{hidden} is visible in the jail: {top:?}"
        );
    }
    let run_dir_inside = root.join(dir.0.strip_prefix("/").unwrap());
    assert_eq!(entries(&run_dir_inside), ["vmm"], "only vmm/ of the run directory");
    assert!(entries(&run_dir_inside.join("vmm")).contains(&"console.log".to_string()));
    assert_eq!(entries(&root.join("etc")), ["ld.so.cache"]);
    assert_eq!(entries(&root.join("dev")), ["null", "random", "urandom", "zero"]);
    let write = std::fs::write(root.join("planted"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "the jail root is read-only: {write}");
    let mut listed: Vec<PathBuf> = applied.jail_mounts.clone();
    listed.sort();
    assert!(listed.iter().any(|p| p.ends_with("vmm")), "{listed:?}");
    assert!(listed.contains(&busybox_root().path), "the root disk is in the jail: {listed:?}");

    let output = vm.exec_output(ExecCommand::new("sh").args(["-c", "echo jailed"])).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "jailed\n");

    let pids = vm.pids();
    vm.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new());
    for cgroup in &applied.cgroups {
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

/// The async runtime that supervises a VM shuts down while the VM runs (the application's
/// runtime ends, the `Vm` handle lives on): the shim is killed, and its cgroups go with it.
#[test]
fn a_vm_whose_async_runtime_shuts_down_leaves_no_cgroup_behind() {
    let dir = RunDir::new("jail-runtime-gone");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let vm = runtime.block_on(boot_jailed(&dir, 128));
    let cgroups = protections(&dir).cgroups;
    assert!(!cgroups.is_empty() && cgroups.iter().all(|d| d.is_dir()), "{cgroups:?}");
    let pids = vm.pids();
    drop(runtime);
    assert_eq!(wait_gone(&pids, Duration::from_secs(2)), Vec::<u32>::new(), "the VM outlived its async runtime");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let left = loop {
        let left: Vec<&PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(left.is_empty(), "cgroups left 3 s after the VM's async runtime shut down: {left:?}");
    drop(vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_processes_are_stopped_and_continued_keeps_running() {
    // SIGSTOP interrupts qemu's timed waits (its block thread pool's idle timeout); SIGCONT
    // resumes them through restart_syscall, which the seccomp policies must allow: without it
    // qemu was killed by SIGSYS (as by a debugger attaching, a cgroup freezer, `kill -STOP`).
    let dir = RunDir::new("jail-stop-cont");
    let vm = boot_jailed(&dir, 256).await;
    for round in 0..3 {
        let out = vm.exec_output(ExecCommand::new("sh").args(["-c", "echo $0 > /tmp/round; cat /tmp/round", &round.to_string()])).await;
        assert_eq!(out.unwrap_or_else(|e| panic!("round {round}: {e}")).stdout, format!("{round}\n").into_bytes());
        for signal in [libc::SIGSTOP, libc::SIGCONT] {
            for pid in vm.pids() {
                // SAFETY: kill(2) on a process of this VM.
                assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "signal {signal} to {pid}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let out = vm.exec_output(ExecCommand::new("echo").arg("alive")).await.unwrap_or_else(|e| panic!("after stop and continue: {e}"));
    assert_eq!(out.stdout, b"alive\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cgroup_has_the_vm_limits_and_holds_a_guest_that_touches_all_its_memory() {
    let dir = RunDir::new("jail-memory");
    let vm = boot_jailed(&dir, 256).await;
    let applied = protections(&dir);
    let memory_limit = cgroup_file(&applied, "memory.limit_in_bytes", "memory.max");
    assert_eq!(read_number(&memory_limit), (256u64 + 512) << 20, "guest memory + the VMM overhead");
    assert_eq!(read_number(&cgroup_file(&applied, "pids.max", "pids.max")), 256);
    if let Some(quota) = applied.cgroups.iter().map(|d| d.join("cpu.cfs_quota_us")).find(|f| f.is_file()) {
        assert_eq!(read_number(&quota), 200_000, "one vCPU plus one core for I/O");
    }

    // dd's buffer is one 224 MiB block: the guest touches nearly all of its 256 MiB.
    let touch = ExecCommand::new("dd").args(["if=/dev/zero", "of=/dev/null", "bs=224M", "count=2"]);
    let output = vm.exec_output(touch).await.unwrap();
    assert!(output.status.success(), "dd: {}", String::from_utf8_lossy(&output.stderr));
    let usage = read_number(&cgroup_file(&applied, "memory.usage_in_bytes", "memory.current"));
    let limit = read_number(&memory_limit);
    eprintln!("memory charged to the VM's cgroup after dd: {} MiB of {} MiB", usage >> 20, limit >> 20);
    assert!(usage > 224 << 20, "the guest's memory is charged to the VM's cgroup: {usage}");
    assert!(usage < limit, "usage {usage} within the limit {limit}");
    let oom = cgroup_file(&applied, "memory.oom_control", "memory.events");
    let oom_kills = std::fs::read_to_string(&oom).unwrap();
    assert!(oom_kills.lines().any(|l| l == "oom_kill 0"), "nothing was OOM-killed:\n{oom_kills}");
    let output = vm.exec_output(ExecCommand::new("echo").arg("alive")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "alive\n", "the VM keeps running");
    vm.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A helper in the VM's cgroup and pid namespace forks until the pids limit stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pids_limit_stops_a_fork_loop_in_the_vm_namespace() {
    let dir = RunDir::new("jail-forks");
    let vm = boot_jailed(&dir, 128).await;
    let applied = protections(&dir);
    let procs = cgroup_file(&applied, "pids.max", "pids.max").with_file_name("cgroup.procs");
    let pid_ns = std::fs::File::open(format!("/proc/{}/ns/pid", vm.vmm_pid())).unwrap();
    let forked = fork_loop(&procs, &pid_ns, 1000);
    eprintln!("the fork loop made {forked} processes before fork failed");
    assert!(forked < 256, "the fork loop made {forked} processes: the pids limit did not hold");
    assert!(forked > 100, "the loop stopped early ({forked}): something else failed");
    assert!(vm.ping().await.is_ok(), "the VM survives the fork loop");
    vm.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Forks a child that joins `procs`' cgroup and `pid_ns`, then forks sleeping children until
/// fork fails (at most `attempts`); returns how many it made. They are all killed after.
fn fork_loop(procs: &Path, pid_ns: &std::fs::File, attempts: u32) -> u32 {
    use std::os::fd::AsRawFd;
    let procs = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes()).unwrap();
    let mut pipe = [0i32; 2];
    // SAFETY: plain syscalls; the child makes only async-signal-safe calls and exits with
    // _exit, so the test process's threads and allocator are never touched there.
    unsafe {
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let loop_pid = libc::fork();
        assert!(loop_pid >= 0);
        if loop_pid == 0 {
            let procs_fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if procs_fd < 0 || libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(2);
            }
            if libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
                libc::_exit(3);
            }
            libc::setpgid(0, 0);
            let mut made: u32 = 0;
            while made < attempts {
                match libc::fork() {
                    0 => {
                        libc::sleep(30);
                        libc::_exit(0);
                    }
                    -1 => break,
                    _ => made += 1,
                }
            }
            libc::write(pipe[1], (&made as *const u32).cast(), 4);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::kill(0, libc::SIGTERM);
            while libc::wait(std::ptr::null_mut()) > 0 {}
            libc::_exit(0);
        }
        libc::close(pipe[1]);
        let mut made: u32 = u32::MAX;
        let read = libc::read(pipe[0], (&mut made as *mut u32).cast(), 4);
        let mut status = 0;
        libc::waitpid(loop_pid, &mut status, 0);
        assert_eq!(read, 4, "the fork loop reported nothing (exit status {status:#x}: 2 = cgroup, 3 = setns)");
        made
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_a_protection_off_is_explicit_logged_and_recorded() {
    let dir = RunDir::new("jail-off");
    let mut options = dir.options(EngineChoice::Qemu);
    options.jail = JailOptions { cgroups: false, seccomp: false, ..JailOptions::default() };
    let vm = Vm::boot(options).await.unwrap_or_else(|e| panic!("boot: {e}"));
    let applied = protections(&dir);
    assert!(applied.cgroups.is_empty() && applied.seccomp.is_empty());
    assert!(applied.no_new_privs && !applied.namespaces.is_empty() && applied.uid.is_some());
    assert_eq!(status_field(vm.vmm_pid(), "Seccomp:"), "2", "qemu's own -sandbox filter stays on");
    assert_eq!(status_field(vm.shim_pid(), "Seccomp:"), "0");
    let log = std::fs::read_to_string(dir.0.join("shim.log")).unwrap();
    assert!(log.contains("protection cgroups is turned off") && log.contains("protection seccomp is turned off"), "{log}");
    vm.shutdown(Duration::from_secs(10)).await.unwrap();

    // A combination that cannot work fails before anything starts, naming the fix.
    let mut options = dir.options(EngineChoice::Qemu);
    options.jail = JailOptions { namespaces: false, ..JailOptions::default() };
    let error = Vm::boot(options).await.err().expect("drop_privileges without namespaces is refused");
    assert!(error.to_string().contains("drop_privileges needs namespaces"), "{error}");
}
