//! Exec benchmark (a harness, not a test), qemu engine over the busybox test root:
//!   - warm round trip of `true` in the box (start -> exit status), p50 and p99 over
//!     BOXLITE_BENCH_EXEC_RUNS runs (default 200), beside a local fork+exec of `true`;
//!   - stdout throughput guest -> host (`dd if=/dev/zero bs=1000000`, BOXLITE_BENCH_BYTES,
//!     default 200 MB), beside a local pipe (`head -c 1G /dev/zero | cat > /dev/null`).
//!
//! Ratios are printed side by side, then everything as one JSON line. Run it with
//! scripts/bench.sh.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxlite::{DiskFormat, EngineChoice, ExecCommand, RootDisk, Vm, VmOptions};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(1)
}

fn main() {
    let runs = env_or("BOXLITE_BENCH_EXEC_RUNS", 200);
    let bytes = env_or("BOXLITE_BENCH_BYTES", 200_000_000) / 1_000_000 * 1_000_000;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/guest/busybox-rootfs.ext4");
    if !root.is_file() {
        eprintln!("{} is missing: run scripts/build-test-rootfs.sh", root.display());
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let result = runtime.block_on(async {
        let run_dir = std::env::temp_dir().join(format!("boxlite-bench-exec-{}", std::process::id()));
        let mut options = VmOptions::new(&run_dir);
        options.engine = EngineChoice::Qemu;
        options.root_disk = Some(RootDisk { path: root, format: DiskFormat::Raw, read_only: true });
        let vm = Vm::boot(options).await?;
        vm.exec_output(ExecCommand::new("true")).await?; // warm up

        let mut box_ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let out = vm.exec_output(ExecCommand::new("true")).await?;
            box_ms.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(out.status.success());
        }

        let started = Instant::now();
        // dd with 1 MB blocks: busybox `head -c` copies in small buffers and, under TCG,
        // measures the guest's syscall cost (about 10 MB/s) rather than the transport.
        let megabytes = (bytes / 1_000_000).to_string();
        let mut execution = vm.exec(ExecCommand::new("dd").args(["if=/dev/zero", "bs=1000000", &format!("count={megabytes}")])).await?;
        let mut stdout = execution.take_stdout().expect("stdout");
        let mut received = 0usize;
        while let Some(chunk) = stdout.next_chunk().await {
            received += chunk?.len();
        }
        execution.wait().await?;
        let box_seconds = started.elapsed().as_secs_f64();
        assert_eq!(received, bytes);
        vm.shutdown(Duration::from_secs(10)).await?;
        let _ = std::fs::remove_dir_all(&run_dir);
        Ok::<_, boxlite::Error>((box_ms, box_seconds))
    });
    let (mut box_ms, box_seconds) = result.unwrap_or_else(|e| {
        eprintln!("exec benchmark failed: {e}");
        std::process::exit(1)
    });

    let mut host_ms: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = std::process::Command::new("true").status().expect("running true");
            assert!(status.success());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let local_bytes: usize = 1 << 30;
    let started = Instant::now();
    let status =
        std::process::Command::new("sh").args(["-c", "head -c 1G /dev/zero | cat > /dev/null"]).status().expect("running the local pipe");
    assert!(status.success());
    let local_seconds = started.elapsed().as_secs_f64();

    box_ms.sort_by(f64::total_cmp);
    host_ms.sort_by(f64::total_cmp);
    let box_mbs = bytes as f64 / 1e6 / box_seconds;
    let local_mbs = local_bytes as f64 / 1e6 / local_seconds;
    let (b50, b99, h50, h99) =
        (percentile(&box_ms, 50.0), percentile(&box_ms, 99.0), percentile(&host_ms, 50.0), percentile(&host_ms, 99.0));
    println!("\nexec benchmark: qemu engine (TCG), {runs} runs of `true`, {bytes} bytes of stdout\n");
    println!("{:<34}{:>12}{:>12}{:>10}", "metric", "box", "host", "box/host");
    println!("{:<34}{:>12.3}{:>12.3}{:>10.1}", "exec `true` p50 (ms)", b50, h50, b50 / h50);
    println!("{:<34}{:>12.3}{:>12.3}{:>10.1}", "exec `true` p99 (ms)", b99, h99, b99 / h99);
    println!("{:<34}{:>12.1}{:>12.1}{:>10.3}", "stdout throughput (MB/s)", box_mbs, local_mbs, box_mbs / local_mbs);
    println!(
        "\n{}",
        serde_json::json!({
            "exec_true_ms": { "box_p50": b50, "box_p99": b99, "host_p50": h50, "host_p99": h99, "runs": runs },
            "stdout_mb_per_s": { "box": box_mbs, "host_pipe": local_mbs, "box_bytes": bytes, "host_bytes": local_bytes },
        })
    );
}
