//! boxlite-netgw: started by the shim, one per box with a network device.
//!
//! stdin: the `GatewayConfig`, one JSON line. fd 3: the VMM's frame socket; fd 4: the stats
//! file; fd 5..: one socket per forward (`gateway_fds`). It takes those, builds its
//! runtime, installs the `netgw` seccomp policy (unless the config turns it off), and serves
//! until the VMM closes fd 3 (exit 0). Exit 1: the frame protocol broke; exit 2: the config
//! or the descriptors were unusable. Each error is one line on stderr, starting
//! `boxlite-netgw: `.

use boxlite_netgw::error::{Error, EXIT_VM_GONE};
use boxlite_netgw::gateway::Gateway;
use boxlite_netgw::startup;
use boxlite_shim::seccomp::{apply_all_threads, Policy};
use boxlite_vmspec::network::NetworkStats;

fn main() {
    let code = match run() {
        Ok(stats) => {
            eprintln!(
                "boxlite-netgw: the VM closed its frame socket; {} bytes out, {} in, {} connections, {} denied",
                stats.bytes_out,
                stats.bytes_in,
                stats.tcp_connections + stats.forwarded_connections,
                stats.denied
            );
            EXIT_VM_GONE
        }
        Err(e) => {
            eprintln!("boxlite-netgw: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run() -> Result<NetworkStats, Error> {
    let startup = startup::take(std::io::stdin().lock())?;
    let seccomp = startup.config.seccomp;
    // One thread: the event loop and every task share it (and no blocking pool is used,
    // so the seccomp policy has no clone).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(Error::Runtime)?;
    let gateway = {
        let _context = runtime.enter();
        Gateway::start(startup)?
    };
    if seccomp {
        apply_all_threads(Policy::Netgw).map_err(Error::Seccomp)?;
    }
    runtime.block_on(gateway.run())
}
