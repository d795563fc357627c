//! The verbs on boxes: run, exec, create, start, stop, restart, rm, ps, inspect, logs, cp.
//!
//! Boxes the CLI creates are detached (`BoxOptions::detached`): a started box outlives the
//! command that started it and the next command attaches to it, as docker's containers
//! outlive `docker`. The older `run --name N --image REF -- CMD` form keeps its boxes
//! attached: they run only while that command runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use boxlite::{BoxOptions, BoxStatus, BoxliteRuntime, Error, LiteBox, NetworkOptions};
use serde_json::json;

use crate::args::{describe_network, BoxFlags, ExecArgs, Format, RunArgs};
use crate::exit::{CliResult, ExitClass, Failure, Hint};
use crate::images::prepare_image;
use crate::progress::spin;
use crate::session;

/// A box by name or id, or a NotFound failure that says how to list them.
pub fn find(runtime: &BoxliteRuntime, name: &str) -> CliResult<LiteBox> {
    runtime
        .get_box(name)
        .ok_or_else(|| Error::NotFound { what: format!("box {name:?}") })
        .hint(|_| Some("list the boxes with: boxlite ps -a".into()))
}

/// How a box is called in messages: its name, else its id.
fn label(lite_box: &LiteBox) -> String {
    lite_box.name().unwrap_or(lite_box.id()).to_string()
}

fn usage(field: &'static str, reason: impl Into<String>) -> Failure {
    Failure::from(Error::InvalidOption { field, reason: reason.into() })
}

fn logs_hint(lite_box: &LiteBox) -> impl FnOnce(&Error) -> Option<String> + '_ {
    move |e| {
        matches!(e, Error::ShimExited { .. } | Error::ShimFailed { .. } | Error::AgentTimeout { .. })
            .then(|| format!("see boxlite logs {}", label(lite_box)))
    }
}

/// The options of a box the CLI creates.
fn new_box_options(flags: &BoxFlags, image: String, network: Option<NetworkOptions>, detached: bool) -> BoxOptions {
    BoxOptions {
        name: flags.name.clone(),
        vcpus: flags.cpus,
        memory_mib: flags.memory,
        image: Some(image),
        detached,
        disk_size_gib: flags.disk,
        network: network.unwrap_or_default(),
        volumes: flags.volumes.clone(),
        ..Default::default()
    }
}

fn name_taken(runtime: &BoxliteRuntime, flags: &BoxFlags) -> CliResult<()> {
    match flags.name.as_deref().and_then(|name| runtime.get_box(name)) {
        Some(existing) => {
            let name = label(&existing);
            Err(Failure::with_hint(
                Error::InvalidState { what: format!("box {name}"), reason: "a box of that name exists already".into() },
                format!(
                    "run a command in it with boxlite exec {name} CMD (after boxlite start {name}), or remove it: boxlite rm -f {name}"
                ),
            ))
        }
        None => Ok(()),
    }
}

pub async fn create(runtime: &BoxliteRuntime, flags: &BoxFlags, image: &str) -> CliResult<i32> {
    let network = flags.network.options()?;
    name_taken(runtime, flags)?;
    let image = prepare_image(runtime, image).await?;
    let lite_box = runtime.create_box(new_box_options(flags, image, network, true))?;
    println!("{}", lite_box.id());
    Ok(0)
}

pub async fn run(runtime: &BoxliteRuntime, args: RunArgs) -> CliResult<i32> {
    if args.image.is_some() {
        return run_older_form(runtime, args).await;
    }
    let image = args.image_arg.clone().ok_or_else(|| usage("run", "no IMAGE given; usage: boxlite run [OPTIONS] IMAGE [COMMAND]..."))?;
    if args.detach {
        if !args.command.is_empty() {
            return Err(usage(
                "run",
                format!(
                    "with -d a box runs no command of its own: start it with boxlite run -d {image}, then run commands with boxlite exec BOX CMD"
                ),
            ));
        }
        if args.rm || args.process.interactive || args.process.tty {
            return Err(usage("run", "-d does not go with --rm, -i or -t (a detached box is removed with boxlite rm -f BOX)"));
        }
    }
    // Every flag is checked before anything is pulled or created.
    let network = args.new_box.network.options()?;
    let command = session::command(&args.command, &args.process)?;
    name_taken(runtime, &args.new_box)?;
    let image = prepare_image(runtime, &image).await?;
    let lite_box = runtime.create_box(new_box_options(&args.new_box, image, network, true))?;
    let started = Instant::now();
    if let Err(e) = start(&lite_box).await {
        if args.rm {
            let _ = runtime.remove_box(lite_box.id(), true).await;
        }
        return Err(e);
    }
    let booted = started.elapsed();
    print_forwards(&lite_box).await;
    if args.detach {
        println!("{}", lite_box.id());
        return Ok(0);
    }
    let outcome = run_and_stop(&lite_box, command, args.process.interactive).await;
    if args.rm {
        runtime.remove_box(lite_box.id(), true).await?;
    }
    finish(&lite_box, outcome, booted, args.timings)
}

