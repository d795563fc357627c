//! Stdout throughput guest -> host, beside the raw vsock channel and a host pipe.
//!
//! - exec stream: `dd if=/dev/zero bs=1M` in a box of the bench's image, its stdout counted
//!   by the host through the library (agent, ttrpc over vsock, the library's buffers).
//! - raw channel: python3 in a box of the Python image (scripts/build-python-image.sh)
//!   listens on AF_VSOCK port RAW_PORT and writes zeros in `sendall`s of
//!   `GUEST_VSOCK_MAX_WRITE` (16 KiB, the agent's own cap) to the connection the host makes
//!   through vhost-device-vsock's socket `<box>/vmm/vsock.sock` (`CONNECT <port>`, the way the
//!   library reaches the agent); the host reads and counts. No agent, no ttrpc: the guest
//!   kernel, the virtio-vsock device, the backend and one unix socket. (A guest-dialled
//!   connection to a host listener on `vsock.sock_<port>` never arrived in a try here, so the
//!   host dials.)
//!   Why 16 KiB: the agent writes so (see `GUEST_VSOCK_MAX_WRITE`). An unpatched Linux
//!   6.12 sends a vsock packet over ~32 KiB as a header plus several data descriptors,
//!   which vhost-device-vsock 0.3 drops, and the stream stops for good; our kernel keeps
//!   packets linear (patch 5), so `BOXLITE_BENCH_RAW_WRITE=<bytes>` may set any size
//!   (1 MiB `sendall`s measured no faster: 85 against 84 MB/s).
//! - python3 writing the same zeros to its stdout (1 MiB writes: a pipe takes them) through
//!   our exec stream, in the same box, so that the two differ in the path the bytes take.
//! - host pipe: `head -c 1G /dev/zero | cat > /dev/null`.
//!
//! Guest figures are timed from the first byte the host receives to the last (startup of
//! the writer is not the channel's); MB = 10^6 bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use boxlite::runtime::agent::open_guest_stream;
use boxlite::runtime::spec::HostToGuestEndpoint;
use boxlite::{EngineKind, ExecCommand, LiteBox};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::boxes::{logs_of, Bench};
use crate::report::EngineReport;

const FIGURE: &str = "stream";
/// The host port the raw writer connects to (the agent's are 1024 and 1025).
const RAW_PORT: u32 = 5001;
const PYTHON_REFERENCE: &str = "localhost/bench/python:3";
/// Bounds the raw channel's whole measurement.
const RAW_LIMIT: Duration = Duration::from_secs(90);
/// Bounds every guest writer: a stuck one fails its row instead of hanging the harness.
const WRITER_TIMEOUT: Duration = Duration::from_secs(300);
/// Once data flows, this long without a byte is a stall (reported with the count so far).
const RAW_STALL: Duration = Duration::from_secs(10);
/// Overrides the raw writer's `sendall` size (bytes), e.g. 1048576 to show the stall.
const RAW_WRITE_ENV: &str = "BOXLITE_BENCH_RAW_WRITE";

/// The raw writer's `sendall` size: the agent's cap unless [`RAW_WRITE_ENV`] says otherwise.
fn raw_write_size() -> usize {
    std::env::var(RAW_WRITE_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0 && n <= 1 << 20)
        .unwrap_or(boxlite_protocol::GUEST_VSOCK_MAX_WRITE)
}

/// Bytes counted and seconds from the first to the last.
struct Measured {
    bytes: u64,
    seconds: f64,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// Counts a stream's bytes, timing from the first to the end.
#[derive(Default)]
struct Counter {
    first: Option<(Instant, usize)>,
    bytes: u64,
}

impl Counter {
    fn add(&mut self, n: usize) {
        if self.first.is_none() {
            self.first = Some((Instant::now(), n));
        }
        self.bytes += n as u64;
    }

