//! The boxlite command line, with docker's habits: boxes and images under a home directory
//! (`--home`, `BOXLITE_HOME`, default ~/.boxlite). See docs/cli.md.
//!
//! Modules: `args` (the grammar), `exit` (exit codes and one-line errors), `boxes` and
//! `images` (the verbs), `session` (a process wired to this terminal), `terminal` (raw
//! mode, window size), `progress` (bars and spinners).

mod args;
mod boxes;
mod exit;
mod images;
mod progress;
mod session;
mod terminal;

use std::path::PathBuf;
use std::time::Duration;

use boxlite::runtime::images::pull::RegistryOptions;
use boxlite::{BoxliteRuntime, EngineChoice, HostVirtualization, RuntimeOptions, Vm, VmOptions};
use clap::{CommandFactory, Parser};

use args::{Cli, Command};
use exit::CliResult;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let (line, code) = exit::clap_failure(e);
            if let Some(line) = line {
                eprintln!("boxlite: {line}");
            }
            std::process::exit(code);
        }
    };
    let tokio = tokio::runtime::Runtime::new().expect("starting the async runtime");
    // Every guard (raw terminal, spinners) is dropped inside `run`, before the exit.
    let code = match tokio.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("boxlite: {}", failure.line());
            failure.code()
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> CliResult<i32> {
    let engine = cli.engine.parse::<EngineChoice>()?;
    let open = || {
        let registries = RegistryOptions { insecure: cli.insecure_registries.clone(), ..Default::default() };
        BoxliteRuntime::new(RuntimeOptions { home: cli.home.clone(), engine, registries, log_to_home: true })
    };
    match cli.command {
        Command::Run(args) => boxes::run(&open()?, args).await,
        Command::Exec(args) => boxes::exec(&open()?, args).await,
        Command::Create(args) => boxes::create(&open()?, &args.new_box, &args.image).await,
        Command::Start(args) => boxes::each(&open()?, &args.boxes, boxes::Lifecycle::Start).await,
        Command::Stop(args) => boxes::each(&open()?, &args.boxes, boxes::Lifecycle::Stop).await,
        Command::Restart(args) => boxes::each(&open()?, &args.boxes, boxes::Lifecycle::Restart).await,
        Command::Rm { force, boxes: names } => boxes::each(&open()?, &names, boxes::Lifecycle::Remove { force }).await,
        Command::Ps { all, format } => boxes::ps(&open()?, all, format),
        Command::Inspect { boxes: names } => boxes::inspect(&open()?, &names).await,
        Command::Logs { follow, name } => boxes::logs(open, &name, follow).await,
        Command::Cp { src, dst } => boxes::copy(&open()?, boxes::CpPath::parse(&src), boxes::CpPath::parse(&dst)).await,
        Command::Pull { reference } => images::pull(&open()?, &reference).await,
        Command::Images { format } => images::list(&open()?, format),
        Command::Rmi { force, images: references } => images::remove(&open()?, &references, force),
        Command::Import { path, name, tag } => images::import(&open()?, &path, &name, tag.as_deref()),
        Command::Version => version(engine),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "boxlite", &mut std::io::stdout());
            Ok(0)
        }
        Command::Boot { vcpus, memory_mib, run_dir, hold } => boot(engine, vcpus, memory_mib, run_dir, hold).await.map(|()| 0),
    }
}

fn version(engine: EngineChoice) -> CliResult<i32> {
    println!("boxlite {}", env!("CARGO_PKG_VERSION"));
    let host = HostVirtualization::detect();
    let chosen = EngineChoice::with_env_override(engine)?;
    match chosen.resolve(&host) {
        Ok(kind) if host.hardware_kvm() => println!("engine: {kind} (hardware KVM)"),
        Ok(kind) => println!("engine: {kind} (TCG emulation: {})", host.why_no_hardware_kvm()),
        Err(e) => println!("engine: none ({e})"),
    }
    Ok(0)
}

async fn boot(engine: EngineChoice, vcpus: u8, memory_mib: u32, run_dir: Option<PathBuf>, hold: bool) -> CliResult<()> {
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
