//! boxlite-bench: every performance figure of boxlite, per engine available on this host,
//! in one run (a harness, not a test): cold start, exec round trip, stdout throughput,
//! memory and CPU of an idle box, image pull + disk build, and density. Each figure sits
//! beside a baseline (the host's own, the raw channel, or the target it is held to), as one
//! markdown table per engine and one JSON document.
//!
//! Every box lives in a home of its own (a temporary one unless `--home`) and is removed at
//! the end, on error and on Ctrl-C too.

/// Progress and step lines: on stderr, so that `--format json` keeps stdout a document.
/// (Defined before the modules, which use it.)
macro_rules! say {
    ($($arg:tt)*) => { eprintln!($($arg)*) };
}

mod boxes;
mod cost;
mod density;
mod exec;
mod images;
mod procfs;
/// The loopback registry the tests use (shared, not copied).
#[path = "../../../tests/common/registry.rs"]
mod registry;
mod report;
mod start;
mod stream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use boxlite::{BoxliteRuntime, EngineChoice, EngineKind, HostVirtualization, RuntimeOptions};
use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::boxes::{Bench, RootChoice};
use crate::report::EngineReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Qemu,
    Krun,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Figure {
    Cold,
    Exec,
    Stream,
    Memory,
    Images,
    Density,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    Outbound,
    None,
}

/// Every boxlite figure beside its baseline, per engine (docs/performance.md).
#[derive(Debug, Parser)]
#[command(name = "boxlite-bench", version)]
pub struct Args {
    /// The engines to measure; `all` is every engine this host can run.
    #[arg(long, value_enum, default_value = "all")]
    engine: EngineArg,
    /// Cold starts measured (p50/p90 over them).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Round trips of `true` measured (p50/p99 over them).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub exec_runs: u32,
    /// Iterations of the in-guest loop of `/bin/true`.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub loop_runs: u32,
    /// MiB streamed per throughput measurement.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_mib: u32,
    /// Pulls measured, each into an empty cache (the median is shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub image_runs: u32,
    /// The figures to run (comma-separated); all of them by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Figure>,
    /// Most boxes the density figure starts; 0 skips it.
    #[arg(long, default_value_t = 60)]
    pub density_max: u32,
    /// Probe every running box with an exec every this many density steps (and at the end).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_every: u32,
    /// Density stops before the host's available memory falls under this (MiB): the
    /// machine may be shared.
    #[arg(long, default_value_t = 3072)]
    pub min_available_mib: u64,
    /// Seconds of idle over which a box's CPU use is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub idle_secs: u32,
    /// Memory of each box, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// The boxes' image: an OCI layout directory (imported) or a reference (pulled).
    /// Default: the busybox test image of scripts/build-test-images.sh.
    #[arg(long, conflicts_with = "root_disk")]
    image: Option<String>,
    /// The tag to import from an `--image` layout (default: its only one, "latest" for busybox).
    #[arg(long)]
    image_tag: Option<String>,
    /// Boot the boxes from this raw ext4 root disk (read-only) instead of an image, e.g.
    /// target/guest/busybox-rootfs.ext4 of scripts/build-test-rootfs.sh.
    #[arg(long)]
    root_disk: Option<PathBuf>,
    /// The Python image layout (scripts/build-python-image.sh) whose python3 measures the
    /// raw vsock channel. Default: the cached one.
    #[arg(long)]
    python_image: Option<PathBuf>,
    /// The boxes' network (`outbound` runs a gateway per box, as a default box has).
    #[arg(long, value_enum, default_value = "outbound")]
    pub network: NetworkArg,
    /// The runtime home (default: a temporary directory, removed afterwards).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Also write the JSON document to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `json` prints only the JSON document on stdout (progress goes to stderr).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

impl Args {
    pub fn wants(&self, figure: Figure) -> bool {
        (self.only.is_empty() || self.only.contains(&figure)) && (figure != Figure::Density || self.density_max > 0)
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("cannot start the async runtime: {e}")));
    let code = runtime.block_on(run(args));
    drop(runtime);
    std::process::exit(code);
}

fn fail(message: &str) -> ! {
    eprintln!("boxlite-bench: {message}");
    std::process::exit(2)
}

