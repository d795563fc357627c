//! Files benchmark (a harness, not a test), qemu engine, one box of the busybox test image
//! (scripts/build-test-images.sh) with one read-write volume:
//!   - copy in and copy out of one file of BOXLITE_BENCH_COPY_MB (default 256) MB, beside
//!     `tar -cf - | tar -xf -` of the same file on the host;
//!   - virtio-fs write (dd with fsync) and read (after dropping the guest's page cache) of
//!     BOXLITE_BENCH_FS_MB (default 256) MB in the volume, beside the same dd on the host
//!     (reads after dropping the host's page cache, and the guest's, so both are cold).
//!
//! Ratios are printed side by side, then everything as one JSON line. scripts/bench.sh runs it.

use std::time::Instant;

use boxlite::runtime::volumes::Volume;
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, ExecCommand, LiteBox, RuntimeOptions};

const IMAGE: &str = "localhost/boxlite/busybox:latest";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(1)
}

fn seconds_of(script: &str) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("sh").args(["-c", script]).status().expect("run sh");
    assert!(status.success(), "{script}");
    started.elapsed().as_secs_f64()
}

/// Drops the host's page cache (needs root), so that reads come from the disk.
fn drop_host_caches() {
    let dropped = std::process::Command::new("sh").args(["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"]).status();
    if !dropped.is_ok_and(|s| s.success()) {
        eprintln!("cannot drop the host's page cache (not root?): the read figures are warm ones");
    }
}

async fn box_seconds(lite: &LiteBox, script: &str) -> Result<f64, boxlite::Error> {
    let started = Instant::now();
    let out = lite.exec_output(ExecCommand::new("sh").args(["-c", script])).await?;
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(started.elapsed().as_secs_f64())
}

fn main() {
    let copy_mb = env_or("BOXLITE_BENCH_COPY_MB", 256);
    let fs_mb = env_or("BOXLITE_BENCH_FS_MB", 256);
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    if !layout.join("index.json").is_file() {
        eprintln!("{} is missing: run scripts/build-test-images.sh", layout.display());
        std::process::exit(1);
    }
    let work = std::env::temp_dir().join(format!("boxlite-bench-files-{}", std::process::id()));
    let (source, shared, out_dir) = (work.join("source"), work.join("shared"), work.join("out"));
    for dir in [&source, &shared, &out_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let file = source.join("data.bin");
    assert!(std::process::Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", file.display()), "bs=1M", &format!("count={copy_mb}"), "status=none"])
        .status()
        .unwrap()
        .success());

    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let result = runtime.block_on(async {
        let rt = BoxliteRuntime::new(RuntimeOptions { home: Some(work.join("home")), engine: EngineChoice::Qemu, ..Default::default() })?;
        rt.images().import_layout(&layout, Some("latest"), IMAGE)?;
        let volume = Volume { host_path: shared.clone(), guest_path: "/mnt/shared".into(), read_only: false };
        let lite =
            rt.create_box(BoxOptions { image: Some(IMAGE.into()), disk_size_gib: Some(4), volumes: vec![volume], ..Default::default() })?;
        lite.exec_output(ExecCommand::new("true")).await?; // boot

        let started = Instant::now();
        lite.copy_in(&file, "/root/").await?;
        let copy_in = started.elapsed().as_secs_f64();
        let started = Instant::now();
        lite.copy_out("/root/data.bin", &out_dir).await?;
        let copy_out = started.elapsed().as_secs_f64();

        let write =
            box_seconds(&lite, &format!("dd if=/dev/zero of=/mnt/shared/fs.bin bs=1M count={fs_mb} conv=fsync 2>/dev/null")).await?;
        // Cold on both sides: virtiofsd reads through the host's page cache.
        drop_host_caches();
        let read = box_seconds(&lite, "echo 3 > /proc/sys/vm/drop_caches; dd if=/mnt/shared/fs.bin of=/dev/null bs=1M 2>/dev/null").await?;
        lite.stop().await?;
        Ok::<_, boxlite::Error>((copy_in, copy_out, write, read))
    });
    let (copy_in, copy_out, fs_write, fs_read) = result.unwrap_or_else(|e| {
        eprintln!("files benchmark failed: {e}");
        std::process::exit(1)
    });
    let copied = std::fs::metadata(out_dir.join("data.bin")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(copied, (copy_mb as u64) << 20, "the copy out is incomplete");

    // The host's own figures on the same files.
    let host_dir = work.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let tar = seconds_of(&format!("tar -C {} -cf - data.bin | tar -C {} -xf -", source.display(), host_dir.display()));
    let host_write = seconds_of(&format!("dd if=/dev/zero of={}/fs.bin bs=1M count={fs_mb} conv=fsync 2>/dev/null", host_dir.display()));
    drop_host_caches();
    let host_read = seconds_of(&format!("dd if={}/fs.bin of=/dev/null bs=1M 2>/dev/null", host_dir.display()));
    let _ = std::fs::remove_dir_all(&work);

    let mbs = |mb: usize, s: f64| (mb as f64) * 1.048_576 / s;
    let rows = [
        ("copy in (MB/s; host: tar | tar)", mbs(copy_mb, copy_in), mbs(copy_mb, tar)),
        ("copy out (MB/s; host: tar | tar)", mbs(copy_mb, copy_out), mbs(copy_mb, tar)),
        ("virtio-fs write + fsync (MB/s)", mbs(fs_mb, fs_write), mbs(fs_mb, host_write)),
        ("virtio-fs read, cold (MB/s)", mbs(fs_mb, fs_read), mbs(fs_mb, host_read)),
    ];
    println!("\nfiles benchmark: qemu engine (TCG), {copy_mb} MiB copied each way, {fs_mb} MiB through virtio-fs\n");
    println!("{:<36}{:>12}{:>12}{:>10}", "metric", "box", "host", "box/host");
    for (name, boxed, host) in rows {
        println!("{name:<36}{boxed:>12.1}{host:>12.1}{:>10.3}", boxed / host);
    }
    println!(
        "\n{}",
        serde_json::json!({
            "copy_mb_per_s": { "in": rows[0].1, "out": rows[1].1, "host_tar_pipe": rows[0].2, "mib": copy_mb },
            "virtiofs_mb_per_s": { "write": rows[2].1, "read": rows[3].1, "host_write": rows[2].2, "host_read": rows[3].2, "mib": fs_mb },
        })
    );
}
