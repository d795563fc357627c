//! Warm exec round trip of `true`, split into the guest's own cost of spawning `/bin/true`
//! (an in-guest loop, minus the same loop without the spawn) and the rest, which is our
//! protocol's (host library, vsock, agent); beside a host fork+exec of `true`, and beside
//! the floor of any exchange with the agent: one RPC round trip (Stats).

use std::time::{Duration, Instant};

use boxlite::{ExecCommand, LiteBox};
use serde_json::json;

use crate::boxes::{logs_of, Bench};
use crate::report::{percentile, EngineReport};

const FIGURE: &str = "exec";
const WARM_UP: usize = 5;

pub async fn round_trip(bench: &Bench, report: &mut EngineReport) {
    say!("exec: {} round trips of `true`, loops of {} in the guest", bench.exec_runs, bench.loop_runs);
    let started = match bench.start_default().await {
        Ok(started) => started,
        Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
    };
    let measured = measure(&started.lite_box, bench).await;
    if let Err(e) = &measured {
        report.unavailable(FIGURE, format!("failed: {e}\n{}", logs_of(&started.lite_box)));
    }
    bench.remove(&started.lite_box).await;
    let Ok(Measured { box_ms, rpc_ms, with_true_s, empty_s }) = measured else { return };

    let host_ms: Vec<f64> = (0..bench.exec_runs)
        .filter_map(|_| {
            let began = Instant::now();
            let status = std::process::Command::new("true").status().ok()?;
            status.success().then(|| began.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    let n = f64::from(bench.loop_runs);
    let spawn_ms = (with_true_s - empty_s).max(0.0) / n * 1e3;
    let (b50, b99) = (percentile(&box_ms, 50.0), percentile(&box_ms, 99.0));
    let (h50, h99) = (percentile(&host_ms, 50.0), percentile(&host_ms, 99.0));
    let rpc50 = percentile(&rpc_ms, 50.0);
    say!("exec `true` p50 {b50:.3} ms (host {h50:.3}); in-guest spawn {spawn_ms:.3} ms; one RPC {rpc50:.3} ms");
    report.add_vs(FIGURE, "round trip of `true`, p50 (ms)", b50, "host fork+exec", h50);
    report.add_vs(FIGURE, "round trip of `true`, p99 (ms)", b99, "host fork+exec", h99);
    report.add_vs(FIGURE, "  in-guest spawn of /bin/true (loop, per iteration, ms)", spawn_ms, "host fork+exec p50", h50);
    report.add_vs(FIGURE, "  protocol overhead = p50 - in-guest spawn (ms)", b50 - spawn_ms, "target", 1.0);
    report.add_vs(FIGURE, "  one RPC round trip (Stats), p50 (ms)", rpc50, "protocol overhead", b50 - spawn_ms);
    report.detail(
        FIGURE,
        json!({
            "runs": bench.exec_runs,
            "box_ms": { "p50": b50, "p99": b99, "samples": box_ms },
            "host_fork_exec_ms": { "p50": h50, "p99": h99 },
            "rpc_ms": { "p50": rpc50, "p99": percentile(&rpc_ms, 99.0) },
            "guest_loop": { "iterations": bench.loop_runs, "with_true_s": with_true_s, "empty_s": empty_s, "spawn_ms": spawn_ms },
            "protocol_overhead_ms": b50 - spawn_ms,
        }),
    );
}

struct Measured {
    /// Round trips of `true` (ms).
    box_ms: Vec<f64>,
    /// Round trips of one Stats RPC (ms).
    rpc_ms: Vec<f64>,
    /// Host-timed seconds of the guest loop with `/bin/true`, and of the same loop empty.
    with_true_s: f64,
    empty_s: f64,
}

async fn measure(lite_box: &LiteBox, bench: &Bench) -> Result<Measured, String> {
    for _ in 0..WARM_UP {
        run_true(lite_box).await?;
    }
    let mut box_ms = Vec::new();
    for _ in 0..bench.exec_runs {
        box_ms.push(run_true(lite_box).await?.as_secs_f64() * 1e3);
    }
    let mut rpc_ms = Vec::new();
    for _ in 0..bench.exec_runs {
        let began = Instant::now();
        lite_box.guest_stats().await.map_err(|e| format!("Stats: {e}"))?;
        rpc_ms.push(began.elapsed().as_secs_f64() * 1e3);
    }
    // `true` alone is a shell builtin: /bin/true forks and execs busybox, like our exec does.
    let body = |command: &str| format!("i=0; while [ $i -lt {} ]; do {command}; i=$((i+1)); done", bench.loop_runs);
    let with_true = timed_sh(lite_box, &body("/bin/true")).await?;
    let empty = timed_sh(lite_box, &body(":")).await?;
    Ok(Measured { box_ms, rpc_ms, with_true_s: with_true, empty_s: empty })
}

async fn run_true(lite_box: &LiteBox) -> Result<Duration, String> {
    let began = Instant::now();
    let out = lite_box.exec_output(ExecCommand::new("true")).await.map_err(|e| format!("exec true: {e}"))?;
    if !out.status.success() {
        return Err(format!("`true` ended with {:?}", out.status));
    }
    Ok(began.elapsed())
}

async fn timed_sh(lite_box: &LiteBox, script: &str) -> Result<f64, String> {
    let began = Instant::now();
    let out = lite_box.exec_output(ExecCommand::new("sh").args(["-c", script])).await.map_err(|e| format!("exec sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("sh -c {script:?} ended with {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(began.elapsed().as_secs_f64())
}
