//! The command line's grammar (clap derive): verbs, their flags, and the parsers of flag
//! values (sizes, K=V, network rules). Nothing here opens the home or touches a box.

use std::net::SocketAddr;
use std::path::PathBuf;

use boxlite::{AllowRule, Error, NetworkMode, NetworkOptions, PortForward};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;

#[derive(Parser)]
#[command(name = "boxlite", version, about = "Embeddable micro-VM sandboxes, with docker's habits", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The runtime's home directory (default: $BOXLITE_HOME, else ~/.boxlite).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// auto (krun on hardware KVM, else qemu), krun or qemu. BOXLITE_ENGINE picks when auto.
    #[arg(long, global = true, default_value = "auto")]
    pub engine: String,
    /// A registry (host[:port]) that may be spoken to over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a box from IMAGE, start it and run COMMAND in it (default: the image's
    /// Entrypoint/Cmd), then stop it; the exit code is the command's. With -d the box stays
    /// running and its id is printed; with --rm it is removed afterwards.
    Run(RunArgs),
    /// Run a command in a running box; the exit code is the command's.
    Exec(ExecArgs),
    /// Create a box from IMAGE (pulled if not cached) without starting it; prints its id.
    Create(CreateArgs),
    /// Start stopped boxes; they keep running after this command ends.
    Start(BoxesArg),
    /// Stop running boxes (the guest syncs its disk and powers off; killed after 10 s).
    Stop(BoxesArg),
    /// Stop boxes and start them again, their files kept.
    Restart(BoxesArg),
    /// Remove boxes and their disks.
    Rm {
        /// Stop a running box first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// List running boxes (-a: all); on stderr, box directories that did not load.
    #[command(visible_alias = "ls")]
    Ps {
        /// All boxes, not only the running ones.
        #[arg(short, long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A box as JSON: options, status and why it stopped, protections, metrics, disk usage,
    /// log paths; and for a running box its forwarded ports and guest figures.
    Inspect {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Print a box's console log and shim log (from its directory); -f follows them while
    /// the box runs.
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(value_name = "BOX")]
        name: String,
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
    Images {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove images from the cache (refused while a box uses one, unless -f).
    Rmi {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Import an image from an OCI layout directory, or an archive (an OCI layout tar or a
    /// `docker save` tar), and cache it as NAME.
    Import {
        /// The layout directory or the archive.
        path: PathBuf,
        /// The reference to cache it under, e.g. localhost/busybox:latest.
        name: String,
        /// The tag to take from the layout (default: its only image).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Print boxlite's version and the engine this host gets.
    Version,
    /// Print a shell completion script: `boxlite completion bash > /etc/bash_completion.d/boxlite`.
    Completion { shell: clap_complete::Shell },
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct BoxesArg {
    #[arg(required = true, value_name = "BOX")]
    pub boxes: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Leave the box running (detached from this terminal) and print its id; no COMMAND
    /// (a box runs commands through `boxlite exec`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the box when the command ends.
    #[arg(long)]
    pub rm: bool,
    /// Print boot and exec times to stderr.
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub process: ProcessFlags,
    #[command(flatten)]
    pub new_box: BoxFlags,
    /// The older form, `run --name NAME --image REF -- CMD...`: runs CMD in the box NAME
    /// (created from REF the first time) and stops it; that box ends with this command.
    #[arg(long, hide = true)]
    pub image: Option<String>,
    /// With --image: import REF from this OCI layout directory first.
    #[arg(long, hide = true, requires = "image")]
    pub import_layout: Option<PathBuf>,
    /// The image to run (name[:tag][@digest]), pulled if not cached.
    #[arg(value_name = "IMAGE", required_unless_present = "image")]
    pub image_arg: Option<String>,
    /// The command and its arguments (default: the image's Entrypoint/Cmd).
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub new_box: BoxFlags,
    /// The image (name[:tag][@digest]), pulled if not cached.
    pub image: String,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub process: ProcessFlags,
    /// The box (name or id); it must be running.
    #[arg(value_name = "BOX")]
    pub name: String,
    /// The command and its arguments.
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// How a process runs: docker's -i, -t, -e, -w, -u.
#[derive(Args)]
pub struct ProcessFlags {
    /// Keep stdin open and forward it to the process.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the process on a terminal (with -i, this terminal goes raw: keys, Ctrl-C and
    /// window size reach the process).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable; `-e NAME` alone takes this shell's value. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The working directory in the box (default: the image's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// The user: a name, uid or uid:gid from the box's /etc/passwd (default: the image's).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
}

/// A new box's settings.
#[derive(Args)]
pub struct BoxFlags {
    /// The box's name (letters, digits, '.', '_', '-'); unique in the home.
    #[arg(long)]
    pub name: Option<String>,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u8,
    /// Guest memory: 512m, 1g, or a number of MiB.
    #[arg(short = 'm', long, value_name = "SIZE", default_value = "512m", value_parser = parse_memory)]
    pub memory: u32,
    /// The box's disk (its root file system): 10g, 2048m, or a number of MiB; a whole number
    /// of GiB, at least the image's size (default: the image's size plus 2 GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_disk)]
    pub disk: Option<u32>,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Share a host directory into the box at GUEST (docs/volumes.md); `:ro` makes it
    /// read-only. Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<boxlite::Volume>,
}

/// A new box's network (set when the box is created).
#[derive(Args)]
#[command(next_help_heading = "Network (set when the box is created)")]
pub struct NetworkArgs {
    /// none (loopback only; -p still works), outbound (anywhere but link-local addresses and
    /// the host's loopback) or allow-list (only what --allow names) [default: outbound, or
    /// allow-list with --allow]
    #[arg(long, value_name = "MODE", value_parser = parse_network_mode)]
    pub network: Option<NetworkMode>,
    /// Allow a destination: a network (10.0.0.0/8), an address with an optional port
    /// (192.0.2.7:443) or a DNS name with an optional port (pypi.org:443, *.github.com).
    /// Repeatable; implies --network allow-list
    #[arg(long = "allow", value_name = "RULE", value_parser = parse_allow_rule)]
    pub allow: Vec<AllowRule>,
    /// Let the box reach the host's own 127.0.0.1 as 10.0.2.2 (--network outbound)
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// Forward a host port to a port in the box, e.g. 8080:80, 0:80 (the host picks a free
    /// port), 0.0.0.0:8080:80, 5353:53/udp. HOST_ADDR defaults to 127.0.0.1. Repeatable; the
    /// bound ports are printed to stderr when the box starts
    #[arg(short = 'p', long = "publish", value_name = "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]", value_parser = parse_port_forward)]
    pub publish: Vec<PortForward>,
    /// A DNS server for the box's queries (port 53 unless given) instead of the host's
    /// /etc/resolv.conf ones. Repeatable
    #[arg(long = "dns", value_name = "IP[:PORT]", value_parser = parse_dns_server)]
    pub dns: Vec<SocketAddr>,
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

/// A size in MiB: `512m`, `1g`, `1.5g`, `2048` (MiB), `512mb`, `1GiB`, `1t`.
pub fn parse_size_mib(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size; use e.g. 512m, 1g or 2048 (MiB)");
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let per_unit: f64 = match unit.trim() {
        "" | "m" | "mb" | "mib" => 1.0,
        "k" | "kb" | "kib" => 1.0 / 1024.0,
        "g" | "gb" | "gib" => 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let mib = value * per_unit;
    if mib.fract() != 0.0 {
        return Err(format!("{text:?} is not a whole number of MiB; use e.g. 512m or 1g"));
    }
    if mib < 1.0 || mib > u32::MAX as f64 {
        return Err(format!("{text:?} is out of range; use e.g. 512m or 1g"));
    }
    Ok(mib as u64)
}

fn parse_memory(text: &str) -> Result<u32, String> {
    parse_size_mib(text).map(|mib| mib as u32)
}

/// A disk size, in GiB (the unit of `BoxOptions::disk_size_gib`).
fn parse_disk(text: &str) -> Result<u32, String> {
    let mib = parse_size_mib(text)?;
    if mib % 1024 != 0 {
        return Err(format!("{text:?} is not a whole number of GiB; a box's disk grows in GiB, e.g. 4g"));
    }
    Ok((mib / 1024) as u32)
}

impl ProcessFlags {
    /// `-e` as (name, value) pairs: `NAME=VALUE`, or `NAME` with this process's value
    /// (skipped when unset, as docker does).
    pub fn env_pairs(&self) -> boxlite::Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for entry in &self.env {
            let (name, value) = match entry.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => match std::env::var(entry) {
                    Ok(value) => (entry.clone(), value),
                    Err(_) => continue,
                },
            };
            if name.is_empty() {
                return Err(Error::InvalidOption { field: "-e", reason: format!("{entry:?} has no variable name; use -e NAME=VALUE") });
            }
            pairs.push((name, value));
        }
        Ok(pairs)
    }
}

impl NetworkArgs {
    /// The network the flags ask for; None when no network flag was given (a new box gets
    /// the default, an existing box keeps its own).
    pub fn options(&self) -> boxlite::Result<Option<NetworkOptions>> {
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

/// A network in the CLI's words (for messages).
pub fn describe_network(network: &NetworkOptions) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, String> {
        let cli = Cli::try_parse_from(["boxlite", "run"].iter().chain(args)).map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command else { unreachable!("parsed as run") };
        Ok(run)
    }

    fn network_of(flags: &[&str]) -> Result<Option<NetworkOptions>, String> {
        let args: Vec<&str> = flags.iter().copied().chain(["busybox", "true"]).collect();
        run_args(&args)?.new_box.network.options().map_err(|e| e.to_string())
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

    #[test]
    fn run_takes_image_then_command_with_its_own_flags() {
        let run = run_args(&["-it", "--rm", "-e", "A=1", "-w", "/tmp", "-u", "tester", "busybox", "ls", "-l", "--rm"]).unwrap();
        assert!(run.process.interactive && run.process.tty && run.rm && !run.detach);
        assert_eq!(run.image_arg.as_deref(), Some("busybox"));
        assert_eq!(run.command, ["ls", "-l", "--rm"], "flags after IMAGE are the command's");
        assert_eq!((run.process.workdir.as_deref(), run.process.user.as_deref()), (Some("/tmp"), Some("tester")));
        assert_eq!(run.process.env_pairs().unwrap(), [("A".to_string(), "1".to_string())]);
        // The older form: --image, and the command after --.
        let old = run_args(&["--name", "q", "--image", "busybox", "--", "cat", "/etc/os-release"]).unwrap();
        assert_eq!(old.image.as_deref(), Some("busybox"));
        assert_eq!((old.image_arg.as_deref(), old.command.as_slice()), (Some("cat"), &["/etc/os-release".to_string()][..]));
        assert!(run_args(&["--import-layout", "/x", "busybox"]).is_err(), "--import-layout needs --image");
    }

    #[test]
    fn sizes_take_units_and_refuse_nonsense() {
        assert_eq!(parse_size_mib("512m"), Ok(512));
        assert_eq!(parse_size_mib("1g"), Ok(1024));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib("2048"), Ok(2048));
        assert_eq!(parse_size_mib("1GiB"), Ok(1024));
        assert_eq!(parse_size_mib("2048k"), Ok(2));
        for bad in ["", "g", "12x", "1..5g", "-1g", "0", "1k", "99999999999g"] {
            let err = parse_size_mib(bad).unwrap_err();
            assert!(err.contains("512m"), "{bad:?}: {err}");
        }
        assert_eq!(parse_disk("10g"), Ok(10));
        assert_eq!(parse_disk("2048"), Ok(2));
        assert!(parse_disk("1500m").unwrap_err().contains("whole number of GiB"));
        let err = Cli::try_parse_from(["boxlite", "run", "--memory", "lots", "busybox"]).err().unwrap().to_string();
        assert!(err.contains("is not a size"), "{err}");
    }

    #[test]
    fn env_without_a_value_takes_the_callers_or_is_skipped() {
        let flags = |env: &[&str]| ProcessFlags {
            interactive: false,
            tty: false,
            env: env.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            user: None,
        };
        let path = std::env::var("PATH").unwrap();
        assert_eq!(flags(&["PATH", "X=a=b"]).env_pairs().unwrap(), [("PATH".into(), path), ("X".into(), "a=b".into())]);
        assert_eq!(flags(&["BOXLITE_SURELY_UNSET_VARIABLE"]).env_pairs().unwrap(), []);
        assert!(flags(&["=x"]).env_pairs().unwrap_err().to_string().contains("-e NAME=VALUE"));
    }

    #[test]
    fn every_verb_parses() {
        for args in [
            &["exec", "-it", "b", "sh"][..],
            &["exec", "b", "ls", "-la"],
            &["create", "--name", "b", "--cpus", "2", "--disk", "4g", "busybox"],
            &["start", "a", "b"],
            &["stop", "a"],
            &["restart", "a"],
            &["rm", "-f", "a", "b"],
            &["ps", "-a", "--format", "json"],
            &["ls"],
            &["inspect", "a"],
            &["logs", "-f", "a"],
            &["pull", "busybox"],
            &["images"],
            &["rmi", "-f", "busybox"],
            &["import", "/tmp/layout", "localhost/x", "--tag", "latest"],
            &["version"],
            &["completion", "bash"],
            &["cp", "./data", "web:/srv/"],
            &["boot", "--hold"],
        ] {
            let all: Vec<&str> = std::iter::once("boxlite").chain(args.iter().copied()).collect();
            if let Err(e) = Cli::try_parse_from(&all) {
                panic!("{args:?}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["boxlite", "exec", "b"]).is_err(), "exec needs a command");
        assert!(Cli::try_parse_from(["boxlite", "completion", "tcsh"]).is_err());
    }
}
