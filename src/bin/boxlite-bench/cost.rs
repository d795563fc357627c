//! What an idle box costs the host: PSS of its processes (shim, VMM, vsock backend, gateway,
//! virtio-fs servers), split into the guest RAM the VMM has touched and the rest, and their
//! CPU time over an idle window as a share of one core.

use std::time::Duration;

use boxlite::{ExecCommand, LiteBox};
use serde_json::json;

use crate::boxes::Bench;
use crate::procfs;
use crate::report::EngineReport;

const FIGURE: &str = "idle box";
/// The targets for a 256 MiB box on this machine (issue 15).
const TARGET_MEMORY_MIB: f64 = 40.0;
const TARGET_CPU_PERCENT: f64 = 0.5;
/// Lets the boot's and the first exec's work settle before measuring: the guest's deferred
/// work runs for ~6 s after them (free page reporting 2 s after frees, the ext4 journal's 5 s
/// commit, writeback); measured per 2 s after boot + exec: 4, 6, 5 ticks, then 0-2.
const SETTLE: Duration = Duration::from_secs(10);

/// One box's host memory, in KiB.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub pss_kib: u64,
    /// Pss of the guest RAM mapping (0 when it was not found).
    pub guest_ram_pss_kib: u64,
    pub guest_ram_rss_kib: u64,
    pub guest_ram_found: bool,
    /// (process name, pid, Pss KiB).
    pub processes: Vec<(String, u32, u64)>,
}

impl Memory {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "pss_mib": mib(self.pss_kib),
            "guest_ram_pss_mib": mib(self.guest_ram_pss_kib),
            "guest_ram_rss_mib": mib(self.guest_ram_rss_kib),
            "guest_ram_mapping_found": self.guest_ram_found,
            "rest_pss_mib": mib(self.pss_kib.saturating_sub(self.guest_ram_pss_kib)),
            "processes": self.processes.iter().map(|(name, pid, pss)| json!({ "name": name, "pid": pid, "pss_mib": mib(*pss) })).collect::<Vec<_>>(),
        })
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The memory of a box's processes now.
pub fn memory(pids: &[u32], vmm_pid: Option<u32>, memory_mib: u32) -> Memory {
    let mut total = Memory::default();
    for &pid in pids {
        let pss = procfs::pss_kib(pid).unwrap_or(0);
        total.pss_kib += pss;
        total.processes.push((procfs::comm(pid), pid, pss));
    }
    // krun's VMM is the shim; qemu's is its own process. Either holds the one RAM mapping.
    for pid in vmm_pid.into_iter().chain(pids.iter().copied()) {
        if let Some((rss, pss)) = procfs::guest_ram_kib(pid, memory_mib) {
            (total.guest_ram_rss_kib, total.guest_ram_pss_kib, total.guest_ram_found) = (rss, pss, true);
            break;
        }
    }
    total
}

/// The VMM among a box's pids: qemu for the qemu engine, else none (the shim holds it).
pub fn vmm_of(pids: &[u32]) -> Option<u32> {
    pids.iter().copied().find(|&pid| procfs::comm(pid).starts_with("qemu"))
}

/// CPU ticks of every pid, summed (processes gone count as 0).
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| procfs::cpu_ticks(pid)).sum()
}

pub async fn idle_box(bench: &Bench, report: &mut EngineReport) {
    say!("idle box: memory and {} s of idle CPU", bench.idle_secs);
    let started = match bench.start_default().await {
        Ok(started) => started,
        Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
    };
    let measured = measure(&started.lite_box, bench).await;
    bench.remove(&started.lite_box).await;
    let (memory, cpu_percent) = match measured {
        Ok(measured) => measured,
        Err(e) => return report.unavailable(FIGURE, format!("failed: {e}")),
    };
    let target = "target (issue 15)";
    report.add_vs(FIGURE, "host memory: PSS of shim + VMM + helpers (MiB)", mib(memory.pss_kib), target, TARGET_MEMORY_MIB);
    if memory.guest_ram_found {
        report.add(FIGURE, "  guest RAM touched: PSS of the RAM mapping (MiB)", mib(memory.guest_ram_pss_kib));
        report.add(FIGURE, "  the rest: VMM code, TCG cache, shim, helpers (MiB)", mib(memory.pss_kib - memory.guest_ram_pss_kib));
    } else {
        report.unavailable(FIGURE, format!("guest RAM split not available: no mapping of {} MiB in the VMM", bench.memory_mib));
    }
    for (name, _, pss) in &memory.processes {
        report.add(FIGURE, format!("    {name} PSS (MiB)"), mib(*pss));
    }
    report.add_vs(FIGURE, format!("idle CPU over {} s (% of one core)", bench.idle_secs), cpu_percent, target, TARGET_CPU_PERCENT);
    report.detail(FIGURE, json!({ "memory": memory.json(), "idle_cpu_percent": cpu_percent, "idle_secs": bench.idle_secs }));
}

async fn measure(lite_box: &LiteBox, bench: &Bench) -> Result<(Memory, f64), String> {
    lite_box.exec_output(ExecCommand::new("true")).await.map_err(|e| format!("exec true: {e}"))?;
    tokio::time::sleep(SETTLE).await;
    let pids = lite_box.pids().await;
    if pids.is_empty() {
        return Err("the box has no running VM".into());
    }
    let before = cpu_ticks(&pids);
    tokio::time::sleep(Duration::from_secs(bench.idle_secs.into())).await;
    let ticks = cpu_ticks(&pids).saturating_sub(before);
    let cpu_percent = ticks as f64 / procfs::clock_ticks_per_second() / f64::from(bench.idle_secs) * 100.0;
    Ok((memory(&pids, vmm_of(&pids), bench.memory_mib), cpu_percent))
}
