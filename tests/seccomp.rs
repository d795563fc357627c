//! The seccomp policies (docs/seccomp.md), checked the way Firecracker checks its own: for
//! each compiled policy, boxlite-seccomp-probe installs it on itself and makes one syscall.
//! A syscall no boxlite process may make must kill the probe by SIGSYS; getpid, which every
//! policy allows, must return. So the test fails if a policy lets a forbidden call through,
//! and also if a policy is so broken that it kills everything.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const POLICIES: [&str; 6] = ["qemu", "vhost_vsock", "supervisor", "krun", "netgw", "virtiofsd"];
const FORBIDDEN: [&str; 7] = ["ptrace", "mount", "umount2", "kexec_load", "bpf", "setns", "reboot"];

/// The probe is a bin of the boxlite-shim package, so `cargo test --test seccomp` alone does
/// not build it; scripts/test.sh builds the whole workspace first.
fn probe() -> PathBuf {
    // The test binary is target/<profile>/deps/seccomp-<hash>; the probe is target/<profile>/.
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").join("boxlite-seccomp-probe");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p boxlite-shim` (scripts/test.sh builds the workspace)",
        path.display()
    );
    path
}

fn run(policy: &str, syscall: &str) -> Output {
    Command::new(probe()).args([policy, syscall]).output().unwrap_or_else(|e| panic!("running the probe: {e}"))
}

fn describe(out: &Output) -> String {
    format!("{:?}; stdout {:?}; stderr {:?}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn every_policy_kills_the_forbidden_syscalls_by_sigsys() {
    for policy in POLICIES {
        for syscall in FORBIDDEN {
            let out = run(policy, syscall);
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSYS),
                "the {policy} policy let {syscall} through or failed otherwise: {}",
                describe(&out)
            );
            assert!(out.stdout.is_empty(), "{policy}/{syscall}: the probe went on after the call: {}", describe(&out));
        }
    }
}

#[test]
fn every_policy_allows_getpid_and_the_probe_exits_cleanly() {
    for policy in POLICIES {
        let out = run(policy, "getpid");
        assert!(out.status.success(), "getpid under the {policy} policy: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("getpid returned "), "{policy}: {stdout:?}");
        // The probe's pid, not an error (-1).
        assert!(!stdout.contains("returned -1"), "{policy}: {stdout:?}");
    }
}

#[test]
fn every_policy_allows_the_restart_of_an_interrupted_sleep() {
    // The kernel resumes a timed futex, nanosleep or poll that a signal interrupted (a stop and
    // continue, a handler) through restart_syscall: a policy without it kills the process.
    for policy in POLICIES {
        let out = run(policy, "restart_syscall");
        assert!(out.status.success(), "restart_syscall under the {policy} policy: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("restart_syscall returned "), "{policy}: {}", describe(&out));
    }
}

#[test]
fn unshare_is_killed_too_and_a_bad_policy_name_is_a_usage_error() {
    for policy in POLICIES {
        let out = run(policy, "unshare");
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{policy}/unshare: {}", describe(&out));
    }
    // An unknown policy name is a usage error (exit 2), not a crash: the probe itself works.
    let out = run("no-such-policy", "ptrace");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn each_policy_opens_only_its_socket_families() {
    // virtiofsd's one AF_UNIX socket is libcap-ng's syslog(3) (its listener comes from the shim).
    for policy in ["qemu", "vhost_vsock", "virtiofsd"] {
        let unix = run(policy, "socket_unix");
        assert!(unix.status.success(), "{policy}/socket_unix: {}", describe(&unix));
        let inet = run(policy, "socket_inet");
        assert_eq!(inet.status.signal(), Some(libc::SIGSYS), "{policy}/socket_inet: {}", describe(&inet));
    }
    // Once its children run, the supervisor opens no sockets at all.
    let unix = run("supervisor", "socket_unix");
    assert_eq!(unix.status.signal(), Some(libc::SIGSYS), "supervisor/socket_unix: {}", describe(&unix));
    // The network gateway opens internet sockets (AF_INET, AF_INET6) and nothing else.
    let inet = run("netgw", "socket_inet");
    assert!(inet.status.success(), "netgw/socket_inet: {}", describe(&inet));
    let unix = run("netgw", "socket_unix");
    assert_eq!(unix.status.signal(), Some(libc::SIGSYS), "netgw/socket_unix: {}", describe(&unix));
}
