//! boxlite-shim: one per running box. The library starts it with the VM spec as one JSON
//! line on stdin (never argv: paths and the command line stay out of `ps`), its stderr on
//! the box's shim.log, and its stdout as a status pipe (JSON lines, see `ShimEvent`). It
//! writes its pid to the box directory and runs the VM under the spec's engine.
//!
//! Lifetime: after the spec, stdin stays open as a watchdog. EOF means the library's process
//! is gone; unless the box is detached, the shim then tears the VM down and exits.

mod engine_krun;
mod engine_qemu;
mod jail;
mod jail_root;
mod network;
mod qcow2;
mod volumes;
mod watchdog;

use std::io::{BufRead, Read, Write};

use boxlite_vmspec::engine::EngineKind;
use boxlite_vmspec::spec::{ShimEvent, VmSpec, MAX_SPEC_BYTES};

fn main() {
    let spec = match read_spec() {
        Ok(spec) => spec,
        Err(message) => fail(message),
    };
    if let Err(e) = std::fs::write(spec.shim_pid_file(), format!("{}\n", std::process::id())) {
        fail(format!("write {}: {e}", spec.shim_pid_file().display()));
    }
    eprintln!("boxlite-shim: pid {} running {} VM ({} vCPU, {} MiB)", std::process::id(), spec.engine, spec.vcpus, spec.memory_mib);
    if spec.engine == EngineKind::Krun {
        if let Err(message) = engine_krun::check_host() {
            fail(message);
        }
    }
    let parent_gone = (!spec.detached).then(watchdog::watch_stdin);
    let mut jailed = match jail::prepare(&spec) {
        Ok(jailed) => jailed,
        Err(message) => fail(format!("cannot jail the shim: {message}")),
    };
    // Between the two halves of the jail: the gateway must stay in the host's network
    // namespace, and starts in the box's cgroup.
    let gateway = match &spec.network {
        Some(network) => match network::start(&spec, network) {
            Ok(gateway) => Some(gateway),
            Err(message) => fail(format!("cannot start the network gateway: {message}")),
        },
        None => None,
    };
    if let Some(gateway) = &gateway {
        jailed.protections.network_gateway_uid = gateway.uid;
    }
    if let Err(message) = jail::enclose(&spec, &mut jailed) {
        fail(format!("cannot jail the shim: {message}"));
    }
    // Inside the jail, before the privileges go: each server runs as its directory's owner.
    // krun serves volumes itself.
    let shares = match spec.engine {
        EngineKind::Qemu => match volumes::start(&spec) {
            Ok(servers) => servers,
            Err(message) => fail(format!("cannot start the volumes' servers: {message}")),
        },
        EngineKind::Krun => Vec::new(),
    };
    jailed.protections.share_server_uids = shares.iter().map(|s| s.uid).collect();
    if let Err(message) = jail::restrict(&spec, &mut jailed) {
        fail(format!("cannot jail the shim: {message}"));
    }
    let result = match spec.engine {
        EngineKind::Qemu => engine_qemu::run(&spec, &mut jailed, gateway, shares, parent_gone),
        EngineKind::Krun => engine_krun::run(&spec, &mut jailed, gateway, parent_gone),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(message) => fail(message),
    }
}

fn read_spec() -> Result<VmSpec, String> {
    let mut line = Vec::new();
    let stdin = std::io::stdin();
    let mut limited = stdin.lock().take(MAX_SPEC_BYTES);
    limited.read_until(b'\n', &mut line).map_err(|e| format!("reading the VM spec from stdin: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(format!("the VM spec on stdin must be one JSON line of at most {MAX_SPEC_BYTES} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("the VM spec on stdin is not valid: {e}"))
}

/// Reports a status event to the library (one JSON line on stdout).
pub fn report(event: &ShimEvent) {
    let mut line = serde_json::to_vec(event).expect("a ShimEvent always serializes");
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    // The library may already be gone; the watchdog handles that.
    let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
}

fn fail(message: String) -> ! {
    eprintln!("boxlite-shim: {message}");
    report(&ShimEvent::Failed { message });
    std::process::exit(1)
}
