//! The boxes every figure measures: their root (an image or a raw root disk), their options,
//! and starting, probing and removing them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite::{BootTimings, BoxOptions, BoxliteRuntime, DiskFormat, EngineKind, ExecCommand, LiteBox, NetworkOptions, RootDisk};

use crate::{Args, NetworkArg};

/// What the boxes boot.
#[derive(Debug, Clone)]
pub enum RootChoice {
    /// An OCI layout, imported into each engine's home under `reference`.
    Layout { dir: PathBuf, tag: Option<String>, reference: String },
    /// A reference the runtime pulls at the first start.
    Reference(String),
    /// A raw ext4 root disk, booted read-only.
    RootDisk(PathBuf),
}

impl RootChoice {
    pub fn from_args(image: Option<&str>, tag: Option<&str>, root_disk: Option<&Path>) -> Result<RootChoice, String> {
        if let Some(disk) = root_disk {
            if !disk.is_file() {
                return Err(format!("--root-disk {}: no such file; build it with scripts/build-test-rootfs.sh", disk.display()));
            }
            return Ok(RootChoice::RootDisk(disk.to_path_buf()));
        }
        let (dir, tag) = match image {
            Some(image) if !Path::new(image).is_dir() => return Ok(RootChoice::Reference(image.to_string())),
            Some(dir) => (PathBuf::from(dir), tag.map(str::to_string)),
            None => {
                let dir = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
                if !dir.join("index.json").is_file() {
                    return Err(format!(
                        "the busybox test image {} is missing: run scripts/build-test-images.sh, or pass --image or --root-disk",
                        dir.display()
                    ));
                }
                (dir, Some(tag.unwrap_or("latest").to_string()))
            }
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let reference = format!("localhost/bench/{}:{}", name.to_lowercase(), tag.as_deref().unwrap_or("latest"));
        Ok(RootChoice::Layout { dir, tag, reference })
    }

    pub fn describe(&self) -> String {
        match self {
            RootChoice::Layout { dir, tag, .. } => {
                format!(
                    "image from the OCI layout {} (tag {}), one qcow2 overlay per box",
                    dir.display(),
                    tag.as_deref().unwrap_or("its only one")
                )
            }
            RootChoice::Reference(reference) => format!("image {reference} (pulled), one qcow2 overlay per box"),
            RootChoice::RootDisk(path) => format!("raw root disk {} (read-only)", path.display()),
        }
    }

    /// The OCI layout the images figure pushes to its registry, if the boxes use one.
    pub fn layout(&self) -> Option<(&Path, Option<&str>)> {
        match self {
            RootChoice::Layout { dir, tag, .. } => Some((dir, tag.as_deref())),
            _ => None,
        }
    }
}

/// One engine's runtime and the options of its boxes.
pub struct Bench {
    pub runtime: Arc<BoxliteRuntime>,
    pub engine: EngineKind,
    pub memory_mib: u32,
    pub runs: u32,
    pub exec_runs: u32,
    pub loop_runs: u32,
    pub stream_mib: u32,
    pub image_runs: u32,
    pub idle_secs: u32,
    pub density_max: u32,
    pub probe_every: u32,
    pub min_available_mib: u64,
    pub root: RootChoice,
    network: NetworkArg,
}

/// A box just started, and what its start cost.
pub struct Started {
    pub lite_box: LiteBox,
    pub create: Duration,
    pub start: Duration,
    pub boot: Option<BootTimings>,
}

impl Bench {
    pub fn new(runtime: Arc<BoxliteRuntime>, args: &Args, root: RootChoice, engine: EngineKind) -> boxlite::Result<Bench> {
        if let RootChoice::Layout { dir, tag, reference } = &root {
            runtime.images().import_layout(dir, tag.as_deref(), reference)?;
        }
        Ok(Bench {
            runtime,
            engine,
            memory_mib: args.memory,
            runs: args.runs,
            exec_runs: args.exec_runs,
            loop_runs: args.loop_runs,
            stream_mib: args.stream_mib,
            image_runs: args.image_runs,
            idle_secs: args.idle_secs,
            density_max: args.density_max,
            probe_every: args.probe_every,
            min_available_mib: args.min_available_mib,
            root,
            network: args.network,
        })
    }

    pub fn box_options(&self) -> BoxOptions {
        let mut options = BoxOptions { memory_mib: self.memory_mib, ..Default::default() };
        match &self.root {
            RootChoice::Layout { reference, .. } => options.image = Some(reference.clone()),
            RootChoice::Reference(reference) => options.image = Some(reference.clone()),
            RootChoice::RootDisk(path) => {
                options.root_disk = Some(RootDisk { path: path.clone(), format: DiskFormat::Raw, read_only: true });
            }
        }
        if self.network == NetworkArg::None {
            options.network = NetworkOptions::none();
        }
        options
    }

    /// Creates and starts a box of `options`, timing both.
    pub async fn start(&self, options: BoxOptions) -> Result<Started, String> {
        let started = Instant::now();
        let lite_box = self.runtime.create_box(options).map_err(|e| format!("create: {e}"))?;
        let create = started.elapsed();
        if let Err(e) = lite_box.start().await {
            self.remove(&lite_box).await;
            return Err(format!("start: {e}"));
        }
        let start = started.elapsed() - create;
        let boot = lite_box.boot_timings().await;
        Ok(Started { lite_box, create, start, boot })
    }

    /// Creates and starts a box of the bench's options.
    pub async fn start_default(&self) -> Result<Started, String> {
        self.start(self.box_options()).await
    }

    pub async fn remove(&self, lite_box: &LiteBox) {
        if let Err(e) = self.runtime.remove_box(lite_box.id(), true).await {
            say!("cannot remove box {}: {e}", lite_box.id());
        }
    }
}

/// Runs `true` in the box and says how long the round trip took; an error if it failed or
/// took longer than `limit`.
pub async fn probe(lite_box: &LiteBox, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    match tokio::time::timeout(limit, lite_box.exec_output(ExecCommand::new("true"))).await {
        Err(_) => Err(format!("no answer within {limit:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if !out.status.success() => Err(format!("`true` ended with {:?}", out.status)),
        Ok(Ok(_)) => Ok(started.elapsed()),
    }
}

/// Removes every box of a runtime (force: running ones are stopped), all at once.
pub async fn remove_all(runtime: &BoxliteRuntime) {
    let boxes = runtime.list_boxes();
    if boxes.is_empty() {
        return;
    }
    say!("removing {} box(es)", boxes.len());
    let removals = boxes.iter().map(|b| runtime.remove_box(b.id(), true));
    for (lite_box, result) in boxes.iter().zip(futures::future::join_all(removals).await) {
        if let Err(e) = result {
            say!("cannot remove box {}: {e}", lite_box.id());
        }
    }
}

/// The box's shim and console logs' last lines, to show with a failure.
pub fn logs_of(lite_box: &LiteBox) -> String {
    let shim = boxlite::runtime::vm::log_tail(&lite_box.dir().join("shim.log"));
    let console = boxlite::runtime::vm::log_tail(&lite_box.dir().join("vmm/console.log"));
    format!("shim.log: {shim}\nconsole.log: {console}")
}
