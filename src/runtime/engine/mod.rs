//! Engines (VMMs) and how one is chosen for this host.
//!
//! krun (libkrun, linked into boxlite-shim) needs hardware virtualisation; qemu runs
//! everywhere, with `-accel kvm` where hardware KVM is usable and TCG emulation elsewhere.
//! Both boot the same kernel, initramfs and agent.

/// Engine kinds and host detection (shared with the shim).
pub use boxlite_vmspec::engine::{EngineKind, HostVirtualization};
/// The qemu and vhost-device-vsock command lines (shared with the shim).
pub use boxlite_vmspec::qemu;

use std::str::FromStr;

use crate::runtime::error::{Error, Result};

/// Environment variable that picks the engine when the caller left it on auto: `auto`,
/// `krun` or `qemu`.
pub const ENGINE_ENV: &str = "BOXLITE_ENGINE";

/// What the caller asked for; [`EngineChoice::resolve`] turns it into an engine for this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    #[default]
    Auto,
    Krun,
    Qemu,
}

impl FromStr for EngineChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(EngineChoice::Auto),
            "krun" => Ok(EngineChoice::Krun),
            "qemu" => Ok(EngineChoice::Qemu),
            other => Err(Error::InvalidOption { field: "engine", reason: format!("{other:?} is not an engine; use auto, krun or qemu") }),
        }
    }
}

impl EngineChoice {
    /// An explicit `requested` engine stands; `Auto` yields to `BOXLITE_ENGINE` when set.
    pub fn with_env_override(requested: EngineChoice) -> Result<EngineChoice> {
        if requested != EngineChoice::Auto {
            return Ok(requested);
        }
        match std::env::var(ENGINE_ENV) {
            Ok(value) if !value.trim().is_empty() => value.parse().map_err(|_| Error::InvalidOption {
                field: "engine",
                reason: format!("{ENGINE_ENV}={value:?} is not an engine; use auto, krun or qemu"),
            }),
            _ => Ok(requested),
        }
    }

    /// Picks the engine for a host. Asking for krun where it cannot run fails here, at once,
    /// with the reason and the alternative, instead of timing out in a guest that never boots.
    pub fn resolve(self, host: &HostVirtualization) -> Result<EngineKind> {
        match self {
            EngineChoice::Qemu => Ok(EngineKind::Qemu),
            EngineChoice::Auto if host.hardware_kvm() => Ok(EngineKind::Krun),
            EngineChoice::Auto => Ok(EngineKind::Qemu),
            EngineChoice::Krun if host.hardware_kvm() => Ok(EngineKind::Krun),
            EngineChoice::Krun => Err(Error::EngineUnavailable {
                engine: EngineKind::Krun,
                reason: host.why_no_hardware_kvm(),
                fix: format!(
                    "Use the qemu engine instead ({ENGINE_ENV}=qemu, or leave the engine on auto, which picks qemu with TCG emulation here)"
                ),
            }),
        }
    }
}

/// The kernel command line for an engine. `quiet` and the TCG-only tunings come from
/// measurements on a TCG host (see docs/boot.md); `panic=-1` turns an agent crash into an
/// immediate VM exit instead of a hang.
pub fn kernel_cmdline(engine: EngineKind, hardware_acceleration: bool, agent_port: u32, extra: &str) -> String {
    let mut args: Vec<String> = vec!["quiet".into(), "panic=-1".into(), "rdinit=/init".into()];
    match engine {
        EngineKind::Qemu => {
            args.extend(["console=ttyS0", "reboot=t", "noreplace-smp"].map(String::from));
            // Free page reporting (the balloon device, vmspec/src/qemu.rs) reports free blocks
            // from order 5 (128 KiB) up, not from pageblock order (2 MiB): what boot frees (the
            // initrd, __init memory) then leaves the guest RAM memfd too, -3.8 MiB per idle box.
            args.push("page_reporting.page_reporting_order=5".into());
            if !hardware_acceleration {
                // Under TCG: hand the kernel the TSC frequency so that its PIT calibration cannot
                // fail and fall back to jiffies, and trust the TSC (TCG derives it from the host's):
                // no clocksource watchdog timer waking an idle guest twice a second.
                args.push("tsc=reliable".into());
                // The IO-APIC timer check counts ticks against a delay loop: a host busy enough
                // to starve TCG makes it fail and panic ("IO-APIC + timer doesn't work", seen
                // once in CI with both cores loaded). The timer works; skip the check.
                args.push("no_timer_check".into());
                if let Some(khz) = host_tsc_khz() {
                    args.push(format!("tsc_early_khz={khz}"));
                    // Calibrate the local APIC timer against that TSC in 2 ms (a patch of ours,
                    // guest/kernel/build-kernel.sh) instead of 25 PIT ticks (~370 ms under TCG).
                    // The APIC timer then serves as the tick: an idle guest sleeps for seconds,
                    // where the PIT's short counter woke it ~55 times a second.
                    args.push("lapic_tsc_calibrate".into());
                    // Loops per jiffy for the default HZ=250, skipping delay-loop calibration.
                    args.push(format!("lpj={}", khz * 1000 / 250));
                } else {
                    // No TSC rate to calibrate against: skip the slow calibration, keep the PIT.
                    args.push("noapictimer".into());
                }
            }
        }
        EngineKind::Krun => args.extend(["console=hvc0", "reboot=k"].map(String::from)),
    }
    if agent_port != boxlite_protocol::AGENT_VSOCK_PORT {
        args.push(format!("{}={agent_port}", boxlite_protocol::CMDLINE_AGENT_PORT));
    }
    let mut line = args.join(" ");
    if !extra.trim().is_empty() {
        line.push(' ');
        line.push_str(extra.trim());
    }
    line
}

