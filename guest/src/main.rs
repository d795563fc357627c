//! boxlite-guest: the agent inside every box.
//!
//! It runs as `/init` (PID 1) of the initramfs: it mounts the pseudo file systems, brings up
//! the network the kernel command line declares, mounts the box's volumes (virtio-fs), reaps
//! orphaned children, and serves the `boxlite.agent.v1` ttrpc services on a vsock port. Its
//! log goes to the console, which the host keeps as the box's `console.log`.

mod boot;
mod exec;
mod files;
mod network;
mod pid1;
mod reaper;
mod rootfs;
mod service;
mod sys;
mod volumes;
mod vsock;

use std::sync::Arc;

use boxlite_protocol::{AGENT_HOST_PORT, AGENT_VSOCK_PORT, CMDLINE_AGENT_PORT};

macro_rules! log {
    ($($arg:tt)*) => { eprintln!("boxlite-guest: {}", format_args!($($arg)*)) };
}
pub(crate) use log;

fn main() {
    boot::step_done("kernel");
    let is_pid1 = std::process::id() == 1;
    if is_pid1 {
        if let Err(e) = pid1::setup() {
            // Without /proc, /dev and the console there is nothing useful to do; the host sees
            // no agent and reports the console tail, which holds this line.
            log!("early setup failed: {e}");
            pid1::power_off();
        }
        boot::step_done("pseudo_file_systems");
    }

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // Only PID 1 owns the VM's interfaces; an agent started any other way leaves them alone.
    let network = if is_pid1 { bring_up_network(&cmdline) } else { None };
    boot::step_done("network");
    let port = agent_port(&cmdline).unwrap_or(AGENT_VSOCK_PORT);
    let root = match rootfs::Root::from_cmdline(&cmdline) {
        Ok(root) => Arc::new(root),
        Err(e) => {
            log!("cannot set up the box's root: {e}");
            if is_pid1 {
                pid1::power_off();
            }
            std::process::exit(1);
        }
    };
    if let Some(network) = &network {
        network::provide_resolv_conf(&root, network);
    }
    boot::step_done("root");
    // Host directories shared into the box: mounted by PID 1 only, like the network.
    if is_pid1 {
        if let Err(e) = volumes::mount_all(&root, &volumes::from_cmdline(&cmdline)) {
            // The host reports the VM's end with this line from the console.
            log!("cannot mount a volume: {e}; the box does not start (on a read-only root disk the mount point must exist)");
            pid1::power_off();
        }
        boot::step_done("volumes");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log!("cannot start the async runtime: {e}");
            if is_pid1 {
                pid1::power_off();
            }
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        let reaper = reaper::Reaper::default();
        tokio::spawn(reaper.clone().run());
        serve(port, is_pid1, root, reaper).await
    });
    if let Err(e) = result {
        log!("agent stopped: {e}");
    }
    if is_pid1 {
        pid1::power_off();
    }
}

async fn serve(port: u32, is_pid1: bool, root: Arc<rootfs::Root>, reaper: reaper::Reaper) -> std::io::Result<()> {
    let listener = vsock::connections(port, AGENT_HOST_PORT)?;
    let mut services = boxlite_protocol::agent_ttrpc::create_guest(Arc::new(service::GuestService::new(is_pid1)));
    services.extend(boxlite_protocol::agent_ttrpc::create_execution(Arc::new(exec::ExecService::new(root.clone(), reaper))));
    services.extend(boxlite_protocol::agent_ttrpc::create_files(Arc::new(files::FilesService::new(root))));
    let mut server = ttrpc::asynchronous::Server::new().add_listener(listener).register_service(services);
    server.start().await.map_err(|e| std::io::Error::other(format!("ttrpc server start: {e}")))?;
    boot::step_done("serving");
    log!("serving ttrpc on vsock port {port}");
    // The server runs on its own tasks; this task only has to stay alive.
    std::future::pending::<()>().await;
    Ok(())
}

/// Brings up `lo`, then eth0 when the command line declares a network (`boxlite.net=`).
/// Returns that network, for the box's resolv.conf. Failures are logged; the box still
/// serves, without the part that failed.
fn bring_up_network(cmdline: &str) -> Option<network::Network> {
    // Every box has a loopback, whatever its network: local servers, databases and test
    // suites bind 127.0.0.1. Without it they fail, but the box still serves.
    if let Err(e) = sys::set_interface_up("lo") {
        log!("cannot bring up the loopback interface lo: {e}");
    }
    let network = network::Network::from_cmdline(cmdline).unwrap_or_else(|e| {
        log!("network: {e}; the box has no network");
        None
    })?;
    network::configure_interface(&network);
    Some(network)
}

/// `boxlite.port=N` on the kernel command line, if present and valid.
fn agent_port(cmdline: &str) -> Option<u32> {
    let prefix = format!("{CMDLINE_AGENT_PORT}=");
    cmdline.split_whitespace().find_map(|word| word.strip_prefix(&prefix)).and_then(|value| value.parse().ok())
}
