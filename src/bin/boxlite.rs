//! The boxlite command line. For now: `boxlite boot`, which boots a VM, pings its agent,
//! prints what it answered and how long the boot took, and shuts it down.

use std::path::PathBuf;
use std::time::Duration;

use boxlite::{EngineChoice, Vm, VmOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "boxlite", version, about = "Embeddable micro-VM sandboxes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM, ping its agent, print the answer and the boot time, shut it down.
    Boot {
        /// auto (krun on hardware KVM, else qemu), krun or qemu. BOXLITE_ENGINE overrides.
        #[arg(long, default_value = "auto")]
        engine: String,
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        #[arg(long = "memory", default_value_t = 256, value_name = "MIB")]
        memory_mib: u32,
        /// Directory for the VM's console.log, shim.log and sockets (default: a temporary one).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Keep the VM running after the ping: print its pids as JSON, then wait for stdin to
        /// close before shutting down.
        #[arg(long)]
        hold: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Boot { engine, vcpus, memory_mib, run_dir, hold } => boot(engine, vcpus, memory_mib, run_dir, hold).await,
        }
    });
    if let Err(e) = result {
        eprintln!("boxlite: {e}");
        std::process::exit(1);
    }
}

async fn boot(engine: String, vcpus: u8, memory_mib: u32, run_dir: Option<PathBuf>, hold: bool) -> boxlite::Result<()> {
    let temp_dir = run_dir.is_none().then(|| std::env::temp_dir().join(format!("boxlite-boot-{}", std::process::id())));
    let mut options = VmOptions::new(run_dir.or_else(|| temp_dir.clone()).expect("one of them is set"));
    options.engine = engine.parse::<EngineChoice>()?;
    options.vcpus = vcpus;
    options.memory_mib = memory_mib;
    let vm = Vm::boot(options).await?;
    let pong = vm.first_ping();
    let timings = vm.timings();
    if hold {
        println!(
            "{}",
            serde_json::json!({ "shim_pid": vm.shim_pid(), "vmm_pid": vm.vmm_pid(), "pids": vm.pids(), "run_dir": vm.spec().run_dir })
        );
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut Vec::new()).await;
    } else {
        println!("engine:          {}", vm.engine());
        println!("agent version:   {}", pong.agent_version);
        println!("guest kernel:    {} {}", pong.kernel_release, pong.kernel_version);
        println!("VM running after {:>8.1} ms (shim spawn -> VMM started)", timings.vm_running.as_secs_f64() * 1e3);
        println!("first ping after {:>8.1} ms (shim spawn -> agent answered)", timings.first_ping.as_secs_f64() * 1e3);
        println!("guest uptime at first ping: {:.1} ms", pong.first_ping_uptime_us as f64 / 1e3);
    }
    let exit = vm.shutdown(Duration::from_secs(10)).await?;
    if !hold {
        println!("shutdown:        shim {}", exit.map(|e| e.to_string()).unwrap_or_else(|| "gone".into()));
    }
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
