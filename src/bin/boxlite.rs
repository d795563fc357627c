//! The boxlite command line: boxes and images under a home directory (`--home`,
//! `BOXLITE_HOME`, default ~/.boxlite). Boxes run while a command runs: `run` starts the box
//! (creating it from an image the first time), runs one command with its output streamed
//! here, and stops the box again, its disk kept for next time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxlite::runtime::images::pull::RegistryOptions;
use boxlite::{
    AllowRule, BoxOptions, BoxliteRuntime, EngineChoice, Error, ExecCommand, NetworkMode, NetworkOptions, PortForward, RuntimeOptions, Vm,
    VmOptions,
};
use clap::{Args, Parser, Subcommand};

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
    Run(RunArgs),
    /// List boxes: id, name, status, image; on stderr, the box directories that did not load.
    Ls,
    /// Remove a box and its disk.
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Copy files or directory trees into or out of a box (docker cp's forms): `boxlite cp
    /// HOST_PATH BOX:PATH` or `boxlite cp BOX:PATH HOST_PATH`, BOX a name or id. Into an
    /// existing directory the copy goes inside it; otherwise it takes the destination's name.
    /// Modes, owners, mtimes and symlinks are kept (docs/volumes.md, "Copy in and out"). A
    /// stopped box is started for the copy and stopped again.
    Cp {
        /// HOST_PATH or BOX:PATH
        src: String,
        /// BOX:PATH or HOST_PATH
        dst: String,
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

#[derive(Args)]
struct RunArgs {
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
    #[command(flatten)]
    network: NetworkArgs,
    /// Share a host directory into a new box at GUEST (docs/volumes.md); `:ro` makes it
    /// read-only. Repeatable. An existing box keeps the volumes it was created with
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]", value_parser = parse_volume)]
    volumes: Vec<boxlite::Volume>,
    /// The command and its arguments (after --); empty runs the image's Entrypoint/Cmd.
    #[arg(last = true)]
    command: Vec<String>,
}

/// A new box's network (set when the box is created; an existing box keeps its own).
#[derive(Args)]
#[command(next_help_heading = "Network (set when the box is created)")]
struct NetworkArgs {
    /// none (loopback only; -p still works), outbound (anywhere but link-local addresses and
    /// the host's loopback) or allow-list (only what --allow names) [default: outbound, or
    /// allow-list with --allow]
    #[arg(long, value_name = "MODE", value_parser = parse_network_mode)]
    network: Option<NetworkMode>,
    /// Allow a destination: a network (10.0.0.0/8), an address with an optional port
    /// (192.0.2.7:443) or a DNS name with an optional port (pypi.org:443, *.github.com).
    /// Repeatable; implies --network allow-list
    #[arg(long = "allow", value_name = "RULE", value_parser = parse_allow_rule)]
    allow: Vec<AllowRule>,
    /// Let the box reach the host's own 127.0.0.1 as 10.0.2.2 (--network outbound)
    #[arg(long)]
    allow_host_loopback: bool,
    /// Forward a host port to a port in the box, e.g. 8080:80, 0:80 (the host picks a free
    /// port), 0.0.0.0:8080:80, 5353:53/udp. HOST_ADDR defaults to 127.0.0.1. Repeatable; the
    /// bound ports are printed to stderr when the box starts
    #[arg(short = 'p', long = "publish", value_name = "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]", value_parser = parse_port_forward)]
    publish: Vec<PortForward>,
    /// A DNS server for the box's queries (port 53 unless given) instead of the host's
    /// /etc/resolv.conf ones. Repeatable
    #[arg(long = "dns", value_name = "IP[:PORT]", value_parser = parse_dns_server)]
    dns: Vec<SocketAddr>,
}

fn parse_network_mode(text: &str) -> Result<NetworkMode, String> {
    NetworkMode::parse(text).map_err(|_| "use none, outbound or allow-list".into())
}

fn parse_allow_rule(text: &str) -> Result<AllowRule, String> {
    AllowRule::parse(text)
}

fn parse_port_forward(text: &str) -> Result<PortForward, String> {
    PortForward::parse(text)
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    boxlite::runtime::network::parse_dns_server(text).map_err(|e| e.to_string())
}

fn parse_volume(text: &str) -> Result<boxlite::Volume, String> {
    boxlite::runtime::volumes::parse_volume_arg(text)
}

impl NetworkArgs {
    /// The network the flags ask for; None when no network flag was given (a new box gets
    /// the default, an existing box keeps its own).
    fn options(&self) -> boxlite::Result<Option<NetworkOptions>> {
        let given = self.network.is_some()
            || !self.allow.is_empty()
            || self.allow_host_loopback
            || !self.publish.is_empty()
            || !self.dns.is_empty();
        if !given {
            return Ok(None);
        }
        let default_mode = if self.allow.is_empty() { NetworkMode::Outbound } else { NetworkMode::AllowList };
        let mode = self.network.unwrap_or(default_mode);
        let flag_error = |reason: &str| Err(Error::InvalidOption { field: "network flags", reason: reason.into() });
        if !self.allow.is_empty() && mode != NetworkMode::AllowList {
            return flag_error("--allow needs --network allow-list (or leave --network out: --allow implies it)");
        }
        if self.allow_host_loopback && mode != NetworkMode::Outbound {
            return flag_error("--allow-host-loopback is for --network outbound; in an allow-list, add --allow 10.0.2.2[:PORT] instead");
        }
        if !self.dns.is_empty() && mode == NetworkMode::None {
            return flag_error("--dns needs a network: leave out --network none, or drop --dns");
        }
        let options = NetworkOptions {
            mode,
            allow: self.allow.clone(),
            allow_host_loopback: self.allow_host_loopback,
            port_forwards: self.publish.clone(),
            dns_servers: self.dns.clone(),
        };
        options.validate()?;
        Ok(Some(options))
    }
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
        Command::Run(args) => {
            // Flags are checked before the home is opened or anything is pulled.
            let network = args.network.options()?;
            let runtime = open()?;
            run_in_box(&runtime, args, network).await
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
        Command::Cp { src, dst } => {
            let (src, dst) = (CpPath::parse(&src), CpPath::parse(&dst));
            copy(&open()?, src, dst).await.map(|()| 0)
        }
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

/// One side of `boxlite cp`: `BOX:PATH`, or a host path. As docker's: a path that starts
/// with `/` or `.`, or has no `:`, is the host's (write `./a:b` for a host file named `a:b`).
#[derive(Debug, PartialEq, Eq)]
enum CpPath {
    Host(PathBuf),
    InBox { name: String, path: String },
}

impl CpPath {
    fn parse(text: &str) -> CpPath {
        if !text.starts_with('/') && !text.starts_with('.') {
            if let Some((name, path)) = text.split_once(':') {
                if !name.is_empty() {
                    return CpPath::InBox { name: name.to_string(), path: path.to_string() };
                }
            }
        }
        CpPath::Host(PathBuf::from(text))
    }
}

async fn copy(runtime: &BoxliteRuntime, src: CpPath, dst: CpPath) -> boxlite::Result<()> {
    let (name, copy_in, host, guest) = match (src, dst) {
        (CpPath::Host(host), CpPath::InBox { name, path }) => (name, true, host, path),
        (CpPath::InBox { name, path }, CpPath::Host(host)) => (name, false, host, path),
        _ => {
            return Err(Error::InvalidOption {
                field: "cp",
                reason: "give one host path and one BOX:PATH (e.g. boxlite cp ./data mybox:/srv/)".into(),
            })
        }
    };
    let lite_box = runtime.get_box(&name).ok_or_else(|| Error::NotFound { what: format!("box {name:?}") })?;
    let was_running = lite_box.status() == boxlite::BoxStatus::Running;
    let guest = if guest.is_empty() { "/".to_string() } else { guest };
    let result = if copy_in { lite_box.copy_in(&host, &guest).await } else { lite_box.copy_out(&guest, &host).await };
    if !was_running {
        // As `run`: boxes run while a command runs (and stop syncs the box's disk).
        lite_box.stop().await?;
    }
    for warning in result?.warnings {
        eprintln!("boxlite: {warning}");
    }
    Ok(())
}

async fn run_in_box(runtime: &BoxliteRuntime, args: RunArgs, network: Option<NetworkOptions>) -> boxlite::Result<i32> {
    let RunArgs { name, image, import_layout, memory: memory_mib, timings, command, volumes, .. } = args;
    let name = name.as_str();
    if let (Some(layout), Some(image)) = (&import_layout, &image) {
        runtime.images().import_layout(layout, None, image)?;
    }
    let lite_box = match runtime.get_box(name) {
        Some(existing) => {
            if let Some(asked) = network.as_ref().filter(|asked| **asked != existing.options().network) {
                return Err(Error::InvalidState {
                    what: format!("box {name}"),
                    reason: format!(
                        "it exists with another network ({}) than the flags ask for ({}); a box's network is set when it is \
                         created: remove it (boxlite rm {name}) to change it, or drop the network flags",
                        describe_network(&existing.options().network),
                        describe_network(asked)
                    ),
                });
            }
            if !volumes.is_empty() && volumes != existing.options().volumes {
                return Err(Error::InvalidState {
                    what: format!("box {name}"),
                    reason: format!(
                        "it exists with other volumes than -v asks for; a box's volumes are set when it is created: remove it \
                         (boxlite rm {name}) to change them, or drop -v"
                    ),
                });
            }
            existing
        }
        None => runtime.create_box(BoxOptions {
            name: Some(name.into()),
            image,
            memory_mib,
            network: network.unwrap_or_default(),
            volumes,
            ..Default::default()
        })?,
    };
    let started = Instant::now();
    lite_box.start().await?;
    let booted = started.elapsed();
    for forward in lite_box.forwarded_ports().await? {
        eprintln!("boxlite: {} -> {}/{}", SocketAddr::new(forward.host_addr, forward.host_port), forward.guest_port, forward.protocol);
    }
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

/// A network in the CLI's words (for messages).
fn describe_network(network: &NetworkOptions) -> String {
    let mut words = vec![match network.mode {
        NetworkMode::None => "--network none".to_string(),
        NetworkMode::Outbound => "--network outbound".to_string(),
        NetworkMode::AllowList => "--network allow-list".to_string(),
    }];
    words.extend(network.allow.iter().map(|rule| format!("--allow {rule}")));
    if network.allow_host_loopback {
        words.push("--allow-host-loopback".into());
    }
    words.extend(network.port_forwards.iter().map(|f| format!("-p {f}")));
    words.extend(network.dns_servers.iter().map(|server| format!("--dns {server}")));
    words.join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn network_of(flags: &[&str]) -> Result<Option<NetworkOptions>, String> {
        let args = ["boxlite", "run", "--name", "b"].iter().chain(flags).chain(&["--", "true"]);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command else { unreachable!("parsed as run") };
        run.network.options().map_err(|e| e.to_string())
    }

    #[test]
    fn network_flags_make_options() {
        assert_eq!(network_of(&[]).unwrap(), None);
        let allow = network_of(&["--allow", "pypi.org:443", "-p", "0:80", "--publish", "0.0.0.0:5353:53/udp", "--dns", "192.0.2.53"])
            .unwrap()
            .unwrap();
        assert_eq!(allow.mode, NetworkMode::AllowList);
        assert_eq!(allow.allow, vec![AllowRule::parse("pypi.org:443").unwrap()]);
        assert_eq!(allow.port_forwards, vec![PortForward::parse("0:80").unwrap(), PortForward::parse("0.0.0.0:5353:53/udp").unwrap()]);
        assert_eq!(allow.dns_servers, vec!["192.0.2.53:53".parse().unwrap()]);
        let none = network_of(&["--network", "none", "-p", "8080:80"]).unwrap().unwrap();
        assert_eq!((none.mode, none.port_forwards.len()), (NetworkMode::None, 1));
        assert_eq!(network_of(&["--allow-host-loopback"]).unwrap().unwrap().mode, NetworkMode::Outbound);
    }

    #[test]
    fn cp_paths_are_box_colon_path_or_host_paths() {
        assert_eq!(CpPath::parse("web:/srv/app"), CpPath::InBox { name: "web".into(), path: "/srv/app".into() });
        assert_eq!(CpPath::parse("web:"), CpPath::InBox { name: "web".into(), path: "".into() });
        assert_eq!(CpPath::parse("./a:b"), CpPath::Host("./a:b".into()));
        assert_eq!(CpPath::parse("/tmp/x:y"), CpPath::Host("/tmp/x:y".into()));
        assert_eq!(CpPath::parse("data"), CpPath::Host("data".into()));
        assert_eq!(CpPath::parse(":x"), CpPath::Host(":x".into()));
        let cli = Cli::try_parse_from(["boxlite", "cp", "./data", "web:/srv/"]).unwrap();
        assert!(matches!(cli.command, Command::Cp { .. }));
    }

    #[test]
    fn bad_network_flags_say_why() {
        for (flags, why) in [
            (&["--network", "bridge"][..], "use none, outbound or allow-list"),
            (&["--allow", "10.0.0.1/8"], "bits set past the prefix length"),
            (&["-p", "80/sctp"], "the protocol must be tcp or udp"),
            (&["--dns", "192.0.2.53:0"], "port 0"),
            (&["--network", "outbound", "--allow", "pypi.org"], "--allow needs --network allow-list"),
            (&["--allow", "pypi.org", "--allow-host-loopback"], "--allow 10.0.2.2[:PORT]"),
            (&["--network", "none", "--dns", "192.0.2.53"], "--dns needs a network"),
            (&["-p", "8080:80", "-p", "8080:81"], "forwarded twice"),
        ] {
            let err = network_of(flags).unwrap_err();
            assert!(err.contains(why), "{flags:?}: {err}");
        }
    }
}