/// `run --name NAME --image REF [--import-layout DIR] -- CMD`: CMD in the box NAME, created
/// from REF the first time; the box is attached (it ends with this command) and kept.
async fn run_older_form(runtime: &BoxliteRuntime, args: RunArgs) -> CliResult<i32> {
    let Some(name) = args.new_box.name.clone() else {
        return Err(usage("run", "--image needs --name (or use the form boxlite run [OPTIONS] IMAGE [COMMAND]...)"));
    };
    if args.detach {
        return Err(usage("run", "-d needs the form boxlite run -d [OPTIONS] IMAGE (not --image)"));
    }
    let image = args.image.clone().expect("the older form has --image");
    let network = args.new_box.network.options()?;
    let argv: Vec<String> = args.image_arg.iter().chain(&args.command).cloned().collect();
    let command = session::command(&argv, &args.process)?;
    if let Some(layout) = &args.import_layout {
        runtime.images().import_layout(layout, None, &image)?;
    }
    let lite_box = match runtime.get_box(&name) {
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
                }
                .into());
            }
            if !args.new_box.volumes.is_empty() && args.new_box.volumes != existing.options().volumes {
                return Err(Error::InvalidState {
                    what: format!("box {name}"),
                    reason: format!(
                        "it exists with other volumes than -v asks for; a box's volumes are set when it is created: remove it \
                         (boxlite rm {name}) to change them, or drop -v"
                    ),
                }
                .into());
            }
            existing
        }
        None => {
            let image = prepare_image(runtime, &image).await?;
            runtime.create_box(new_box_options(&args.new_box, image, network, false))?
        }
    };
    let started = Instant::now();
    start(&lite_box).await?;
    let booted = started.elapsed();
    print_forwards(&lite_box).await;
    let outcome = run_and_stop(&lite_box, command, args.process.interactive).await;
    if args.rm {
        runtime.remove_box(lite_box.id(), true).await?;
    }
    finish(&lite_box, outcome, booted, args.timings)
}

/// Runs the command, then stops the box whatever the command did.
async fn run_and_stop(lite_box: &LiteBox, command: boxlite::ExecCommand, interactive: bool) -> CliResult<(i32, Duration)> {
    let exec_started = Instant::now();
    let status = session::run(lite_box, command, interactive).await;
    let exec_time = exec_started.elapsed();
    let stopped = lite_box.stop().await;
    let status = status?;
    stopped?;
    Ok((session::exit_code(&status), exec_time))
}

fn finish(lite_box: &LiteBox, outcome: CliResult<(i32, Duration)>, booted: Duration, timings: bool) -> CliResult<i32> {
    let (code, exec_time) = outcome?;
    if timings {
        eprintln!(
            "boxlite: box {}: boot {:.0} ms (start to agent ready), exec {:.0} ms",
            label(lite_box),
            booted.as_secs_f64() * 1e3,
            exec_time.as_secs_f64() * 1e3
        );
    }
    Ok(code)
}

/// Starts a box under a spinner. SIGINT or SIGTERM meanwhile does not kill boxlite halfway
/// through a boot, which would leave a detached VM that no record knows: the boot ends, the
/// box is stopped again, and the failure says so (exit code 130).
async fn start(lite_box: &LiteBox) -> CliResult<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let name = label(lite_box);
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let boot = spin(format!("starting box {name}"), lite_box.start());
    tokio::pin!(boot);
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            result = &mut boot => break result,
            Some(()) = session::recv_signal(&mut interrupt) => interrupted = true,
            Some(()) = session::recv_signal(&mut terminate) => interrupted = true,
        }
    };
    if interrupted {
        let _ = lite_box.stop().await;
        let mut failure = Failure::from(Error::InvalidState {
            what: format!("box {name}"),
            reason: "interrupted while it started; it was stopped again".into(),
        });
        failure.class = Some(ExitClass::Interrupted);
        return Err(failure);
    }
    result.hint(logs_hint(lite_box))
}