async fn run(args: Args) -> i32 {
    let root = match RootChoice::from_args(args.image.as_deref(), args.image_tag.as_deref(), args.root_disk.as_deref()) {
        Ok(root) => root,
        Err(e) => fail(&e),
    };
    let (home, temporary) = match &args.home {
        Some(home) => (home.clone(), false),
        None => (std::env::temp_dir().join(format!("boxlite-bench-{}", std::process::id())), true),
    };
    if let Err(e) = std::fs::create_dir_all(&home) {
        fail(&format!("cannot create the home {}: {e}; pass another --home", home.display()));
    }

    let host = HostVirtualization::detect();
    let mut engines = Vec::new();
    let mut skipped = serde_json::Map::new();
    if matches!(args.engine, EngineArg::Qemu | EngineArg::All) {
        engines.push(EngineKind::Qemu);
    }
    if matches!(args.engine, EngineArg::Krun | EngineArg::All) {
        if host.hardware_kvm() {
            engines.push(EngineKind::Krun);
        } else {
            let reason = host.why_no_hardware_kvm();
            say!("krun: not available here ({reason})");
            skipped.insert("krun".into(), json!(format!("not available here ({reason})")));
        }
    }
    let accel = if host.hardware_kvm() { "kvm" } else { "tcg" };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = procfs::machine();
    let qemu = procfs::tool_version("qemu-system-x86_64").unwrap_or_else(|| "qemu-system-x86_64 not found".into());
    say!("boxlite-bench on {machine}\n{qemu}; qemu accel {accel}; boxes: {}, {} MiB, 1 vCPU", root.describe(), args.memory);

    // The runtimes live here so that an interrupted run can still remove their boxes.
    let runtimes: Arc<Mutex<Vec<Arc<BoxliteRuntime>>>> = Arc::default();
    let measured = {
        let runtimes = runtimes.clone();
        let (args, root, home) = (&args, &root, &home);
        async move {
            let mut reports = Vec::new();
            for engine in engines {
                let report = measure_engine(args, root, &home.join(engine.to_string()), engine, &runtimes).await;
                reports.push((engine, report));
            }
            reports
        }
    };
    // SIGTERM (e.g. from `timeout`) cleans up like Ctrl-C.
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => signal.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    let (reports, interrupted) = tokio::select! {
        reports = measured => (reports, false),
        _ = tokio::signal::ctrl_c() => (Vec::new(), true),
        _ = terminated => (Vec::new(), true),
    };
    // The measuring future is gone: its boxes' handles are dropped (their VMs die with them);
    // remove what is left of them from the homes.
    let held: Vec<Arc<BoxliteRuntime>> = runtimes.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
    for runtime in held {
        boxes::remove_all(&runtime).await;
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&home);
    }
    if interrupted {
        say!("interrupted: every box removed");
        return 130;
    }

    let mut failed = false;
    let mut engines_json = serde_json::Map::new();
    for (engine, report) in &reports {
        match report {
            Ok(report) => {
                if args.format == Format::Table {
                    println!("\n{}", report::table(&engine.to_string(), report));
                }
                engines_json.insert(engine.to_string(), report::json(report));
            }
            Err(e) => {
                failed = true;
                say!("{engine}: {e}");
                engines_json.insert(engine.to_string(), json!({ "error": e }));
            }
        }
    }
    for (engine, reason) in &skipped {
        if args.format == Format::Table {
            println!("{engine}: {}", reason.as_str().unwrap_or_default());
        }
        engines_json.insert(engine.clone(), json!({ "skipped": reason }));
    }
    let document = json!({
        "date": utc_now(),
        "machine": machine,
        "qemu": qemu,
        "accel": accel,
        "command": command,
        "boxes": { "root": root.describe(), "memory_mib": args.memory, "vcpus": 1, "network": format!("{:?}", args.network).to_lowercase() },
        "engines": engines_json,
    });
    let text = serde_json::to_string_pretty(&document).expect("the document serializes");
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            say!("cannot write {}: {e}", path.display());
            failed = true;
        }
    }
    match args.format {
        Format::Json => println!("{text}"),
        Format::Table => println!("\n{}", serde_json::to_string(&document).expect("the document serializes")),
    }
    if failed
        || reports
            .iter()
            .any(|(_, r)| r.as_ref().is_ok_and(|r| r.rows.iter().any(|row| row.note.as_deref().is_some_and(|n| n.starts_with("failed")))))
    {
        1
    } else {
        0
    }
}

/// Runs every wanted figure on one engine. A figure that fails is reported in its row and
/// the others still run; only a runtime that cannot open is an error.
async fn measure_engine(
    args: &Args,
    root: &RootChoice,
    home: &std::path::Path,
    engine: EngineKind,
    runtimes: &Arc<Mutex<Vec<Arc<BoxliteRuntime>>>>,
) -> Result<EngineReport, String> {
    let choice = match engine {
        EngineKind::Krun => EngineChoice::Krun,
        EngineKind::Qemu => EngineChoice::Qemu,
    };
    let options = RuntimeOptions { home: Some(home.to_path_buf()), engine: choice, ..Default::default() };
    let runtime = Arc::new(BoxliteRuntime::new(options).map_err(|e| format!("cannot open a runtime in {}: {e}", home.display()))?);
    runtimes.lock().unwrap_or_else(|e| e.into_inner()).push(runtime.clone());
    let bench = Bench::new(runtime, args, root.clone(), engine).map_err(|e| format!("cannot prepare the boxes' image: {e}"))?;
    let mut report = EngineReport::default();
    say!("\n== {engine} ==");
    if args.wants(Figure::Cold) {
        start::cold_start(&bench, &mut report).await;
    }
    if args.wants(Figure::Exec) {
        exec::round_trip(&bench, &mut report).await;
    }
    if args.wants(Figure::Stream) {
        stream::throughput(&bench, args.python_image.as_deref(), &mut report).await;
    }
    if args.wants(Figure::Memory) {
        cost::idle_box(&bench, &mut report).await;
    }
    if args.wants(Figure::Images) {
        images::pull(&bench, home, &mut report).await;
    }
    if args.wants(Figure::Density) {
        density::density(&bench, &mut report).await;
    }
    Ok(report)
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