    fn finish(self) -> Result<Measured, String> {
        let (at, first_len) = self.first.ok_or("no byte arrived")?;
        // The first chunk arrived at `at`: what came after it took the time measured.
        Ok(Measured { bytes: self.bytes - first_len as u64, seconds: at.elapsed().as_secs_f64().max(1e-9) })
    }
}

pub async fn throughput(bench: &Bench, python_layout: Option<&Path>, report: &mut EngineReport) {
    let mib = bench.stream_mib;
    let bytes = u64::from(mib) << 20;
    say!("stream: {mib} MiB guest -> host, exec stdout and raw vsock");
    let host = host_pipe();
    let host_label = "host pipe";

    match bench.start_default().await {
        Err(e) => report.unavailable(FIGURE, format!("failed: {e}")),
        Ok(started) => {
            let dd = ExecCommand::new("dd").args(["if=/dev/zero", "bs=1048576", &format!("count={mib}")]).timeout(WRITER_TIMEOUT);
            say!("stream: dd in a box of the bench's image");
            match exec_stream(&started.lite_box, dd, bytes).await {
                Ok(m) => {
                    report.add_vs(FIGURE, "exec stdout of `dd bs=1M` (MB/s)", m.mb_per_s(), host_label, host.mb_per_s());
                    report.detail("stream_dd", json!({ "bytes": m.bytes, "seconds": m.seconds, "mb_per_s": m.mb_per_s() }));
                }
                Err(e) => report.unavailable(FIGURE, format!("failed: dd: {e}\n{}", logs_of(&started.lite_box))),
            }
            bench.remove(&started.lite_box).await;
        }
    }

    let python = python_layout.map(Path::to_path_buf).unwrap_or_else(|| boxlite::runtime::helpers::cache_dir().join("test-images/python"));
    if bench.engine != EngineKind::Qemu {
        report.unavailable(FIGURE, "raw vsock channel not measured: only through qemu's vhost-device-vsock socket so far");
    } else if !python.join("index.json").is_file() {
        report.unavailable(
            FIGURE,
            format!("raw vsock channel not available: {} is missing; run scripts/build-python-image.sh", python.display()),
        );
    } else {
        match python_pair(bench, &python, mib).await {
            Ok((Err(e), stdout)) => {
                report.add_vs(FIGURE, "exec stdout, python3 writing 1 MiB blocks (MB/s)", stdout.mb_per_s(), host_label, host.mb_per_s());
                report.unavailable(FIGURE, format!("failed: raw vsock channel: {e}"));
                report.detail(
                    "stream_python",
                    json!({ "exec_stdout": { "bytes": stdout.bytes, "seconds": stdout.seconds, "mb_per_s": stdout.mb_per_s() } }),
                );
            }
            Ok((Ok(raw), stdout)) => {
                let write = raw_write_size();
                report.add_vs(
                    FIGURE,
                    format!("raw vsock channel, python3 sendall of {write} bytes (MB/s)"),
                    raw.mb_per_s(),
                    host_label,
                    host.mb_per_s(),
                );
                report.add_vs(FIGURE, "exec stdout, python3 writing 1 MiB blocks (MB/s)", stdout.mb_per_s(), "raw vsock", raw.mb_per_s());
                report.detail(
                    "stream_python",
                    json!({
                        "raw_vsock": { "bytes": raw.bytes, "seconds": raw.seconds, "mb_per_s": raw.mb_per_s(), "port": RAW_PORT, "write_bytes": write },
                        "exec_stdout": { "bytes": stdout.bytes, "seconds": stdout.seconds, "mb_per_s": stdout.mb_per_s() },
                    }),
                );
            }
            Err(e) => report.unavailable(FIGURE, format!("failed: python3 box: {e}")),
        }
    }
    report.detail("stream_host_pipe", json!({ "bytes": host.bytes, "seconds": host.seconds, "mb_per_s": host.mb_per_s() }));
}

fn host_pipe() -> Measured {
    let bytes = 1u64 << 30;
    let began = Instant::now();
    let ok = std::process::Command::new("sh").args(["-c", "head -c 1G /dev/zero | cat > /dev/null"]).status().is_ok_and(|s| s.success());
    Measured { bytes: if ok { bytes } else { 0 }, seconds: began.elapsed().as_secs_f64() }
}

async fn exec_stream(lite_box: &LiteBox, command: ExecCommand, expected: u64) -> Result<Measured, String> {
    let mut execution = lite_box.exec(command).await.map_err(|e| e.to_string())?;
    let mut stdout = execution.take_stdout().ok_or("no stdout")?;
    let mut counter = Counter::default();
    while let Some(chunk) = stdout.next_chunk().await {
        counter.add(chunk.map_err(|e| e.to_string())?.len());
    }
    let status = execution.wait().await.map_err(|e| e.to_string())?;
    if !status.success() || counter.bytes != expected {
        return Err(format!("{} of {expected} bytes, status {status:?}", counter.bytes));
    }
    counter.finish()
}

/// In one box of the Python image: the raw vsock channel, then python's stdout.
/// The raw channel's result, and python's stdout measured first in the same box.
async fn python_pair(bench: &Bench, layout: &Path, mib: u32) -> Result<(Result<Measured, String>, Measured), String> {
    bench.runtime.images().import_layout(layout, Some("3"), PYTHON_REFERENCE).map_err(|e| format!("import {}: {e}", layout.display()))?;
    let mut options = bench.box_options();
    (options.image, options.root_disk) = (Some(PYTHON_REFERENCE.into()), None);
    say!("stream: starting a box of the Python image (its first start builds its base disk)");
    let started = bench.start(options).await?;
    let lite_box = &started.lite_box;
    let result = async {
        let script = format!("import sys\nb = bytes(1 << 20)\nw = sys.stdout.buffer\nfor _ in range({mib}):\n    w.write(b)\nw.flush()\n");
        say!("stream: python3 writing to its stdout");
        let python = ExecCommand::new("python3").args(["-c", &script]).timeout(WRITER_TIMEOUT);
        let stdout = exec_stream(lite_box, python, u64::from(mib) << 20).await?;
        say!("stream: python3 writing to a raw vsock connection");
        let raw = raw_vsock(lite_box, mib).await;
        Ok((raw, stdout))
    }
    .await
    .map_err(|e: String| format!("{e}\n{}", logs_of(lite_box)));
    bench.remove(lite_box).await;
    result
}

async fn raw_vsock(lite_box: &LiteBox, mib: u32) -> Result<Measured, String> {
    // The guest listens and the host dials, through the backend's multiplexed socket, as the
    // library reaches the agent (`CONNECT <port>` then `OK <port>`).
    let socket = lite_box.dir().join("vmm/vsock.sock");
    // Writes of `write` bytes (see the module's note: larger ones stall the backend).
    let write = raw_write_size();
    let total = u64::from(mib) << 20;
    let (count, rest) = (total / write as u64, total % write as u64);
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\ns.bind((socket.VMADDR_CID_ANY, {RAW_PORT}))\ns.listen(1)\nprint(\"listening\", flush=True)\nc, _ = s.accept()\nb = bytes({write})\nfor _ in range({count}):\n    c.sendall(b)\nif {rest}:\n    c.sendall(bytes({rest}))\nc.close()\n"
    );
    say!("stream: raw vsock: python3 sendall of {write} bytes x {count} (+ {rest})");
    let python = ExecCommand::new("python3").args(["-c", &script]).timeout(WRITER_TIMEOUT);
    let mut execution = lite_box.exec(python).await.map_err(|e| e.to_string())?;
    let mut said = execution.take_stdout().ok_or("no stdout")?;
    let mut phase = "python3 not listening yet".to_string();
    let reading = async {
        // Dial only once the guest says it listens (no dials refused while python3 starts).
        let mut line = Vec::new();
        while !line.ends_with(b"listening\n") {
            match said.next_chunk().await {
                Some(chunk) => line.extend_from_slice(&chunk.map_err(|e| e.to_string())?),
                None => return Err("python3 ended before it listened".to_string()),
            }
        }
        phase = "python3 listens; no OK from the backend yet".into();
        let mut stream = connect_when_listening(&socket).await?;
        phase = "connected (the backend answered OK) but no byte came".into();
        let mut counter = Counter::default();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = stream.read(&mut buffer);
            let n = if counter.first.is_some() {
                match tokio::time::timeout(RAW_STALL, read).await {
                    Ok(n) => n,
                    Err(_) => {
                        return Err(format!("stalled: {} bytes arrived, then none for {RAW_STALL:?}", counter.bytes));
                    }
                }
            } else {
                read.await
            }
            .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            counter.add(n);
            phase = format!("data came ({} bytes), then stopped", counter.bytes);
        }
        Ok::<_, String>(counter)
    };
    // Bounded as a whole: in tries here the guest's end never answered (see the report).
    let counter = match tokio::time::timeout(RAW_LIMIT, reading).await {
        Ok(counter) => counter,
        Err(_) => Err(format!("no end of the data through guest port {RAW_PORT} within {RAW_LIMIT:?}: {phase}")),
    };
    if counter.is_err() {
        // A writer still waiting in accept() would hold output() until its timeout.
        let _ = execution.kill().await;
    }
    let out = execution.output().await.map_err(|e| e.to_string())?;
    let counter = counter.map_err(|e| format!("{e}; python3: {}", String::from_utf8_lossy(&out.stderr)))?;
    let expected = u64::from(mib) << 20;
    if !out.status.success() || counter.bytes != expected {
        return Err(format!("{} of {expected} bytes, python3 {:?}: {}", counter.bytes, out.status, String::from_utf8_lossy(&out.stderr)));
    }
    counter.finish()
}

/// Connects to guest port RAW_PORT through the backend's socket, retrying until the guest
/// program listens (the backend refuses until then), for up to a minute.
async fn connect_when_listening(socket: &Path) -> Result<tokio::net::UnixStream, String> {
    let endpoint = HostToGuestEndpoint { socket: socket.to_path_buf(), connect_line: Some(format!("CONNECT {RAW_PORT}\n")) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        // Bounded per try: a refused CONNECT may get no answer at all.
        match tokio::time::timeout(Duration::from_secs(5), open_guest_stream(&endpoint)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer to CONNECT {RAW_PORT} within 5 s"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("guest port {RAW_PORT} did not accept within 60 s: {last}"))
}
