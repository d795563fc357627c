//! The agent's boot steps, each timed on the guest's clock when it ends, for the host's boot
//! breakdown (PingResponse.boot_steps).

use std::sync::Mutex;

use boxlite_protocol::agent::BootStep;

static STEPS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// The step `name` has just ended.
pub fn step_done(name: &'static str) {
    let at = uptime_us();
    STEPS.lock().unwrap_or_else(|e| e.into_inner()).push((name, at));
}

/// Every step so far, in order.
pub fn steps() -> Vec<BootStep> {
    let steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    steps.iter().map(|&(name, uptime_us)| BootStep { name: name.into(), uptime_us, ..Default::default() }).collect()
}

/// CLOCK_BOOTTIME in microseconds: time since the guest kernel started.
pub fn uptime_us() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000,
        Err(_) => 0,
    }
}
