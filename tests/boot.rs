//! Boots real VMs. Needs what `scripts/setup.sh` and `scripts/build-guest.sh` build (the
//! guest kernel and initramfs in target/guest/, boxlite-shim in target/debug/, qemu and
//! vhost-device-vsock); `scripts/test.sh` builds all of it first. A missing piece fails the
//! test with the place it was looked for: nothing here skips.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{boot_qemu, process_alive, socket_files, wait_gone, RunDir};

use boxlite::runtime::agent::AgentClient;
use boxlite::{EngineChoice, EngineKind, Error, HostVirtualization, Vm};
use boxlite_protocol::AGENT_VSOCK_PORT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_boot_ping_shutdown_leaves_nothing_behind() {
    let dir = RunDir::new("lifecycle");
    let vm = boot_qemu(&dir).await;
    assert_eq!(vm.engine(), EngineKind::Qemu);
    let pong = vm.ping().await.expect("ping");
    assert_eq!(pong.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(pong.kernel_release.starts_with("6.12"), "guest kernel {:?}", pong.kernel_release);
    assert_eq!(pong.boot_id, vm.first_ping().boot_id);
    assert!(pong.uptime_us >= pong.first_ping_uptime_us && pong.first_ping_uptime_us > 0);
    // The guest's boot, step by step, adds up to its uptime at the first Ping.
    let steps = vm.timings().guest_steps;
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    // (host_connected is missing when the agent's dial failed and the host dialed in instead.)
    assert_eq!(names[..6], ["kernel", "pseudo_file_systems", "network", "root", "volumes", "serving"], "{names:?}");
    assert_eq!(names.last(), Some(&"first_ping"), "{names:?}");
    let total: Duration = steps.iter().map(|s| s.took).sum();
    assert_eq!(total.as_micros() as u64, vm.first_ping().first_ping_uptime_us);
    let pids = vm.pids();
    assert_eq!(pids.len(), 3, "shim, qemu and vhost-device-vsock: {pids:?}");
    assert!(pids.iter().all(|&p| process_alive(p)));
    assert!(!socket_files(&dir.0.join("vmm")).is_empty(), "a running VM has its vsock sockets");

    let exit = vm.shutdown(Duration::from_secs(10)).await.expect("shutdown").expect("shim exit");
    assert!(exit.success(), "the shim should exit 0 after a guest power-off, got {exit}");
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new(), "processes left running");
    assert_eq!(socket_files(&dir.0.join("vmm")), Vec::<String>::new(), "socket files left behind");
    let console = std::fs::read_to_string(dir.0.join("vmm/console.log")).unwrap();
    assert!(console.contains("shutdown requested"), "console:\n{console}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_boot_at_once_and_each_answers_on_its_own_socket() {
    let (dir_a, dir_b) = (RunDir::new("pair-a"), RunDir::new("pair-b"));
    let (a, b) = tokio::join!(boot_qemu(&dir_a), boot_qemu(&dir_b));
    let (id_a, id_b) = (a.first_ping().boot_id.clone(), b.first_ping().boot_id.clone());
    assert_eq!(id_a.len(), 32);
    assert_ne!(id_a, id_b, "two VMs must be two guests");
    for _ in 0..3 {
        assert_eq!(a.ping().await.unwrap().boot_id, id_a);
        assert_eq!(b.ping().await.unwrap().boot_id, id_b);
    }
    // A new connection through each VM's socket reaches that VM and no other.
    for (vm, id) in [(&a, &id_a), (&b, &id_b)] {
        let endpoint = vm.spec().host_to_guest(AGENT_VSOCK_PORT);
        let client = AgentClient::connect(&endpoint, Duration::from_secs(2)).await.unwrap();
        assert_eq!(&client.ping(Duration::from_secs(2)).await.unwrap().boot_id, id);
    }
    assert_ne!(a.spec().vsock_socket(), b.spec().vsock_socket());
    let pids: Vec<u32> = a.pids().into_iter().chain(b.pids()).collect();
    a.shutdown(Duration::from_secs(10)).await.unwrap();
    b.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_krun_fails_fast_without_hardware_kvm_or_boots_with_it() {
    let host = HostVirtualization::detect();
    let dir = RunDir::new("krun");
    let started = Instant::now();
    let result = Vm::boot(dir.options(EngineChoice::Krun)).await;
    if host.hardware_kvm() {
        eprintln!("case run: this host has hardware KVM ({host:?}); booting the krun engine");
        let vm = result.unwrap_or_else(|e| panic!("krun boot failed: {e}"));
        assert_eq!(vm.engine(), EngineKind::Krun);
        vm.ping().await.expect("ping over krun vsock");
        vm.shutdown(Duration::from_secs(10)).await.expect("shutdown");
    } else {
        eprintln!("case run: no hardware KVM here ({}); krun must refuse at once", host.why_no_hardware_kvm());
        let error = match result {
            Ok(_) => panic!("krun booted on a host without hardware KVM"),
            Err(e) => e,
        };
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(matches!(error, Error::EngineUnavailable { engine: EngineKind::Krun, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("qemu"), "the error must name the alternative: {message}");
        if host.kvm_pvm {
            assert!(message.contains("kvm_pvm"), "the error must name the PVM hypervisor: {message}");
        }
        assert!(!dir.0.join("shim.pid").exists(), "no shim may be started for an impossible engine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_dial_to_the_host_fails_is_dialed_instead() {
    let dir = RunDir::new("dial-fails");
    let mut options = dir.options(EngineChoice::Qemu);
    options.boot_timeout = Duration::from_secs(60);
    // The host's ready socket, unlinked as soon as it exists, long before the guest can dial
    // it (the listener stays open but unreachable): every dial of the agent fails, as when
    // the guest's connects time out, so only the host's own dial can make this boot.
    let ready = dir.0.join("vmm/vsock.sock_1025");
    let unlinker = tokio::spawn(async move {
        for _ in 0..20_000 {
            if std::fs::remove_file(&ready).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    });
    let booted = Vm::boot(options).await;
    assert!(unlinker.await.unwrap(), "the ready socket never appeared");
    let console = std::fs::read_to_string(dir.0.join("vmm/console.log")).unwrap_or_default();
    let vm = match booted {
        Ok(vm) => vm,
        Err(e) => panic!("the boot should fall back to dialing the agent: {e}\nconsole:\n{console}"),
    };
    assert!(console.contains(boxlite_protocol::CONSOLE_AGENT_AWAITS_HOST), "the agent's dial did not fail; console:\n{console}");
    let pong = vm.ping().await.expect("ping over the host's own connection");
    assert_eq!(pong.boot_id, vm.first_ping().boot_id);
    vm.shutdown(Duration::from_secs(10)).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_answers_fails_at_the_deadline_with_the_console_tail() {
    let dir = RunDir::new("silent");
    let mut options = dir.options(EngineChoice::Qemu);
    // No init, and `panic=0` (the last one wins) keeps the panicked kernel waiting forever:
    // the VM runs, but nothing in it will ever answer.
    options.extra_cmdline = "rdinit=/no/such/init panic=0".into();
    options.boot_timeout = Duration::from_secs(4);
    let started = Instant::now();
    let error = match Vm::boot(options).await {
        Ok(_) => panic!("a VM without an agent must not look booted"),
        Err(e) => e,
    };
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(7), "failed after {elapsed:?}");
    assert!(matches!(error, Error::AgentTimeout { .. }), "{error}");
    assert!(error.to_string().contains("Kernel panic"), "no console tail in: {error}");
    let shim_pid: u32 = std::fs::read_to_string(dir.0.join("shim.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(wait_gone(&[shim_pid], Duration::from_secs(2)), Vec::<u32>::new(), "failed boot left its shim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_without_init_fails_with_the_kernel_panic_in_the_error() {
    let dir = RunDir::new("noinit");
    let mut options = dir.options(EngineChoice::Qemu);
    options.extra_cmdline = "rdinit=/no/such/init".into();
    options.boot_timeout = Duration::from_secs(10);
    let started = Instant::now();
    let error = match Vm::boot(options).await {
        Ok(_) => panic!("a guest without init cannot boot"),
        Err(e) => e,
    };
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(error, Error::ShimExited { .. }), "{error}");
    assert!(error.to_string().contains("Kernel panic"), "no kernel panic in: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shim_killed_with_sigkill_is_noticed_within_a_second() {
    let dir = RunDir::new("sigkill");
    let vm = boot_qemu(&dir).await;
    let pids = vm.pids();
    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(vm.shim_pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = vm.wait_exit(Duration::from_secs(1)).await.expect("the host must notice within 1 s");
    eprintln!("noticed after {:?}: {exit}", killed_at.elapsed());
    assert!(exit.to_string().contains("signal 9"), "{exit}");
    let error = vm.ping().await.expect_err("ping to a dead VM");
    assert!(matches!(error, Error::ShimExited { .. }), "{error}");
    assert!(error.to_string().contains("killed by signal 9"), "{error}");
    // qemu and the vsock backend die with their shim (PR_SET_PDEATHSIG).
    assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new(), "VM processes outlived the shim");
    assert_eq!(socket_files(&dir.0.join("vmm")), Vec::<String>::new(), "socket files left behind");
}

#[test]
fn the_parent_process_exiting_takes_the_shim_and_the_vm_with_it() {
    let dir = RunDir::new("orphan");
    // A separate process owns the VM: `boxlite boot --hold` prints the VM's pids and waits.
    let mut owner = Command::new(env!("CARGO_BIN_EXE_boxlite"))
        .args(["boot", "--engine", "qemu", "--hold", "--run-dir"])
        .arg(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = owner.kill();
        panic!("`boxlite boot --hold` printed {line:?} ({e}); see {}", dir.0.display())
    });
    let pids: Vec<u32> = info["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
    assert_eq!(pids.len(), 3, "{info}");
    assert!(pids.iter().all(|&p| process_alive(p)));

    owner.kill().unwrap(); // SIGKILL: no destructor, no clean-up code of the owner runs
    owner.wait().unwrap();
    assert_eq!(wait_gone(&pids, Duration::from_secs(2)), Vec::<u32>::new(), "VM outlived its owner");
}
