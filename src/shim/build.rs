//! Compiles the seccomp policies in seccomp/<kind>.json (seccompiler's JSON format, one filter
//! named after the kind per file) into BPF for x86_64, and writes each program to
//! $OUT_DIR/seccomp_<kind>.bpf as raw little-endian `struct sock_filter` records (8 bytes:
//! code u16, jt u8, jf u8, k u32). seccomp.rs embeds them with include_bytes!.
//!
//! Besides seccompiler's own checks, a policy fails the build when it lists a syscall twice
//! (seccompiler would silently merge an unconditional rule into a conditional one) or allows
//! one of the syscalls no boxlite process may ever make (FORBIDDEN).

use std::collections::HashSet;
use std::path::Path;

const KINDS: [&str; 6] = ["qemu", "vhost_vsock", "supervisor", "krun", "netgw", "virtiofsd"];

/// Never allowed, whatever a trace shows: they escape or reconfigure the host (docs/seccomp.md).
const FORBIDDEN: &[&str] = &[
    "ptrace",
    "mount",
    "umount2",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "personality",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "process_vm_writev",
    "process_vm_readv",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
];

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for kind in KINDS {
        let file = format!("seccomp/{kind}.json");
        println!("cargo:rerun-if-changed={file}");
        if let Err(message) = compile(kind, Path::new(&file), Path::new(&out_dir)) {
            // panic (not process::exit) so cargo prints the message with the build failure.
            panic!("seccomp policy src/shim/{file}: {message}");
        }
    }
}

fn compile(kind: &str, file: &Path, out_dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
    check_rules(kind, &text)?;
    let mut programs =
        seccompiler::compile_from_json(text.as_bytes(), seccompiler::TargetArch::x86_64).map_err(|e| format!("does not compile: {e}"))?;
    let program = programs.remove(kind).ok_or_else(|| format!("it has no filter named {kind:?}"))?;
    if !programs.is_empty() {
        return Err(format!("it must hold only the filter {kind:?}"));
    }
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in &program {
        bytes.extend_from_slice(&insn.code.to_le_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_le_bytes());
    }
    let out = out_dir.join(format!("seccomp_{kind}.bpf"));
    std::fs::write(&out, bytes).map_err(|e| format!("write {}: {e}", out.display()))
}

/// Rejects duplicate and forbidden syscalls, and rules without a comment saying who needs them.
fn check_rules(kind: &str, text: &str) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let rules = json[kind]["filter"].as_array().ok_or_else(|| format!("it has no {kind}.filter array"))?;
    let mut seen = HashSet::new();
    for rule in rules {
        let name = rule["syscall"].as_str().ok_or_else(|| format!("a rule has no syscall name: {rule}"))?;
        if !seen.insert(name) {
            return Err(format!("{name} is listed twice; merge the rules"));
        }
        if FORBIDDEN.contains(&name) {
            return Err(format!("{name} is never allowed (see FORBIDDEN in build.rs)"));
        }
        if !matches!(rule["comment"].as_str(), Some(c) if !c.is_empty()) {
            return Err(format!("the rule for {name} has no comment saying who needs it"));
        }
    }
    Ok(())
}
