//! The two engines and what the host offers to run them: the part of engine selection the
//! shim needs too (the krun engine checks for hardware KVM before it starts).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Krun,
    Qemu,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Krun => "krun",
            EngineKind::Qemu => "qemu",
        })
    }
}

/// What the host offers for running VMs, read from /dev/kvm, /sys/module and /proc/cpuinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVirtualization {
    /// /dev/kvm exists and opens read-write for this user.
    pub kvm_device_usable: bool,
    /// Why /dev/kvm did not open, if it did not.
    pub kvm_device_error: Option<String>,
    /// /dev/kvm is provided by the PVM hypervisor module (`kvm_pvm`), which cannot run a
    /// standard guest kernel.
    pub kvm_pvm: bool,
    /// A hardware KVM backend is loaded (`kvm_intel` or `kvm_amd`).
    pub kvm_hardware_module: Option<String>,
    /// The CPU advertises hardware virtualisation (`vmx` or `svm`).
    pub cpu_virtualization_flag: Option<String>,
}

impl HostVirtualization {
    pub fn detect() -> HostVirtualization {
        Self::detect_at(Path::new("/"))
    }

    /// Detection against another root (tests use a fake /sys and /proc).
    pub fn detect_at(root: &Path) -> HostVirtualization {
        let kvm = root.join("dev/kvm");
        let (kvm_device_usable, kvm_device_error) = match std::fs::OpenOptions::new().read(true).write(true).open(&kvm) {
            Ok(_) => (true, None),
            Err(e) => (false, Some(format!("{}: {e}", kvm.display()))),
        };
        let module = |name: &str| root.join("sys/module").join(name).exists();
        let kvm_hardware_module = ["kvm_intel", "kvm_amd"].into_iter().find(|m| module(m)).map(String::from);
        let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
        let cpu_virtualization_flag = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(|l| l.split_whitespace())
            .find(|f| *f == "vmx" || *f == "svm")
            .map(String::from);
        HostVirtualization { kvm_device_usable, kvm_device_error, kvm_pvm: module("kvm_pvm"), kvm_hardware_module, cpu_virtualization_flag }
    }

    /// Hardware KVM that can run a standard guest kernel.
    pub fn hardware_kvm(&self) -> bool {
        self.kvm_device_usable && !self.kvm_pvm && self.kvm_hardware_module.is_some() && self.cpu_virtualization_flag.is_some()
    }

    pub fn why_no_hardware_kvm(&self) -> String {
        let mut reasons = Vec::new();
        if self.kvm_pvm {
            reasons.push("/dev/kvm is provided by kvm_pvm (a PVM hypervisor), which cannot run a standard guest kernel".to_string());
        }
        if !self.kvm_device_usable {
            reasons.push(match &self.kvm_device_error {
                Some(e) => format!("/dev/kvm is not usable ({e})"),
                None => "/dev/kvm is not usable".to_string(),
            });
        }
        if self.cpu_virtualization_flag.is_none() {
            reasons.push("the CPU reports no vmx/svm flag in /proc/cpuinfo".to_string());
        }
        if self.kvm_hardware_module.is_none() {
            reasons.push("neither kvm_intel nor kvm_amd is loaded".to_string());
        }
        if reasons.is_empty() {
            "hardware KVM is available".to_string()
        } else {
            reasons.join("; ")
        }
    }
}
