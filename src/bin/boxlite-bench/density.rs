//! Density: boxes started one after another, each answering an exec of `true` and then left
//! idle, until `--density-max`, the first failure, or the host's available memory nearing
//! `--min-available-mib`. Each step prints the box count, that box's create + start +
//! exec time, the host memory used (MemAvailable's drop since the first step, and the sum
//! of every box's PSS), and, every `--probe-every` steps and at the end, whether every
//! running box still answers an exec within 1 s. Every box is removed at the end.

use std::time::{Duration, Instant};

use boxlite::LiteBox;
use serde_json::json;

use crate::boxes::{probe, Bench};
use crate::cost::{memory, mib, vmm_of};
use crate::procfs;
use crate::report::EngineReport;

const FIGURE: &str = "density";
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// The new box's own first exec may be slow (first translation under TCG).
const FIRST_EXEC_LIMIT: Duration = Duration::from_secs(30);

/// Every running box answered within the limit: (answered, slowest ms), or who did not.
struct Probe {
    answered: usize,
    slowest_ms: f64,
    failures: Vec<String>,
}

async fn probe_all(boxes: &[LiteBox]) -> Probe {
    let mut result = Probe { answered: 0, slowest_ms: 0.0, failures: Vec::new() };
    // One at a time: each is timed alone, not queued behind the others.
    for (index, lite_box) in boxes.iter().enumerate() {
        match probe(lite_box, PROBE_LIMIT).await {
            Ok(took) => {
                result.answered += 1;
                result.slowest_ms = result.slowest_ms.max(took.as_secs_f64() * 1e3);
            }
            Err(e) => result.failures.push(format!("box {} ({}): {e}", index + 1, lite_box.id())),
        }
    }
    result
}

pub async fn density(bench: &Bench, report: &mut EngineReport) {
    say!("density: up to {} boxes ({} MiB each), probing all every {} steps", bench.density_max, bench.memory_mib, bench.probe_every);
    say!("{:>5} {:>10} {:>14} {:>14} {:>12}  probe", "boxes", "box (ms)", "avail drop MiB", "sum PSS MiB", "PSS/box MiB");
    let available_at_start = procfs::mem_available_kib().unwrap_or(0);
    let mut boxes: Vec<LiteBox> = Vec::new();
    let mut steps = Vec::new();
    let mut stopped_by = format!("--density-max {}", bench.density_max);
    let mut last_probe: Option<Probe> = None;
    for count in 1..=bench.density_max {
        let available = procfs::mem_available_kib().unwrap_or(0);
        // A box may need up to its whole RAM and its overhead: stop while there is room.
        if mib(available) < bench.min_available_mib as f64 + f64::from(bench.memory_mib) {
            stopped_by = format!("host MemAvailable {:.0} MiB near --min-available-mib {}", mib(available), bench.min_available_mib);
            break;
        }
        let began = Instant::now();
        let started = match bench.start_default().await {
            Ok(started) => started,
            Err(e) => {
                stopped_by = format!("box {count} failed to start: {e}");
                break;
            }
        };
        if let Err(e) = probe(&started.lite_box, FIRST_EXEC_LIMIT).await {
            stopped_by = format!("box {count} did not answer its first exec: {e}");
            boxes.push(started.lite_box);
            break;
        }
        let box_ms = began.elapsed().as_secs_f64() * 1e3;
        boxes.push(started.lite_box);

        let mut pss_kib = 0;
        for lite_box in &boxes {
            let pids = lite_box.pids().await;
            pss_kib += memory(&pids, vmm_of(&pids), bench.memory_mib).pss_kib;
        }
        let drop_mib = mib(available_at_start.saturating_sub(procfs::mem_available_kib().unwrap_or(0)));
        let probed = if count % bench.probe_every == 0 || count == bench.density_max { Some(probe_all(&boxes).await) } else { None };
        let probe_text = match &probed {
            Some(p) if p.failures.is_empty() => format!("all {} answered, slowest {:.1} ms", p.answered, p.slowest_ms),
            Some(p) => format!("{} of {} answered; {}", p.answered, boxes.len(), p.failures.join("; ")),
            None => "-".into(),
        };
        say!("{count:>5} {box_ms:>10.0} {drop_mib:>14.0} {:>14.0} {:>12.1}  {probe_text}", mib(pss_kib), mib(pss_kib) / count as f64);
        steps.push(json!({
            "boxes": count,
            "box_ms": box_ms,
            "mem_available_drop_mib": drop_mib,
            "sum_pss_mib": mib(pss_kib),
            "probe": probed.as_ref().map(|p| json!({ "answered": p.answered, "slowest_ms": p.slowest_ms, "failures": p.failures })),
        }));
        let failed = probed.as_ref().is_some_and(|p| !p.failures.is_empty());
        if let Some(p) = probed {
            last_probe = Some(p);
        }
        if failed {
            stopped_by = format!("a running box did not answer within {PROBE_LIMIT:?} at {count} boxes");
            break;
        }
    }
    // The end: every box still running is probed, unless the last step just did.
    let running = boxes.len();
    let final_probe = match last_probe {
        Some(p) if p.answered + p.failures.len() == running => p,
        _ => probe_all(&boxes).await,
    };
    say!(
        "density: {running} boxes running at the end ({stopped_by}); {} answered an exec within {PROBE_LIMIT:?} (slowest {:.1} ms){}",
        final_probe.answered,
        final_probe.slowest_ms,
        if final_probe.failures.is_empty() { String::new() } else { format!("; {}", final_probe.failures.join("; ")) }
    );
    let last = steps.last().cloned();
    let number = |key: &str| last.as_ref().and_then(|s| s[key].as_f64()).unwrap_or(f64::NAN);
    let reached = steps.len() as f64;
    report.add_vs(FIGURE, "boxes running at once (all answering within 1 s)", final_probe.answered as f64, "target (issue 15)", 60.0);
    report.add(FIGURE, format!("  boxes started (stopped by: {stopped_by})"), reached);
    if reached > 0.0 {
        let box_ms: Vec<f64> = steps.iter().filter_map(|s| s["box_ms"].as_f64()).collect();
        report.add(FIGURE, "  create + start + exec of the first box (ms)", box_ms[0]);
        report.add(FIGURE, "  create + start + exec of the last box (ms)", box_ms[box_ms.len() - 1]);
        report.add(FIGURE, "  host MemAvailable drop at the end, per box (MiB)", number("mem_available_drop_mib") / reached);
        report.add_vs(FIGURE, "  sum of PSS at the end, per box (MiB)", number("sum_pss_mib") / reached, "target (issue 15)", 40.0);
        report.add(FIGURE, "  slowest exec of the final probe (ms)", final_probe.slowest_ms);
    }
    report.detail(
        FIGURE,
        json!({
            "max": bench.density_max,
            "stopped_by": stopped_by,
            "running_at_end": running,
            "answered_at_end": final_probe.answered,
            "final_probe_failures": final_probe.failures,
            "steps": steps,
        }),
    );
    say!("density: removing {running} boxes");
    let removals = boxes.iter().map(|b| bench.runtime.remove_box(b.id(), true));
    for (lite_box, result) in boxes.iter().zip(futures::future::join_all(removals).await) {
        if let Err(e) = result {
            say!("cannot remove box {}: {e}", lite_box.id());
        }
    }
}
