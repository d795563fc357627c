//! The boxlite command line: boxes and images under a home directory (`--home`,
//! `BOXLITE_HOME`, default ~/.boxlite). Boxes run while a command runs: `run` starts the box
//! (creating it from an image the first time), runs one command with its output streamed
//! here, and stops the box again, its disk kept for next time.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxlite::runtime::images::pull::RegistryOptions;
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, ExecCommand, RuntimeOptions, Vm, VmOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "boxlite", version, about = "Embeddable micro-VM sandboxes")]
struct Cli {
    /// The runtime's home directory (default: $BOXLITE_HOME, else ~/.boxlite).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// auto (krun on hardware KVM, else qemu), krun or qemu. BOXLITE_ENGINE picks when auto.
    #[arg(long, global = true, default_value = "auto")]
    engine: String,
    /// A registry (host[:port]) that may be spoken to over plain HTTP.
    #[arg(long = "insecure-registry", global = true)]
    insecure_registries: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a box: create it from --image the first time (by --name), start it,
    /// stream the command's output, stop it. Exits with the command's exit code.
    Run {
        #[arg(long)]
        name: String,
        /// The image for a new box (pulled, or imported with --import-layout, if not cached).
        #[arg(long)]
        image: Option<String>,
        /// Import the image from this OCI layout directory first (its only image).
        #[arg(long)]
        import_layout: Option<PathBuf>,
        #[arg(long, default_value_t = 512, value_name = "MIB")]
        memory: u32,
        /// Print boot and exec times to stderr.
        #[arg(long)]
        timings: bool,
        /// The command and its arguments (after --); empty runs the image's Entrypoint/Cmd.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List boxes: id, name, status, image; on stderr, the box directories that did not load.
    Ls,
    /// Remove a box and its disk.
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Pull an image into the cache.
    Pull { reference: String },
    /// List cached images.
    Images,
    /// Boot a bare VM (no image), ping its agent, print the answer and the boot time, shut
    /// it down.
    Boot {
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
    let tokio = tokio::runtime::Runtime::new().expect("starting the async runtime");
    match tokio.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("boxlite: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> boxlite::Result<i32> {
    let engine = cli.engine.parse::<EngineChoice>()?;
    let open = || {
        let registries = RegistryOptions { insecure: cli.insecure_registries.clone(), ..Default::default() };
        BoxliteRuntime::new(RuntimeOptions { home: cli.home.clone(), engine, registries, log_to_home: true })
    };
    match cli.command {
        Command::Run { name, image, import_layout, memory, timings, command } => {
            let runtime = open()?;
            run_in_box(&runtime, &name, image, import_layout, memory, timings, command).await
        }
        Command::Ls => {
            let runtime = open()?;
            for b in runtime.list_boxes() {
                println!(
                    "{}  {:<20} {:<10} {}",
                    b.id(),
                    b.name().unwrap_or("-"),
                    format!("{:?}", b.status()).to_lowercase(),
                    b.image().unwrap_or("-")
                );
            }
            // On stderr: what scripts parse on stdout stays one box per line.
            for invalid in runtime.invalid_boxes() {
                eprintln!("boxlite: box {} did not load ({}): {}", invalid.id, invalid.dir.display(), invalid.reason);
            }
            Ok(0)
        }
        Command::Rm { name, force } => open()?.remove_box(&name, force).await.map(|()| 0),
        Command::Pull { reference } => {
            let image = open()?.images().pull(&reference, None).await?;
            println!("{} {}", image.reference, image.manifest_digest);
            Ok(0)
        }
        Command::Images => {
            for image in open()?.images().list()? {
                println!("{:<50} {} {:>8.1} MB", image.reference, &image.manifest_digest.hex()[..12], image.size as f64 / 1e6);
            }
            Ok(0)
        }
        Command::Boot { vcpus, memory_mib, run_dir, hold } => boot(engine, vcpus, memory_mib, run_dir, hold).await.map(|()| 0),
    }
}

async fn run_in_box(
    runtime: &BoxliteRuntime,
    name: &str,
    image: Option<String>,
    import_layout: Option<PathBuf>,
    memory_mib: u32,
    timings: bool,
    command: Vec<String>,
) -> boxlite::Result<i32> {
    if let (Some(layout), Some(image)) = (&import_layout, &image) {
        runtime.images().import_layout(layout, None, image)?;
    }
    let lite_box = match runtime.get_box(name) {
        Some(existing) => existing,
        None => runtime.create_box(BoxOptions { name: Some(name.into()), image, memory_mib, ..Default::default() })?,
    };
    let started = Instant::now();
    lite_box.start().await?;
    let booted = started.elapsed();
    let mut exec_command = ExecCommand::default();
    if let Some((program, args)) = command.split_first() {
        exec_command = ExecCommand::new(program.clone()).args(args.iter().cloned());
    }
    let exec_started = Instant::now();
    let mut execution = lite_box.exec(exec_command).await?;
    let (mut out, mut err) = (execution.take_stdout().expect("stdout"), execution.take_stderr().expect("stderr"));
    drop(execution.take_stdin()); // no stdin
    let copy_out = async {
        while let Some(chunk) = out.next_chunk().await {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&chunk?).and_then(|()| stdout.flush());
        }
        Ok::<_, boxlite::Error>(())
    };
    let copy_err = async {
        while let Some(chunk) = err.next_chunk().await {
            let _ = std::io::stderr().write_all(&chunk?);
        }
        Ok::<_, boxlite::Error>(())
    };
    let (a, b) = tokio::join!(copy_out, copy_err);
    a?;
    b?;
    let status = execution.wait().await?;
    let exec_time = exec_started.elapsed();
    drop(execution);
    lite_box.stop().await?;
    if timings {
        eprintln!(
            "boxlite: box {name}: boot {:.0} ms (start to agent ready), exec {:.0} ms",
            booted.as_secs_f64() * 1e3,
            exec_time.as_secs_f64() * 1e3
        );
    }
    Ok(status.code.unwrap_or_else(|| 128 + status.signal.unwrap_or(0)))
}

async fn boot(engine: EngineChoice, vcpus: u8, memory_mib: u32, run_dir: Option<PathBuf>, hold: bool) -> boxlite::Result<()> {
    let temp_dir = run_dir.is_none().then(|| std::env::temp_dir().join(format!("boxlite-boot-{}", std::process::id())));
    let mut options = VmOptions::new(run_dir.or_else(|| temp_dir.clone()).expect("one of them is set"));
    options.engine = engine;
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
