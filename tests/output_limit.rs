//! Collected output is bounded (real VM, qemu engine, busybox root): a process that writes
//! without end gets its first `output_limit` bytes kept, is killed, and the host's memory
//! stays bounded by the limit, not by what the guest writes.

mod common;

use boxlite::{ExecCommand, Vm};
use common::{boot_busybox, RunDir};

const CAP: usize = 16 << 20;

fn rss_mib() -> f64 {
    boxlite::runtime::vm::rss_kib(std::process::id()).unwrap() as f64 / 1024.0
}

async fn run(vm: &Vm, command: ExecCommand) -> boxlite::ExecOutput {
    let program = command.program.clone();
    vm.exec_output(command).await.unwrap_or_else(|e| panic!("exec {program}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_is_cut_at_the_limit_and_killed() {
    let dir = RunDir::new("output-limit");
    let vm = boot_busybox(&dir).await;
    // Warm up the exec path so that its one-time allocations are not counted below.
    run(&vm, ExecCommand::new("true")).await;

    let before = rss_mib();
    let out = run(&vm, ExecCommand::new("yes").output_limit(CAP)).await;
    let grew = rss_mib() - before;
    eprintln!("yes with a {} MiB cap: kept {} bytes, status {:?}, host RSS grew {grew:.1} MiB", CAP >> 20, out.stdout.len(), out.status);
    assert_eq!(out.stdout.len(), CAP, "exactly the cap is kept");
    assert!(out.stdout.chunks(2).all(|pair| pair == b"y\n"), "the kept bytes are the first ones yes wrote");
    assert!(out.stdout_truncated && !out.stderr_truncated, "{:?}", (out.stdout_truncated, out.stderr_truncated));
    assert_eq!((out.status.code, out.status.signal), (None, Some(9)), "yes is killed, not left running");
    let bound = (CAP >> 20) as f64 + 32.0;
    assert!(grew < bound, "host RSS grew {grew:.1} MiB collecting a {} MiB cap (bound {bound} MiB)", CAP >> 20);
    drop(out);

    let ps = String::from_utf8(run(&vm, ExecCommand::new("ps")).await.stdout).unwrap();
    assert!(!ps.lines().any(|l| l.trim_end().ends_with(" yes")), "yes still runs:\n{ps}");

    // stderr has its own cap, and the other stream is kept whole.
    let err = run(&vm, ExecCommand::new("sh").args(["-c", "echo out; yes err >&2"]).output_limit(1000)).await;
    assert_eq!(err.stdout, b"out\n");
    assert_eq!(err.stderr.len(), 1000);
    assert!(err.stderr_truncated && !err.stdout_truncated);
    assert_eq!(err.status.signal, Some(9));

    // Exactly the limit is not truncated, and the process is left to exit by itself.
    let exact = run(&vm, ExecCommand::new("head").args(["-c", "1000", "/dev/zero"]).output_limit(1000)).await;
    assert_eq!(exact.stdout, vec![0u8; 1000]);
    assert!(!exact.stdout_truncated);
    assert!(exact.status.success(), "{:?}", exact.status);
}