async fn print_forwards(lite_box: &LiteBox) {
    if lite_box.options().network.port_forwards.is_empty() {
        return;
    }
    match lite_box.forwarded_ports().await {
        Ok(forwards) => {
            for forward in forwards {
                eprintln!(
                    "boxlite: {} -> {}/{}",
                    SocketAddr::new(forward.host_addr, forward.host_port),
                    forward.guest_port,
                    forward.protocol
                );
            }
        }
        Err(e) => eprintln!("boxlite: cannot list the port forwards: {e}"),
    }
}

pub async fn exec(runtime: &BoxliteRuntime, args: ExecArgs) -> CliResult<i32> {
    let lite_box = find(runtime, &args.name)?;
    let command = session::command(&args.command, &args.process)?;
    if lite_box.status() != BoxStatus::Running {
        let name = label(&lite_box);
        return Err(Failure::with_hint(
            Error::InvalidState { what: format!("box {name}"), reason: "it is not running".into() },
            format!("start it first: boxlite start {name}"),
        ));
    }
    let status = session::run(&lite_box, command, args.process.interactive).await.hint(logs_hint(&lite_box))?;
    Ok(session::exit_code(&status))
}

/// What `start`, `stop`, `restart` and `rm` do to one box.
#[derive(Clone, Copy)]
pub enum Lifecycle {
    Start,
    Stop,
    Restart,
    Remove { force: bool },
}

/// Applies `op` to each box in turn, as docker does: each success prints the box as given,
/// each failure a line on stderr; the exit code is the first failure's.
pub async fn each(runtime: &BoxliteRuntime, names: &[String], op: Lifecycle) -> CliResult<i32> {
    let mut code = 0;
    for name in names {
        match one(runtime, name, op).await {
            Ok(()) => println!("{name}"),
            Err(failure) => {
                eprintln!("boxlite: {}", failure.line());
                if code == 0 {
                    code = failure.code();
                }
            }
        }
    }
    Ok(code)
}

async fn one(runtime: &BoxliteRuntime, name: &str, op: Lifecycle) -> CliResult<()> {
    let lite_box = find(runtime, name)?;
    let attached_only = || {
        Failure::with_hint(
            Error::InvalidState {
                what: format!("box {name}"),
                reason: "it was made by the older `run --image` form and runs only while a command runs".into(),
            },
            format!("run commands in it with boxlite run --name {name} --image IMAGE -- CMD, or recreate it with boxlite create"),
        )
    };
    match op {
        Lifecycle::Start => {
            if !lite_box.options().detached {
                return Err(attached_only());
            }
            start(&lite_box).await?;
            print_forwards(&lite_box).await;
        }
        Lifecycle::Stop => spin(format!("stopping box {name}"), lite_box.stop()).await?,
        Lifecycle::Restart => {
            if !lite_box.options().detached {
                return Err(attached_only());
            }
            spin(format!("stopping box {name}"), lite_box.stop()).await?;
            start(&lite_box).await?;
        }
        Lifecycle::Remove { force } => runtime
            .remove_box(lite_box.id(), force)
            .await
            .hint(|e| matches!(e, Error::InvalidState { .. }).then(|| format!("with the CLI: boxlite rm -f {name}")))?,
    }
    Ok(())
}

pub fn ps(runtime: &BoxliteRuntime, all: bool, format: Format) -> CliResult<i32> {
    let mut boxes: Vec<LiteBox> = runtime.list_boxes().into_iter().filter(|b| all || b.status() == BoxStatus::Running).collect();
    boxes.sort_by_key(|b| std::cmp::Reverse(b.created_at()));
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = boxes
                .iter()
                .map(|b| {
                    json!({
                        "id": b.id(),
                        "name": b.name(),
                        "image": b.image(),
                        "status": status_word(b.status()),
                        "stop_reason": b.stop_reason(),
                        "created_at": unix_seconds(b.created_at()),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).expect("JSON values serialize"));
        }
        Format::Table => {
            println!("{:<12}  {:<20}  {:<32}  {:<8}  CREATED", "BOX ID", "NAME", "IMAGE", "STATUS");
            for b in &boxes {
                println!(
                    "{:<12}  {:<20}  {:<32}  {:<8}  {}",
                    b.id(),
                    b.name().unwrap_or("-"),
                    b.image().unwrap_or("-"),
                    status_word(b.status()),
                    ago(b.created_at())
                );
            }
        }
    }
    // On stderr: what scripts parse on stdout stays one box per line.
    for invalid in runtime.invalid_boxes() {
        eprintln!("boxlite: box {} did not load ({}): {}", invalid.id, invalid.dir.display(), invalid.reason);
    }
    Ok(0)
}

