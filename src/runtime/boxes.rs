//! `LiteBox`: one box of a runtime. Configured at create (every option checked then), running
//! after `start()` or its first exec, stopped after `stop()` or when its VM ends.
//!
//! Each box's record (`boxes/<id>/config.json`: format, options, creation time, state, why it
//! stopped) is written atomically at every change, so a new runtime on the same home finds
//! every box as it was.
//! The box's disk (`disk.qcow2` for an image) lives in the same directory: its state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::runtime::error::{Error, Result};
use crate::runtime::exec::{ExecCommand, ExecCounters, ExecMetrics, ExecOutput, Execution};
use crate::runtime::home::RuntimeShared;
use crate::runtime::images::oci::RunConfig;
use crate::runtime::images::store::write_atomic;
use crate::runtime::images::{disk, normalize_reference};
use crate::runtime::network::{BoundForward, NetworkOptions, NetworkStats};
use crate::runtime::spec::{DiskFormat, Protections, PROTECTIONS_FILE};
use crate::runtime::vm::{validate_resources, AttachInfo, RootDisk, ShimExit, Vm, VmOptions};
use crate::runtime::volumes::{self, Volume};

/// How long a stopping box's guest gets to sync and power off before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const MAX_NAME_LEN: usize = 64;
const MAX_DISK_GIB: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxOptions {
    /// Unique within the runtime: letters, digits, '.', '_' and '-', at most 64 bytes.
    pub name: Option<String>,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The image the box runs (`name[:tag][@digest]`); resolved at first start. Its base
    /// disk is shared; the box writes to its own overlay (`disk.qcow2` in its directory).
    pub image: Option<String>,
    /// Or a ready ext4 root disk (no image).
    pub root_disk: Option<RootDisk>,
    /// Keep the box's VM running when this runtime's process goes away; the next runtime on
    /// the home attaches to it.
    #[serde(default)]
    pub detached: bool,
    /// The size of an image box's disk (its root file system) in GiB; `None` gives the
    /// image's base size (its content plus 2 GiB). At least the base size (checked at first
    /// start, when the image is known), at most 4096.
    #[serde(default)]
    pub disk_size_gib: Option<u32>,
    /// The box's network: full outbound unless set otherwise (docs/network.md). Records
    /// written before the field existed get the default.
    #[serde(default)]
    pub network: NetworkOptions,
    /// Host directories mounted in the box (docs/volumes.md), checked at create.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

impl Default for BoxOptions {
    fn default() -> Self {
        BoxOptions {
            name: None,
            vcpus: 1,
            memory_mib: 256,
            image: None,
            root_disk: None,
            detached: false,
            disk_size_gib: None,
            network: NetworkOptions::default(),
            volumes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    Configured,
    Running,
    Stopped,
    Removed,
}

/// The newest format of box records this boxlite reads and writes. Raise it when a change
/// would make an older boxlite misread a record; an older one then refuses the box instead of
/// guessing (and leaves it alone). 2: a network other than the default, or volumes (a
/// boxlite of format 1 would start the box without them, and drop them when it rewrote the
/// record). A record is written in the oldest format that holds it ([`record_format`]), so
/// boxes that need nothing newer stay usable by older versions.
pub const BOX_RECORD_FORMAT: u32 = 2;

/// The oldest record format that holds `options` whole.
fn record_format(options: &BoxOptions) -> u32 {
    if options.network != NetworkOptions::default() || !options.volumes.is_empty() {
        2
    } else {
        1
    }
}

/// What `boxes/<id>/config.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BoxRecord {
    /// Records written before the field existed are format 1.
    #[serde(default = "first_format")]
    format: u32,
    id: String,
    /// Unix milliseconds; 0 in records written before the field existed.
    #[serde(default)]
    created_at_ms: u64,
    options: BoxOptions,
    status: BoxStatus,
    /// Why the box last stopped, when it was not asked to (e.g. "the shim was killed").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_reason: Option<String>,
}

fn first_format() -> u32 {
    1
}

/// The one field read before the rest: a newer format may have changed any other.
#[derive(Deserialize)]
struct RecordFormat {
    #[serde(default = "first_format")]
    format: u32,
}

/// Why a box directory did not load.
#[derive(Debug)]
pub(crate) enum RecordError {
    /// Written by a newer boxlite: left as it is, for that boxlite.
    Newer(String),
    /// Missing, unreadable or corrupt.
    Unreadable(String),
}

impl RecordError {
    pub(crate) fn reason(&self) -> &str {
        match self {
            RecordError::Newer(reason) | RecordError::Unreadable(reason) => reason,
        }
    }
}

pub(crate) const RECORD_FILE: &str = "config.json";
/// A detached box's running VM, for the next runtime to attach to.
const ATTACH_FILE: &str = "vm.json";

/// Per-box figures (a snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoxMetrics {
    /// Shim spawn to first Ping of the last boot, in milliseconds.
    pub last_boot_ms: Option<f64>,
    pub boots: u64,
    pub exec: ExecMetrics,
    /// The running box's network gateway figures (None: stopped, no network device, or the
    /// box busy starting or stopping; `LiteBox::network_stats` waits for it).
    pub network: Option<NetworkStats>,
}

/// A box. Cheap to clone; clones are the same box. Send + Sync.
#[derive(Clone)]
pub struct LiteBox {
    inner: Arc<BoxInner>,
}

struct BoxInner {
    id: String,
    options: BoxOptions,
    created_at_ms: u64,
    dir: PathBuf,
    /// Keeps the runtime's home locked while this box lives.
    runtime: Arc<RuntimeShared>,
    state: Mutex<BoxState>,
    /// The running VM; the lock also serialises start, stop and remove.
    vm: tokio::sync::Mutex<Option<Arc<Vm>>>,
    /// The image's run settings, once the image was resolved at first start.
    image_config: std::sync::OnceLock<RunConfig>,
    exec_counters: Arc<ExecCounters>,
}

struct BoxState {
    status: BoxStatus,
    stop_reason: Option<String>,
    /// Counts boots; a VM's exit only marks the box stopped if no later boot replaced it.
    boots: u64,
    last_boot_ms: Option<f64>,
    /// The task that notices the running VM ending on its own; aborted on explicit stops,
    /// so that it never outlives the box's handles (it holds the box while it works).
    exit_watcher: Option<tokio::task::AbortHandle>,
}

impl LiteBox {
    pub(crate) fn create(runtime: Arc<RuntimeShared>, mut options: BoxOptions) -> Result<LiteBox> {
        validate(&options)?;
        volumes::validate(&options.volumes, std::slice::from_ref(&runtime.home))?;
        if let Some(image) = &options.image {
            options.image = Some(normalize_reference(image)?);
        }
        let id = crate::runtime::sys::random_hex::<6>();
        let dir = runtime.boxes_dir().join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let created_at_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let format = record_format(&options);
        let record = BoxRecord { format, id, created_at_ms, options, status: BoxStatus::Configured, stop_reason: None };
        let lite_box = LiteBox::from_record(runtime, dir.clone(), record);
        // The record is the box: without it (a crash right here) the directory is swept
        // away by the next runtime and blocks no name.
        if let Err(e) = lite_box.persist() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(lite_box)
    }

    /// Loads a box from its directory. A box that was running when its runtime went away
    /// is stopped now (its VM died with that runtime), and says so.
    pub(crate) fn load(runtime: Arc<RuntimeShared>, dir: &Path) -> Result<LiteBox, RecordError> {
        let mut record = read_record(dir)?;
        // A detached box whose shim still runs stays running: `running_vm` attaches to it.
        let attachable = record.options.detached && shim_alive(&dir.join(ATTACH_FILE));
        let was_running = record.status == BoxStatus::Running && !attachable;
        if was_running {
            record.status = BoxStatus::Stopped;
            record.stop_reason = Some(if record.options.detached {
                "its detached VM ended while no runtime held it".into()
            } else {
                "the runtime that ran it exited".into()
            });
            let _ = std::fs::remove_file(dir.join(ATTACH_FILE));
        }
        let lite_box = LiteBox::from_record(runtime, dir.to_path_buf(), record);
        if was_running {
            // The box is as good as loaded: its next change writes the record again.
            if let Err(e) = lite_box.persist() {
                tracing::warn!(box_id = %lite_box.inner.id, "cannot record that the box stopped: {e}");
            }
        }
        Ok(lite_box)
    }

    fn from_record(runtime: Arc<RuntimeShared>, dir: PathBuf, record: BoxRecord) -> LiteBox {
        let inner = BoxInner {
            id: record.id,
            options: record.options,
            created_at_ms: record.created_at_ms,
            dir,
            runtime,
            state: Mutex::new(BoxState {
                status: record.status,
                stop_reason: record.stop_reason,
                boots: 0,
                last_boot_ms: None,
                exit_watcher: None,
            }),
            vm: tokio::sync::Mutex::new(None),
            image_config: std::sync::OnceLock::new(),
            exec_counters: Arc::default(),
        };
        LiteBox { inner: Arc::new(inner) }
    }

    fn persist(&self) -> Result<()> {
        let (status, stop_reason) = {
            let state = self.state();
            (state.status, state.stop_reason.clone())
        };
        self.write_record(status, stop_reason)
    }

    fn write_record(&self, status: BoxStatus, stop_reason: Option<String>) -> Result<()> {
        if status == BoxStatus::Removed {
            return Ok(());
        }
        let record = BoxRecord {
            format: record_format(&self.inner.options),
            id: self.inner.id.clone(),
            created_at_ms: self.inner.created_at_ms,
            options: self.inner.options.clone(),
            status,
            stop_reason,
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("a box record always serializes");
        write_atomic(&self.inner.dir, &self.inner.dir.join(RECORD_FILE), &bytes)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BoxState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new status on disk first, then in memory: whoever sees it in memory can
    /// rely on the record saying the same.
    fn set_status(&self, status: BoxStatus, stop_reason: Option<String>) -> Result<()> {
        self.write_record(status, stop_reason.clone())?;
        let mut state = self.state();
        state.status = status;
        state.stop_reason = stop_reason;
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn name(&self) -> Option<&str> {
        self.inner.options.name.as_deref()
    }

    pub fn options(&self) -> &BoxOptions {
        &self.inner.options
    }

    /// When the box was created; `UNIX_EPOCH` for a box whose record predates the field.
    pub fn created_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.inner.created_at_ms)
    }

    /// The (normalised) image reference the box runs, if it runs one.
    pub fn image(&self) -> Option<&str> {
        self.inner.options.image.as_deref()
    }

    /// The box's directory (config.json, its disk, shim.log, protections.json, and vmm/ with
    /// console.log and the sockets).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The protections its VM ran with at its last start (docs/jailer.md), as the shim
    /// recorded them; None before the first start.
    pub fn protections(&self) -> Option<Protections> {
        let bytes = std::fs::read(self.inner.dir.join(PROTECTIONS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn status(&self) -> BoxStatus {
        self.state().status
    }

    /// Why the box stopped, when it stopped without being asked to.
    pub fn stop_reason(&self) -> Option<String> {
        self.state().stop_reason.clone()
    }

    pub fn metrics(&self) -> BoxMetrics {
        let network = self.inner.vm.try_lock().ok().and_then(|vm| vm.as_ref().and_then(|vm| vm.network_stats()));
        let state = self.state();
        BoxMetrics { last_boot_ms: state.last_boot_ms, boots: state.boots, exec: self.inner.exec_counters.snapshot(), network }
    }

    /// The host processes of the box's running VM (shim, VMM, helpers), to measure what the
    /// box costs the host; empty when no VM of this runtime runs it.
    pub async fn pids(&self) -> Vec<u32> {
        let vm = self.inner.vm.lock().await;
        vm.as_ref().filter(|vm| vm.exit_status().is_none()).map(|vm| vm.pids()).unwrap_or_default()
    }

    /// The boot breakdown of the running VM (see [`Vm::timings`]); None when not running.
    pub async fn boot_timings(&self) -> Option<crate::runtime::vm::BootTimings> {
        self.inner.vm.lock().await.as_ref().map(|vm| vm.timings())
    }

    /// Guest CPU and memory as the agent reports them (the box must be running).
    pub async fn guest_stats(&self) -> Result<crate::runtime::agent::GuestStats> {
        let vm = self.inner.vm.lock().await.clone();
        match vm {
            Some(vm) => vm.guest_stats().await,
            None => Err(Error::InvalidState { what: format!("box {}", self.inner.id), reason: "it is not running".into() }),
        }
    }

    /// The running box's port forwards as bound on the host (a requested port 0 resolved).
    /// An error when the box is not running; a detached box that another runtime started is
    /// attached first.
    pub async fn forwarded_ports(&self) -> Result<Vec<BoundForward>> {
        Ok(self.running_now("port forwards").await?.forwarded_ports().to_vec())
    }

    /// The running box's network gateway figures; None when it has no network device or
    /// the gateway has written none yet. An error when the box is not running.
    pub async fn network_stats(&self) -> Result<Option<NetworkStats>> {
        Ok(self.running_now("network figures").await?.network_stats())
    }

    /// The VM of a box that is running now (never boots a stopped one).
    async fn running_now(&self, wanted: &str) -> Result<Arc<Vm>> {
        if self.status() != BoxStatus::Running {
            return Err(Error::InvalidState {
                what: format!("box {}", self.inner.id),
                reason: format!("it is not running, so it has no {wanted}; start it first"),
            });
        }
        self.running_vm().await
    }

    /// Boots the box's VM, if it is not running already.
    pub async fn start(&self) -> Result<()> {
        self.running_vm().await.map(|_| ())
    }

    /// Stops the VM: the agent syncs and powers off, and after a grace period it is killed.
    pub async fn stop(&self) -> Result<()> {
        let mut vm = self.inner.vm.lock().await;
        if self.status() == BoxStatus::Removed {
            return Err(self.removed_error("stop"));
        }
        self.stop_watching();
        if vm.is_none() && self.status() == BoxStatus::Running {
            // A detached VM another runtime started: attach, to stop it properly.
            *vm = self.attach().await;
        }
        let _ = std::fs::remove_file(self.inner.dir.join(ATTACH_FILE));
        if let Some(running) = vm.take() {
            // A VM that already died is stopped all the same.
            if let Err(e) = running.shutdown(STOP_GRACE).await {
                tracing::warn!(box_id = %self.inner.id, "shutdown was not clean: {e}");
            }
            tracing::info!(box_id = %self.inner.id, "stopped");
        }
        self.set_status(BoxStatus::Stopped, None)
    }

    /// Stops the box and starts it again (its disk, and so its state, kept).
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    fn stop_watching(&self) {
        if let Some(watcher) = self.state().exit_watcher.take() {
            watcher.abort();
        }
    }

    /// Starts a process in the box, booting it first if needed. The image's Env,
    /// WorkingDir and User are the defaults; a command with no program runs the image's
    /// Entrypoint + Cmd (its args, if any, replace Cmd).
    pub async fn exec(&self, command: ExecCommand) -> Result<Execution> {
        let vm = self.running_vm().await?;
        let command = match self.inner.image_config.get() {
            Some(config) => with_image_defaults(command, config)?,
            None => command,
        };
        vm.exec_counted(command, self.inner.exec_counters.clone()).await
    }

    /// Runs a process to completion and collects its output. Its stdin is at end of file
    /// ([`ExecCommand::no_stdin`]): a quick process costs one round trip to the agent.
    pub async fn exec_output(&self, command: ExecCommand) -> Result<ExecOutput> {
        self.exec(command.no_stdin()).await?.output().await
    }

    /// The running VM, booting it when there is none (or the last one died).
    pub(crate) async fn running_vm(&self) -> Result<Arc<Vm>> {
        let mut vm = self.inner.vm.lock().await;
        if self.status() == BoxStatus::Removed {
            return Err(self.removed_error("start"));
        }
        if let Some(running) = vm.as_ref().filter(|v| v.exit_status().is_none()) {
            return Ok(running.clone());
        }
        if vm.is_none() && self.status() == BoxStatus::Running {
            if let Some(attached) = self.attach().await {
                let boot = {
                    let mut state = self.state();
                    state.boots += 1;
                    state.boots
                };
                let watcher = watch_for_exit(Arc::downgrade(&self.inner), attached.exit_watch(), boot);
                if let Some(previous) = self.state().exit_watcher.replace(watcher) {
                    previous.abort();
                }
                *vm = Some(attached.clone());
                return Ok(attached);
            }
        }
        let started = Instant::now();
        let booted = match self.boot().await {
            Ok(booted) => Arc::new(booted),
            Err(e) => {
                self.inner.runtime.counters.boot_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(box_id = %self.inner.id, "start failed: {e}");
                return Err(e);
            }
        };
        tracing::info!(box_id = %self.inner.id, engine = %booted.engine(), boot_ms = started.elapsed().as_millis() as u64, "started");
        self.inner.runtime.counters.boots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let boot = {
            let mut state = self.state();
            state.boots += 1;
            state.last_boot_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            state.boots
        };
        if self.inner.options.detached {
            let info = serde_json::to_vec(&booted.attach_info()).expect("attach info always serializes");
            write_atomic(&self.inner.dir, &self.inner.dir.join(ATTACH_FILE), &info)?;
        }
        self.set_status(BoxStatus::Running, None)?;
        let watcher = watch_for_exit(Arc::downgrade(&self.inner), booted.exit_watch(), boot);
        if let Some(previous) = self.state().exit_watcher.replace(watcher) {
            previous.abort();
        }
        *vm = Some(booted.clone());
        Ok(booted)
    }

    async fn boot(&self) -> Result<Vm> {
        let mut options = VmOptions::new(&self.inner.dir);
        options.engine = self.inner.runtime.engine;
        options.vcpus = self.inner.options.vcpus;
        options.memory_mib = self.inner.options.memory_mib;
        options.detached = self.inner.options.detached;
        options.network = self.inner.options.network.clone();
        options.volumes = self.inner.options.volumes.clone();
        options.protected_dirs = vec![self.inner.runtime.home.clone()];
        options.root_disk = match &self.inner.options.image {
            Some(reference) => Some(self.image_disk(reference).await?),
            None => self.inner.options.root_disk.clone(),
        };
        Vm::boot(options).await
    }

    /// Attaches to the detached VM recorded in `vm.json`; `None` (and the box marked
    /// stopped, with the reason) if that VM is gone or is not the one recorded.
    async fn attach(&self) -> Option<Arc<Vm>> {
        let path = self.inner.dir.join(ATTACH_FILE);
        let info = std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<AttachInfo>(&bytes).ok());
        let result = match info {
            Some(info) => Vm::attach(info).await,
            None => Err(Error::NotFound { what: format!("{}", path.display()) }),
        };
        match result {
            Ok(vm) => {
                tracing::info!(box_id = %self.inner.id, shim_pid = vm.shim_pid(), "attached to the detached VM");
                Some(Arc::new(vm))
            }
            Err(e) => {
                tracing::warn!(box_id = %self.inner.id, "cannot attach to its detached VM: {e}");
                let _ = std::fs::remove_file(&path);
                let _ = self.set_status(BoxStatus::Stopped, Some(format!("its detached VM could not be attached: {e}")));
                None
            }
        }
    }

    /// Resolves the image (lazily, at first start), builds its base disk if needed, and
    /// gives the box its overlay.
    async fn image_disk(&self, reference: &str) -> Result<RootDisk> {
        let images = &self.inner.runtime.images;
        let image = images.ensure(reference).await?;
        let base = images.base_disk(&image).await?;
        let overlay = self.inner.dir.join("disk.qcow2");
        let size = self.inner.options.disk_size_gib.map(|gib| u64::from(gib) << 30);
        disk::overlay(&base, &overlay, size)?;
        let _ = self.inner.image_config.set(image.config);
        Ok(RootDisk { path: overlay, format: DiskFormat::Qcow2, read_only: false })
    }

    pub(crate) async fn remove(&self, force: bool) -> Result<()> {
        let mut vm = self.inner.vm.lock().await;
        if vm.is_none() && self.status() == BoxStatus::Running {
            *vm = self.attach().await; // a detached VM another runtime started
        }
        if let Some(running) = vm.as_ref().filter(|v| v.exit_status().is_none()) {
            if !force {
                return Err(Error::InvalidState {
                    what: format!("box {}", self.inner.id),
                    reason: "it is running; stop it first or remove it with force".into(),
                });
            }
            self.stop_watching();
            let _ = running.shutdown(STOP_GRACE).await;
        }
        self.stop_watching();
        *vm = None;
        self.state().status = BoxStatus::Removed;
        std::fs::remove_dir_all(&self.inner.dir).map_err(|e| Error::io(format!("remove {}", self.inner.dir.display()), e))
    }

    fn removed_error(&self, op: &str) -> Error {
        Error::InvalidState { what: format!("box {}", self.inner.id), reason: format!("it was removed; cannot {op} it") }
    }
}

/// What keeps the box in `dir` from loading, if anything does.
pub(crate) fn record_error(dir: &Path) -> Option<RecordError> {
    read_record(dir).err()
}

/// Reads and checks `dir/config.json`: its format first, then the rest, then that its id is
/// its directory's name.
fn read_record(dir: &Path) -> Result<BoxRecord, RecordError> {
    // Reasons name the file, not its path: they stay true once the directory is moved aside.
    let bytes = std::fs::read(dir.join(RECORD_FILE)).map_err(|e| RecordError::Unreadable(format!("cannot read {RECORD_FILE}: {e}")))?;
    let corrupt = |e: serde_json::Error| RecordError::Unreadable(format!("{RECORD_FILE} is corrupt ({e})"));
    let RecordFormat { format } = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if format > BOX_RECORD_FORMAT {
        return Err(RecordError::Newer(format!(
            "{RECORD_FILE} was written by a newer boxlite (format {format}, this one reads up to {BOX_RECORD_FORMAT}); upgrade boxlite to use it"
        )));
    }
    let record: BoxRecord = serde_json::from_slice(&bytes).map_err(corrupt)?;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if record.id != dir_name {
        return Err(RecordError::Unreadable(format!("{RECORD_FILE} names box {:?}, not its directory's {dir_name:?}", record.id)));
    }
    Ok(record)
}

/// Marks the box stopped (with the reason) when the VM of boot number `boot` ends on its
/// own, unless the box was stopped, removed or booted again meanwhile.
fn watch_for_exit(inner: Weak<BoxInner>, mut exit: tokio::sync::watch::Receiver<Option<ShimExit>>, boot: u64) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let Ok(exited) = exit.wait_for(Option::is_some).await.map(|e| e.clone()) else { return };
        let Some(inner) = inner.upgrade() else { return };
        let lite_box = LiteBox { inner };
        let still_current = {
            let state = lite_box.state();
            state.boots == boot && state.status == BoxStatus::Running
        };
        if still_current {
            let reason = exited.map(|e| format!("its VM ended on its own (shim {e})"));
            tracing::warn!(box_id = %lite_box.inner.id, "stopped: {}", reason.as_deref().unwrap_or("its VM ended"));
            let _ = lite_box.set_status(BoxStatus::Stopped, reason);
        }
    });
    task.abort_handle()
}

fn validate(options: &BoxOptions) -> Result<()> {
    validate_resources(options.vcpus, options.memory_mib)?;
    options.network.validate()?;
    if let Some(name) = &options.name {
        let valid =
            !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(Error::InvalidOption {
                field: "name",
                reason: format!("{name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'"),
            });
        }
    }
    if let Some(gib) = options.disk_size_gib {
        if gib == 0 || gib > MAX_DISK_GIB {
            return Err(Error::InvalidOption { field: "disk_size_gib", reason: format!("{gib} GiB asked for; use 1 to {MAX_DISK_GIB}") });
        }
        if options.image.is_none() {
            return Err(Error::InvalidOption {
                field: "disk_size_gib",
                reason: "only a box made from an image gets a disk of its own".into(),
            });
        }
    }
    if options.image.is_some() && options.root_disk.is_some() {
        return Err(Error::InvalidOption { field: "image", reason: "give a box an image or a root disk, not both".into() });
    }
    if let Some(root) = &options.root_disk {
        if !root.path.is_file() {
            return Err(Error::InvalidOption {
                field: "root_disk",
                reason: format!("{} does not exist or is not a file", root.path.display()),
            });
        }
    }
    Ok(())
}

