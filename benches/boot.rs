//! Boot benchmark (a harness, not a test): for each engine this host can run, boots a VM
//! BOXLITE_BENCH_RUNS times (default 10) and prints the median and p90 of
//!   - shim spawn -> VMM running (qemu spawned, or libkrun entered, as the shim reports it),
//!   - shim spawn -> guest kernel clock start (first Ping minus the guest's uptime then),
//!   - shim spawn -> first successful Ping,
//!   - the guest's own uptime at that Ping,
//!   - and the resident memory (RSS) of the shim, the VMM and helpers after 1 s idle.
//!
//! qemu runs twice: fully jailed (the default), and with every jail step off, to show what
//! the jail costs (docs/jailer.md).
//!
//! Printed as a table and as one JSON line. Run it with scripts/bench.sh.

use std::time::Duration;

use boxlite::runtime::vm::rss_kib;
use boxlite::{EngineChoice, EngineKind, HostVirtualization, JailOptions, Vm, VmOptions};

const IDLE_BEFORE_RSS: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Samples {
    vm_running_ms: Vec<f64>,
    guest_clock_start_ms: Vec<f64>,
    first_ping_ms: Vec<f64>,
    guest_uptime_ms: Vec<f64>,
    shim_rss_mib: Vec<f64>,
    vmm_rss_mib: Vec<f64>,
    helpers_rss_mib: Vec<f64>,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What the jail looks like with every step off.
const NO_JAIL: JailOptions =
    JailOptions { cgroups: false, namespaces: false, rlimits: false, drop_privileges: false, no_new_privs: false, seccomp: false };

async fn bench_engine(engine: EngineKind, jail: JailOptions, runs: usize) -> boxlite::Result<Samples> {
    let mut samples = Samples::default();
    let run_dir = std::env::temp_dir().join(format!("boxlite-bench-{}-{engine}", std::process::id()));
    for _ in 0..runs {
        let mut options = VmOptions::new(&run_dir);
        options.jail = jail;
        options.engine = match engine {
            EngineKind::Krun => EngineChoice::Krun,
            EngineKind::Qemu => EngineChoice::Qemu,
        };
        let vm = Vm::boot(options).await?;
        let timings = vm.timings();
        samples.vm_running_ms.push(timings.vm_running.as_secs_f64() * 1e3);
        samples.first_ping_ms.push(timings.first_ping.as_secs_f64() * 1e3);
        let guest_uptime_ms = vm.first_ping().first_ping_uptime_us as f64 / 1e3;
        samples.guest_uptime_ms.push(guest_uptime_ms);
        samples.guest_clock_start_ms.push(timings.first_ping.as_secs_f64() * 1e3 - guest_uptime_ms);
        tokio::time::sleep(IDLE_BEFORE_RSS).await;
        let mib = |pid: u32| rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
        samples.shim_rss_mib.push(mib(vm.shim_pid()));
        // For krun the VMM is the shim itself: report it once, as the shim.
        samples.vmm_rss_mib.push(if vm.vmm_pid() == vm.shim_pid() { 0.0 } else { mib(vm.vmm_pid()) });
        samples.helpers_rss_mib.push(vm.helper_pids().iter().map(|&p| mib(p)).sum());
        vm.shutdown(Duration::from_secs(10)).await?;
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(samples)
}

fn main() {
    let runs: usize = std::env::var("BOXLITE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10).max(1);
    let host = HostVirtualization::detect();
    let mut engines = vec![(EngineKind::Qemu, "qemu", JailOptions::default()), (EngineKind::Qemu, "qemu-nojail", NO_JAIL)];
    if host.hardware_kvm() {
        engines.insert(0, (EngineKind::Krun, "krun", JailOptions::default()));
    } else {
        println!("krun: not benchmarked: {}", host.why_no_hardware_kvm());
    }
    let accel = if host.hardware_kvm() { "kvm" } else { "tcg" };
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");

    let mut rows = Vec::new();
    for (engine, label, jail) in engines {
        match runtime.block_on(bench_engine(engine, jail, runs)) {
            Ok(samples) => rows.push((engine, label, samples)),
            Err(e) => {
                eprintln!("{label}: benchmark failed: {e}");
                std::process::exit(1);
            }
        }
    }

    type Metric = (&'static str, fn(&Samples) -> &Vec<f64>);
    let metrics: [Metric; 7] = [
        ("spawn -> VM running (ms)", |s| &s.vm_running_ms),
        ("spawn -> guest clock (ms)", |s| &s.guest_clock_start_ms),
        ("spawn -> first Ping (ms)", |s| &s.first_ping_ms),
        ("guest uptime at Ping (ms)", |s| &s.guest_uptime_ms),
        ("shim RSS idle (MiB)", |s| &s.shim_rss_mib),
        ("VMM RSS idle (MiB)", |s| &s.vmm_rss_mib),
        ("helpers RSS idle (MiB)", |s| &s.helpers_rss_mib),
    ];
    println!("\nboot benchmark: {runs} runs per engine, 1 vCPU, 256 MiB (qemu accel: {accel})\n");
    print!("{:<28}", "metric");
    for (_, label, _) in &rows {
        print!("{:>18}{:>10}", format!("{label} p50"), "p90");
    }
    println!();
    for (name, get) in metrics {
        print!("{name:<28}");
        for (_, _, samples) in &rows {
            print!("{:>18.1}{:>10.1}", percentile(get(samples), 50.0), percentile(get(samples), 90.0));
        }
        println!();
    }
    let json: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(engine, label, s)| {
            let stat = |v: &Vec<f64>| serde_json::json!({ "p50": percentile(v, 50.0), "p90": percentile(v, 90.0), "samples": v });
            (
                label.to_string(),
                serde_json::json!({
                    "runs": runs,
                    "accel": if *engine == EngineKind::Krun { "kvm" } else { accel },
                    "spawn_to_vm_running_ms": stat(&s.vm_running_ms),
                    "spawn_to_guest_clock_start_ms": stat(&s.guest_clock_start_ms),
                    "spawn_to_first_ping_ms": stat(&s.first_ping_ms),
                    "guest_uptime_at_first_ping_ms": stat(&s.guest_uptime_ms),
                    "shim_rss_idle_mib": stat(&s.shim_rss_mib),
                    "vmm_rss_idle_mib": stat(&s.vmm_rss_mib),
                    "helpers_rss_idle_mib": stat(&s.helpers_rss_mib),
                }),
            )
        })
        .collect();
    let p50 = |label: &str| rows.iter().find(|r| r.1 == label).map(|r| percentile(&r.2.first_ping_ms, 50.0));
    if let (Some(jailed), Some(bare)) = (p50("qemu"), p50("qemu-nojail")) {
        println!("\njail cost (qemu, spawn -> first Ping p50): {jailed:.1} vs {bare:.1} ms, ratio {:.2}", jailed / bare);
    }
    println!("\n{}", serde_json::Value::Object(json));
}