/// The host's TSC frequency in kHz, which TCG passes through to the guest's TSC.
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(pvm: bool, hw_module: Option<&str>, flag: Option<&str>) -> HostVirtualization {
        HostVirtualization {
            kvm_device_usable: true,
            kvm_device_error: None,
            kvm_pvm: pvm,
            kvm_hardware_module: hw_module.map(String::from),
            cpu_virtualization_flag: flag.map(String::from),
        }
    }

    #[test]
    fn pvm_host_gets_qemu_on_auto_and_an_explanation_for_krun() {
        let host = fake_host(true, None, None);
        assert_eq!(EngineChoice::Auto.resolve(&host).unwrap(), EngineKind::Qemu);
        let err = EngineChoice::Krun.resolve(&host).unwrap_err().to_string();
        assert!(err.contains("kvm_pvm"), "{err}");
        assert!(err.contains("vmx/svm"), "{err}");
        assert!(err.contains("BOXLITE_ENGINE=qemu"), "{err}");
    }

    #[test]
    fn hardware_host_gets_krun_on_auto() {
        let host = fake_host(false, Some("kvm_intel"), Some("vmx"));
        assert!(host.hardware_kvm());
        assert_eq!(EngineChoice::Auto.resolve(&host).unwrap(), EngineKind::Krun);
        assert_eq!(EngineChoice::Qemu.resolve(&host).unwrap(), EngineKind::Qemu);
    }

    #[test]
    fn detection_reads_sys_module_and_cpuinfo() {
        let root = std::env::temp_dir().join(format!("boxlite-detect-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sys/module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(root.join("proc/cpuinfo"), "flags\t: fpu sse hypervisor\n").unwrap();
        let host = HostVirtualization::detect_at(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(host.kvm_pvm);
        assert!(!host.kvm_device_usable);
        assert_eq!(host.cpu_virtualization_flag, None);
        assert!(!host.hardware_kvm());
    }

    #[test]
    fn tcg_kernels_skip_the_timer_checks_that_a_busy_host_fails() {
        let tcg = kernel_cmdline(EngineKind::Qemu, false, boxlite_protocol::AGENT_VSOCK_PORT, "");
        assert!(tcg.contains(" tsc=reliable no_timer_check"), "{tcg}");
        // The APIC timer is calibrated against the TSC (fast) when the host's TSC rate is known,
        // else skipped; never the slow PIT calibration.
        assert!(tcg.contains(" lapic_tsc_calibrate ") != tcg.contains(" noapictimer"), "{tcg}");
        let kvm = kernel_cmdline(EngineKind::Qemu, true, boxlite_protocol::AGENT_VSOCK_PORT, "extra=1");
        assert!(!kvm.contains("no_timer_check") && kvm.ends_with(" extra=1"), "{kvm}");
    }

    #[test]
    fn qemu_kernels_report_free_pages_from_128_kib() {
        for hw in [false, true] {
            let line = kernel_cmdline(EngineKind::Qemu, hw, boxlite_protocol::AGENT_VSOCK_PORT, "");
            assert!(line.contains(" page_reporting.page_reporting_order=5"), "{line}");
        }
    }

    #[test]
    fn engine_names_parse() {
        assert_eq!("QEMU".parse::<EngineChoice>().unwrap(), EngineChoice::Qemu);
        assert_eq!("".parse::<EngineChoice>().unwrap(), EngineChoice::Auto);
        assert!("firecracker".parse::<EngineChoice>().unwrap_err().to_string().contains("auto, krun or qemu"));
    }
}
