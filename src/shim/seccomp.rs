//! Seccomp policies, one per process kind (docs/seccomp.md). The policies are data,
//! seccomp/<kind>.json, compiled to BPF at build time (build.rs) and embedded here.
//!
//! - qemu, vhost-device-vsock and virtiofsd: `apply_prepared` in the child between fork and exec
//!   (Command::pre_exec), so the policy covers the helper from its first instruction.
//! - supervisor: the shim after it has spawned both helpers, `apply_all_threads`.
//! - krun: the shim before `krun_start_enter`, `apply_all_threads`.
//! - netgw: boxlite-netgw on itself before it reads its first frame, `apply_all_threads`.
//!
//! Every policy's default action kills the whole process (SECCOMP_RET_KILL_PROCESS): a
//! violation shows as death by SIGSYS and a `type=1326` audit line naming the syscall.

/// x86_64 only: the policies are compiled for it.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("the seccomp policies are compiled for x86_64 only");

pub use libc::sock_filter;

/// A process kind with a policy of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// qemu-system-x86_64 (TCG or KVM), from its execve on.
    Qemu,
    /// vhost-device-vsock, from its execve on.
    VhostVsock,
    /// The shim supervising qemu and vhost-device-vsock, after spawning them.
    Supervisor,
    /// The shim running libkrun's VMM, from krun_start_enter on.
    Krun,
    /// boxlite-netgw, the box's network gateway, once its descriptors and runtime are set up.
    Netgw,
    /// virtiofsd serving one volume (qemu engine), from its execve on.
    Virtiofsd,
}

impl Policy {
    pub const ALL: [Policy; 6] = [Policy::Qemu, Policy::VhostVsock, Policy::Supervisor, Policy::Krun, Policy::Netgw, Policy::Virtiofsd];

    /// The policy's name: its file seccomp/<name>.json and the probe's argument.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Qemu => "qemu",
            Policy::VhostVsock => "vhost_vsock",
            Policy::Supervisor => "supervisor",
            Policy::Krun => "krun",
            Policy::Netgw => "netgw",
            Policy::Virtiofsd => "virtiofsd",
        }
    }

    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            Policy::Qemu => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_qemu.bpf")),
            Policy::VhostVsock => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_vhost_vsock.bpf")),
            Policy::Supervisor => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_supervisor.bpf")),
            Policy::Krun => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_krun.bpf")),
            Policy::Netgw => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_netgw.bpf")),
            Policy::Virtiofsd => include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_virtiofsd.bpf")),
        }
    }
}

/// The policy's BPF program, decoded from the bytes build.rs wrote (8 bytes per
/// instruction, little-endian). Call it before fork: `apply_prepared` must not allocate.
pub fn program(policy: Policy) -> Vec<sock_filter> {
    policy
        .bytes()
        .chunks_exact(8)
        .map(|b| sock_filter {
            code: u16::from_le_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect()
}

/// Installs the policy on every thread of this process (TSYNC), after setting no_new_privs.
/// For the shim itself: the supervisor once the helpers run, krun before krun_start_enter.
pub fn apply_all_threads(policy: Policy) -> Result<(), String> {
    let program: seccompiler::BpfProgram =
        program(policy).into_iter().map(|i| seccompiler::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("installing the {} seccomp policy: {e}", policy.name()))
}

/// Installs an already decoded program on the calling thread, after setting no_new_privs.
/// Async-signal-safe (no allocation, no locks: two syscalls), so it may run in
/// `Command::pre_exec` between fork and exec; decode the program with `program` before.
pub fn apply_prepared(program: &[sock_filter]) -> std::io::Result<()> {
    if program.is_empty() || program.len() > usize::from(u16::MAX) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    nix::sys::prctl::set_no_new_privs()?;
    crate::sys::seccomp_set_mode_filter(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_decodes_to_a_program_ending_in_a_return() {
        for policy in Policy::ALL {
            let program = program(policy);
            assert!(program.len() > 10, "{} has only {} instructions", policy.name(), program.len());
            assert_eq!(policy.bytes().len(), program.len() * 8, "{}", policy.name());
            // BPF_RET | BPF_K: a filter must end by deciding.
            assert_eq!(program.last().unwrap().code, 0x06, "{} does not end in a return", policy.name());
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for policy in Policy::ALL {
            assert_eq!(Policy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(Policy::from_name("qemu-system"), None);
        assert_eq!(Policy::from_name(""), None);
    }

    /// Runs /bin/true with `policy` installed between fork and exec, as the shim spawns qemu.
    fn true_under(policy: Policy) -> std::process::ExitStatus {
        use std::os::unix::process::CommandExt;
        let program = program(policy);
        let mut command = std::process::Command::new("/bin/true");
        // SAFETY: apply_prepared is async-signal-safe and `program` was decoded before fork.
        unsafe { command.pre_exec(move || apply_prepared(&program)) };
        command.status().expect("spawn /bin/true")
    }

    #[test]
    fn a_helper_policy_lets_a_program_start_and_the_supervisor_policy_does_not() {
        use std::os::unix::process::ExitStatusExt;
        // execve, the dynamic loader and libc start-up pass the helpers' policies...
        assert!(true_under(Policy::VhostVsock).success());
        assert!(true_under(Policy::Qemu).success());
        assert!(true_under(Policy::Virtiofsd).success());
        // ...while the shim's own policy has no execve: the child dies by SIGSYS.
        assert_eq!(true_under(Policy::Supervisor).signal(), Some(libc::SIGSYS));
        assert_eq!(true_under(Policy::Krun).signal(), Some(libc::SIGSYS));
        assert_eq!(true_under(Policy::Netgw).signal(), Some(libc::SIGSYS));
    }

    #[test]
    fn an_empty_program_is_refused_before_any_syscall() {
        assert_eq!(apply_prepared(&[]).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
