//! The shim's first protections (issue 7 in progress): a per-VM cgroup with the VM's
//! limits, rlimits, no_new_privs, a cleared environment, recorded in protections.json and
//! removed with the VM. Namespaces, pivot_root, privilege dropping and seccomp come next.

mod common;

use std::time::Duration;

use boxlite::{EngineChoice, JailOptions, Protections, Vm};
use common::{wait_gone, RunDir};

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/{pid}/status")).split_whitespace().nth(1).unwrap().to_string()
}

fn limit(pid: u32, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc/{pid}/limits"));
    line[name.len()..].split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_processes_run_in_their_cgroup_with_limits_and_no_new_privs() {
    let dir = RunDir::new("jail-on");
    let mut options = dir.options(EngineChoice::Qemu);
    options.memory_mib = 256;
    let vm = Vm::boot(options).await.unwrap_or_else(|e| panic!("boot: {e}"));
    let protections: Protections = serde_json::from_slice(&std::fs::read(dir.0.join("protections.json")).unwrap()).unwrap();
    assert!(protections.rlimits && protections.no_new_privs && protections.environment_cleared && protections.inherited_fds_closed);
    assert!(!protections.cgroups.is_empty());
    let leaf = format!("boxlite/shim-{}", vm.shim_pid());

    for pid in vm.pids() {
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "pid {pid}");
        assert_eq!(limit(pid, "Max core file size"), "0", "pid {pid}");
        assert_eq!(limit(pid, "Max open files"), "4096", "pid {pid}");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroups.lines().filter(|l| l.ends_with(&leaf)).count() >= 1, "pid {pid} not in {leaf}:\n{cgroups}");
    }
    assert_eq!(status_field(vm.vmm_pid(), "Seccomp:"), "2", "qemu runs under its -sandbox seccomp filter");
    let qemu_environ = std::fs::read(format!("/proc/{}/environ", vm.vmm_pid())).unwrap();
    assert!(qemu_environ.is_empty(), "the VMM inherits no environment");

    for cgroup in &protections.cgroups {
        assert!(cgroup.ends_with(&leaf), "{}", cgroup.display());
        let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).ok().map(|v| v.trim().to_string());
        if let Some(memory) = read("memory.limit_in_bytes").or_else(|| read("memory.max")) {
            assert_eq!(memory, ((256u64 + 512) << 20).to_string());
        }
        if let Some(pids) = read("pids.max") {
            assert_eq!(pids, "256");
        }
        if let Some(quota) = read("cpu.cfs_quota_us") {
            assert_eq!(quota, "200000", "one vCPU plus one core for I/O");
        }
    }
    let pids = vm.pids();
    vm.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new());
    for cgroup in &protections.cgroups {
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_a_protection_off_is_explicit_logged_and_recorded() {
    let dir = RunDir::new("jail-off");
    let mut options = dir.options(EngineChoice::Qemu);
    options.jail = JailOptions { cgroups: false, ..JailOptions::default() };
    let vm = Vm::boot(options).await.unwrap_or_else(|e| panic!("boot: {e}"));
    let protections: Protections = serde_json::from_slice(&std::fs::read(dir.0.join("protections.json")).unwrap()).unwrap();
    assert!(protections.cgroups.is_empty() && protections.no_new_privs);
    let log = std::fs::read_to_string(dir.0.join("shim.log")).unwrap();
    assert!(log.contains("protection cgroups is turned off"), "{log}");
    vm.shutdown(Duration::from_secs(10)).await.unwrap();
}
