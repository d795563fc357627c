//! The `boxlite.agent.v1.Guest` service.

use std::sync::OnceLock;
use std::time::Duration;

use boxlite_protocol::agent::{PingRequest, PingResponse, ShutdownRequest, ShutdownResponse, StatsRequest, StatsResponse};
use boxlite_protocol::agent_ttrpc::Guest;
use ttrpc::asynchronous::TtrpcContext;

use crate::boot::{self, uptime_us};
use crate::log;
use crate::sys;

/// How long Shutdown waits after answering before it powers off, so that the response leaves
/// the guest before the VM disappears.
const POWER_OFF_DELAY: Duration = Duration::from_millis(20);

pub struct GuestService {
    /// Only PID 1 may power the machine off; run elsewhere (for debugging) it just exits.
    is_pid1: bool,
    first_ping_uptime_us: OnceLock<u64>,
    boot_id: String,
}

impl GuestService {
    pub fn new(is_pid1: bool) -> Self {
        Self { is_pid1, first_ping_uptime_us: OnceLock::new(), boot_id: random_boot_id() }
    }
}

/// 128 random bits as hex. GRND_INSECURE: a boot id needs uniqueness, not secrecy, and must
/// not wait for the CRNG, which may still be seeding this early in a fresh VM.
fn random_boot_id() -> String {
    let mut bytes = [0u8; 16];
    if !sys::getrandom_insecure(&mut bytes).is_ok_and(|filled| filled == bytes.len()) {
        // Fall back to the clock: still distinct between VMs booted at different instants.
        bytes[..8].copy_from_slice(&uptime_us().to_le_bytes());
        bytes[8..].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait::async_trait]
impl Guest for GuestService {
    async fn ping(&self, _ctx: &TtrpcContext, _req: PingRequest) -> ttrpc::Result<PingResponse> {
        let now = uptime_us();
        let first = *self.first_ping_uptime_us.get_or_init(|| {
            log!("first ping at {:.3} s of guest uptime", now as f64 / 1e6);
            now
        });
        let uname = nix::sys::utsname::uname()
            .map_err(|e| ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::INTERNAL, format!("uname: {e}"))))?;
        Ok(PingResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: uname.release().to_string_lossy().into_owned(),
            kernel_version: uname.version().to_string_lossy().into_owned(),
            first_ping_uptime_us: first,
            uptime_us: now,
            boot_id: self.boot_id.clone(),
            boot_steps: boot::steps(),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, _req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| {
            meminfo.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        // /proc/stat "cpu" line: user nice system idle iowait irq softirq ... in clock ticks.
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(1).max(1) as u64;
        Ok(StatsResponse {
            cpu_busy_ms: busy * 1000 / hz,
            memory_total_kib: kib("MemTotal:"),
            memory_available_kib: kib("MemAvailable:"),
            uptime_us: uptime_us(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<ShutdownResponse> {
        log!("shutdown requested: syncing file systems");
        // Sync before answering: once the host has the response, the data is on the disks.
        tokio::task::spawn_blocking(nix::unistd::sync).await.ok();
        let is_pid1 = self.is_pid1;
        tokio::spawn(async move {
            tokio::time::sleep(POWER_OFF_DELAY).await;
            log!("powering off");
            if is_pid1 {
                crate::pid1::power_off();
            }
            std::process::exit(0);
        });
        Ok(ShutdownResponse::default())
    }
}