/// Applies an image's run settings as defaults of a command.
fn with_image_defaults(mut command: ExecCommand, config: &RunConfig) -> Result<ExecCommand> {
    if command.program.is_empty() {
        let args = if command.args.is_empty() { config.cmd.clone() } else { std::mem::take(&mut command.args) };
        let mut argv: Vec<String> = config.entrypoint.iter().cloned().chain(args).collect();
        if argv.is_empty() {
            return Err(Error::InvalidOption {
                field: "exec command",
                reason: "no program given and the image has no Entrypoint or Cmd".into(),
            });
        }
        command.program = argv.remove(0);
        command.args = argv;
    }
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .filter_map(|entry| entry.split_once('=').map(|(n, v)| (n.to_string(), v.to_string())))
        .filter(|(name, _)| !command.env.iter().any(|(n, _)| n == name))
        .collect();
    env.append(&mut command.env);
    command.env = env;
    if command.working_dir.is_none() && !config.working_dir.is_empty() {
        command.working_dir = Some(config.working_dir.clone());
    }
    if command.user.is_none() && !config.user.is_empty() {
        command.user = Some(config.user.clone());
    }
    Ok(command)
}

/// Whether the shim recorded in a `vm.json` still runs (its pid is a boxlite-shim).
fn shim_alive(attach_file: &Path) -> bool {
    let Some(info) = std::fs::read(attach_file).ok().and_then(|b| serde_json::from_slice::<AttachInfo>(&b).ok()) else {
        return false;
    };
    crate::runtime::vm::shim_running(info.shim_pid)
}