fn status_word(status: BoxStatus) -> &'static str {
    match status {
        BoxStatus::Configured => "created",
        BoxStatus::Running => "running",
        BoxStatus::Stopped => "stopped",
        BoxStatus::Removed => "removed",
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// "3 minutes ago", as docker says it.
fn ago(time: SystemTime) -> String {
    if time == SystemTime::UNIX_EPOCH {
        return "-".into();
    }
    let seconds = SystemTime::now().duration_since(time).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match seconds {
        0..=59 => (seconds, "second"),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

pub async fn inspect(runtime: &BoxliteRuntime, names: &[String]) -> CliResult<i32> {
    let mut documents = Vec::new();
    for name in names {
        documents.push(describe(&find(runtime, name)?).await);
    }
    println!("{}", serde_json::to_string_pretty(&documents).expect("JSON values serialize"));
    Ok(0)
}

async fn describe(lite_box: &LiteBox) -> serde_json::Value {
    let metrics = lite_box.metrics();
    let dir = lite_box.dir();
    let mut document = json!({
        "id": lite_box.id(),
        "name": lite_box.name(),
        "image": lite_box.image(),
        "created_at": unix_seconds(lite_box.created_at()),
        "dir": dir,
        "status": status_word(lite_box.status()),
        "stop_reason": lite_box.stop_reason(),
        "options": lite_box.options(),
        "protections": lite_box.protections(),
        "metrics": {
            "boots": metrics.boots,
            "last_boot_ms": metrics.last_boot_ms,
            "executions_started": metrics.exec.started,
            "executions_failed": metrics.exec.failed,
            "bytes_out": metrics.exec.bytes_out,
            "bytes_in": metrics.exec.bytes_in,
        },
        "disk": disk_usage(dir),
        "logs": { "console": console_log(dir), "shim": shim_log(dir) },
    });
    if lite_box.status() == BoxStatus::Running {
        // Asked of the running VM (attached to, when another command started it).
        let forwards = lite_box.forwarded_ports().await.map_err(|e| e.to_string());
        let guest = lite_box.guest_stats().await.map_err(|e| e.to_string());
        let network = lite_box.network_stats().await.map_err(|e| e.to_string());
        document["running"] = json!({
            "forwarded_ports": forwards.map_or_else(|e| json!({ "error": e }), |f| json!(f)),
            "network": network.map_or_else(|e| json!({ "error": e }), |n| json!(n)),
            "guest": guest.map_or_else(
                |e| json!({ "error": e }),
                |g| json!({
                    "cpu_busy_ms": g.cpu_busy_ms,
                    "memory_total_kib": g.memory_total_kib,
                    "memory_available_kib": g.memory_available_kib,
                    "uptime_ms": g.uptime_us / 1000,
                })
            ),
        });
    }
    document
}

fn console_log(dir: &Path) -> PathBuf {
    dir.join("vmm/console.log")
}

fn shim_log(dir: &Path) -> PathBuf {
    dir.join("shim.log")
}

/// The box's disk (its overlay: what the box wrote) and its whole directory, in bytes
/// allocated on the host and as apparent sizes.
fn disk_usage(dir: &Path) -> serde_json::Value {
    use std::os::unix::fs::MetadataExt;
    let overlay = dir.join("disk.qcow2");
    let overlay = std::fs::metadata(&overlay)
        .ok()
        .map(|m| json!({ "path": overlay, "allocated_bytes": m.blocks() * 512, "apparent_bytes": m.len() }));
    let (mut allocated, mut apparent) = (0u64, 0u64);
    // Bounded depth: a box directory is two levels deep (vmm/ holds the console and sockets).
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((path, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.is_dir() && depth < 4 {
                pending.push((entry.path(), depth + 1));
            } else if meta.is_file() {
                allocated += meta.blocks() * 512;
                apparent += meta.len();
            }
        }
    }
    json!({ "overlay": overlay, "dir_allocated_bytes": allocated, "dir_apparent_bytes": apparent })
}

/// The logs of a box, found through the runtime and then read without it: the home is
/// unlocked while `-f` follows them.
pub async fn logs(open: impl FnOnce() -> boxlite::Result<BoxliteRuntime>, name: &str, follow: bool) -> CliResult<i32> {
    let dir = {
        let runtime = open()?;
        let lite_box = find(&runtime, name)?;
        lite_box.dir().to_path_buf()
    };
    let files = [console_log(&dir), shim_log(&dir)];
    let mut offsets = [0u64; 2];
    let mut last_shown = None;
    loop {
        let mut printed = false;
        for (i, file) in files.iter().enumerate() {
            printed |= print_new(file, &mut offsets[i], &mut last_shown, i)?;
        }
        // docker logs -f ends when the container stops: here, when the box's shim is gone.
        if !follow || (!printed && !shim_running(&dir)) {
            if follow {
                // What was written between the last read and the shim's end.
                for (i, file) in files.iter().enumerate() {
                    print_new(file, &mut offsets[i], &mut last_shown, i)?;
                }
            }
            return Ok(0);
        }
        if !printed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Prints what `file` holds past `offset` (under a `==> file <==` header when the file
/// printed changes, as tail does); whether anything was printed.
fn print_new(file: &Path, offset: &mut u64, last_shown: &mut Option<usize>, index: usize) -> CliResult<bool> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Ok(mut handle) = std::fs::File::open(file) else { return Ok(false) };
    let len = handle.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // a new boot truncated it
    }
    if len == *offset {
        return Ok(false);
    }
    handle.seek(SeekFrom::Start(*offset)).map_err(|e| Error::Io { op: format!("read {}", file.display()), source: e })?;
    let mut stdout = std::io::stdout().lock();
    if *last_shown != Some(index) {
        let _ = writeln!(stdout, "==> {} <==", file.display());
        *last_shown = Some(index);
    }
    // In pieces: a log can be large, and only what was there when we looked is printed.
    let mut remaining = len - *offset;
    let mut buffer = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = buffer.len().min(remaining as usize);
        let n = handle.read(&mut buffer[..want]).map_err(|e| Error::Io { op: format!("read {}", file.display()), source: e })?;
        if n == 0 {
            break;
        }
        let _ = stdout.write_all(&buffer[..n]);
        remaining -= n as u64;
        *offset += n as u64;
    }
    let _ = stdout.flush();
    Ok(true)
}

/// Whether the shim recorded in the box's directory still runs.
fn shim_running(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("shim.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok()) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "boxlite-shim")
}

/// One side of `boxlite cp`: `BOX:PATH`, or a host path. As docker's: a path that starts
/// with `/` or `.`, or has no `:`, is the host's (write `./a:b` for a host file named `a:b`).
#[derive(Debug, PartialEq, Eq)]
pub enum CpPath {
    Host(PathBuf),
    InBox { name: String, path: String },
}

impl CpPath {
    pub fn parse(text: &str) -> CpPath {
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

pub async fn copy(runtime: &BoxliteRuntime, src: CpPath, dst: CpPath) -> CliResult<i32> {
    let (name, copy_in, host, guest) = match (src, dst) {
        (CpPath::Host(host), CpPath::InBox { name, path }) => (name, true, host, path),
        (CpPath::InBox { name, path }, CpPath::Host(host)) => (name, false, host, path),
        _ => return Err(usage("cp", "give one host path and one BOX:PATH (e.g. boxlite cp ./data mybox:/srv/)")),
    };
    let lite_box = find(runtime, &name)?;
    let was_running = lite_box.status() == BoxStatus::Running;
    let guest = if guest.is_empty() { "/".to_string() } else { guest };
    let result = if copy_in { lite_box.copy_in(&host, &guest).await } else { lite_box.copy_out(&guest, &host).await };
    if !was_running {
        // A stopped box is started for the copy only (and stop syncs the box's disk).
        lite_box.stop().await?;
    }
    for warning in result?.warnings {
        eprintln!("boxlite: {warning}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_paths_are_box_colon_path_or_host_paths() {
        assert_eq!(CpPath::parse("web:/srv/app"), CpPath::InBox { name: "web".into(), path: "/srv/app".into() });
        assert_eq!(CpPath::parse("web:"), CpPath::InBox { name: "web".into(), path: "".into() });
        assert_eq!(CpPath::parse("./a:b"), CpPath::Host("./a:b".into()));
        assert_eq!(CpPath::parse("/tmp/x:y"), CpPath::Host("/tmp/x:y".into()));
        assert_eq!(CpPath::parse("data"), CpPath::Host("data".into()));
        assert_eq!(CpPath::parse(":x"), CpPath::Host(":x".into()));
    }

    #[test]
    fn ages_read_as_docker_says_them() {
        let now = SystemTime::now();
        assert_eq!(ago(now - Duration::from_secs(1)), "1 second ago");
        assert_eq!(ago(now - Duration::from_secs(150)), "2 minutes ago");
        assert_eq!(ago(now - Duration::from_secs(3 * 86_400)), "3 days ago");
        assert_eq!(ago(SystemTime::UNIX_EPOCH), "-");
    }
}
