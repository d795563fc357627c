//! Cold start: create + start + the first byte of `echo`'s output, over `--runs` boxes, with
//! the boot breakdown the library records (shim spawn -> VM running -> first Ping) beside it.
//! A first box, not counted, builds the image's base disk (cached for every later box).

use std::time::Instant;

use boxlite::ExecCommand;
use serde_json::json;

use crate::boxes::{logs_of, Bench};
use crate::report::{percentile, EngineReport};

const FIGURE: &str = "cold start";

pub async fn cold_start(bench: &Bench, report: &mut EngineReport) {
    say!("cold start: {} boxes, one after another", bench.runs);
    // The first start of an image builds its base disk: shown, not counted.
    let first = match bench.start_default().await {
        Ok(first) => first,
        Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
    };
    let first_start_ms = (first.create + first.start).as_secs_f64() * 1e3;
    bench.remove(&first.lite_box).await;

    let (mut create, mut start, mut first_byte, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut vm_running, mut first_ping) = (Vec::new(), Vec::new());
    // The guest's boot steps in the agent's order, each with its samples (ms).
    let mut guest_steps: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..bench.runs {
        let began = Instant::now();
        let started = match bench.start_default().await {
            Ok(started) => started,
            Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
        };
        let echoed = async {
            let mut execution = started.lite_box.exec(ExecCommand::new("echo").arg("hi")).await.map_err(|e| e.to_string())?;
            let mut stdout = execution.take_stdout().ok_or("echo has no stdout")?;
            let first = stdout.next_chunk().await.ok_or("echo printed nothing")?.map_err(|e| e.to_string())?;
            let at = began.elapsed();
            while stdout.next_chunk().await.is_some() {}
            let status = execution.wait().await.map_err(|e| e.to_string())?;
            if first.is_empty() || !status.success() {
                return Err(format!("echo printed {first:?} and ended with {status:?}"));
            }
            Ok::<_, String>(at)
        }
        .await;
        let at = match echoed {
            Ok(at) => at,
            Err(e) => {
                let logs = logs_of(&started.lite_box);
                bench.remove(&started.lite_box).await;
                return report.unavailable(FIGURE, format!("failed: echo: {e}\n{logs}"));
            }
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        create.push(ms(started.create));
        start.push(ms(started.start));
        total.push(ms(at));
        first_byte.push(ms(at - started.create - started.start));
        if let Some(boot) = &started.boot {
            vm_running.push(ms(boot.vm_running));
            first_ping.push(ms(boot.first_ping));
            for step in &boot.guest_steps {
                match guest_steps.iter_mut().find(|(name, _)| *name == step.name) {
                    Some((_, samples)) => samples.push(ms(step.took)),
                    None => guest_steps.push((step.name.clone(), vec![ms(step.took)])),
                }
            }
        }
        bench.remove(&started.lite_box).await;
    }

    let (p50, p90) = (percentile(&total, 50.0), percentile(&total, 90.0));
    say!("cold start p50 {p50:.1} ms, p90 {p90:.1} ms");
    report.add(FIGURE, "create + start + first byte of `echo`, p50 (ms)", p50);
    report.add(FIGURE, "create + start + first byte of `echo`, p90 (ms)", p90);
    for (metric, samples) in [
        ("  create (box record, p50 ms)", &create),
        ("  start (overlay + boot to first Ping, p50 ms)", &start),
        ("    shim spawn -> VM running (p50 ms)", &vm_running),
        ("    shim spawn -> first Ping (p50 ms)", &first_ping),
    ] {
        report.add(FIGURE, metric, percentile(samples, 50.0));
    }
    for (name, samples) in &guest_steps {
        report.add(FIGURE, format!("      guest: {name} (p50 ms, guest clock)"), percentile(samples, 50.0));
    }
    report.add(FIGURE, "  exec `echo` -> first byte (p50 ms)", percentile(&first_byte, 50.0));
    report.add(FIGURE, "first box of the image: create + start, base disk built (ms)", first_start_ms);
    let stat = |v: &Vec<f64>| json!({ "p50": percentile(v, 50.0), "p90": percentile(v, 90.0), "samples": v });
    report.detail(
        FIGURE,
        json!({
            "runs": bench.runs,
            "total_ms": stat(&total),
            "create_ms": stat(&create),
            "start_ms": stat(&start),
            "shim_spawn_to_vm_running_ms": stat(&vm_running),
            "shim_spawn_to_first_ping_ms": stat(&first_ping),
            "exec_to_first_byte_ms": stat(&first_byte),
            "guest_steps_ms": guest_steps.iter().map(|(name, samples)| json!({ "step": name, "took": stat(samples) })).collect::<Vec<_>>(),
            "first_start_with_base_disk_ms": first_start_ms,
        }),
    );
}
