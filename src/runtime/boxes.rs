//! `LiteBox`: one box of a runtime. Configured at create (every option checked then), running
//! after `start()` or its first exec, stopped after `stop()`.
//!
//! (Persistence of box state across runtimes, and images, come with their own issues; for
//! now a box's root is a disk image the caller passes in.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::error::{Error, Result};
use crate::runtime::exec::{ExecCommand, ExecOutput, Execution};
use crate::runtime::home::RuntimeShared;
use crate::runtime::images::oci::RunConfig;
use crate::runtime::images::{disk, normalize_reference};
use crate::runtime::spec::DiskFormat;
use crate::runtime::vm::{RootDisk, Vm, VmOptions, MIN_MEMORY_MIB};

/// How long a stopping box's guest gets to sync and power off before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Default for BoxOptions {
    fn default() -> Self {
        BoxOptions { name: None, vcpus: 1, memory_mib: 256, image: None, root_disk: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BoxStatus {
    Configured = 0,
    Running = 1,
    Stopped = 2,
    Removed = 3,
}

impl BoxStatus {
    fn from_u8(value: u8) -> BoxStatus {
        match value {
            1 => BoxStatus::Running,
            2 => BoxStatus::Stopped,
            3 => BoxStatus::Removed,
            _ => BoxStatus::Configured,
        }
    }
}

/// A box. Cheap to clone; clones are the same box. Send + Sync.
#[derive(Clone)]
pub struct LiteBox {
    inner: Arc<BoxInner>,
}

struct BoxInner {
    id: String,
    options: BoxOptions,
    dir: PathBuf,
    /// Keeps the runtime's home locked while this box lives.
    runtime: Arc<RuntimeShared>,
    status: AtomicU8,
    /// The running VM; the lock also serialises start, stop and remove.
    vm: tokio::sync::Mutex<Option<Arc<Vm>>>,
    /// The image's run settings, once the image was resolved at first start.
    image_config: std::sync::OnceLock<RunConfig>,
}

impl LiteBox {
    pub(crate) fn create(runtime: Arc<RuntimeShared>, mut options: BoxOptions) -> Result<LiteBox> {
        validate(&options)?;
        if let Some(image) = &options.image {
            options.image = Some(normalize_reference(image)?);
        }
        let id = random_id();
        let dir = runtime.boxes_dir().join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let inner = BoxInner {
            id,
            options,
            dir,
            runtime,
            status: AtomicU8::new(BoxStatus::Configured as u8),
            vm: tokio::sync::Mutex::new(None),
            image_config: std::sync::OnceLock::new(),
        };
        Ok(LiteBox { inner: Arc::new(inner) })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn name(&self) -> Option<&str> {
        self.inner.options.name.as_deref()
    }

    /// The (normalised) image reference the box runs, if it runs one.
    pub fn image(&self) -> Option<&str> {
        self.inner.options.image.as_deref()
    }

    /// The box's directory (console.log, shim.log, its sockets while it runs).
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    pub fn status(&self) -> BoxStatus {
        BoxStatus::from_u8(self.inner.status.load(Ordering::Acquire))
    }

    fn set_status(&self, status: BoxStatus) {
        self.inner.status.store(status as u8, Ordering::Release);
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
        if let Some(running) = vm.take() {
            // A VM that already died is stopped all the same.
            let _ = running.shutdown(STOP_GRACE).await;
        }
        self.set_status(BoxStatus::Stopped);
        Ok(())
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
        vm.exec(command).await
    }

    /// Runs a process to completion and collects its output.
    pub async fn exec_output(&self, command: ExecCommand) -> Result<ExecOutput> {
        self.exec(command).await?.output().await
    }

    /// The running VM, booting it when there is none (or the last one died).
    async fn running_vm(&self) -> Result<Arc<Vm>> {
        let mut vm = self.inner.vm.lock().await;
        if self.status() == BoxStatus::Removed {
            return Err(self.removed_error("start"));
        }
        if let Some(running) = vm.as_ref().filter(|v| v.exit_status().is_none()) {
            return Ok(running.clone());
        }
        let mut options = VmOptions::new(&self.inner.dir);
        options.engine = self.inner.runtime.engine;
        options.vcpus = self.inner.options.vcpus;
        options.memory_mib = self.inner.options.memory_mib;
        options.root_disk = match &self.inner.options.image {
            Some(reference) => Some(self.image_disk(reference).await?),
            None => self.inner.options.root_disk.clone(),
        };
        let booted = Arc::new(Vm::boot(options).await?);
        *vm = Some(booted.clone());
        self.set_status(BoxStatus::Running);
        Ok(booted)
    }

    /// Resolves the image (lazily, at first start), builds its base disk if needed, and
    /// gives the box its overlay.
    async fn image_disk(&self, reference: &str) -> Result<RootDisk> {
        let images = &self.inner.runtime.images;
        let image = images.ensure(reference).await?;
        let base = images.base_disk(&image).await?;
        let overlay = self.inner.dir.join("disk.qcow2");
        disk::overlay(&base, &overlay)?;
        let _ = self.inner.image_config.set(image.config);
        Ok(RootDisk { path: overlay, format: DiskFormat::Qcow2, read_only: false })
    }

    pub(crate) async fn remove(&self, force: bool) -> Result<()> {
        let mut vm = self.inner.vm.lock().await;
        if let Some(running) = vm.as_ref().filter(|v| v.exit_status().is_none()) {
            if !force {
                return Err(Error::InvalidState {
                    what: format!("box {}", self.inner.id),
                    reason: "it is running; stop it first or remove it with force".into(),
                });
            }
            let _ = running.shutdown(STOP_GRACE).await;
        }
        *vm = None;
        self.set_status(BoxStatus::Removed);
        std::fs::remove_dir_all(&self.inner.dir).map_err(|e| Error::io(format!("remove {}", self.inner.dir.display()), e))
    }

    fn removed_error(&self, op: &str) -> Error {
        Error::InvalidState { what: format!("box {}", self.inner.id), reason: format!("it was removed; cannot {op} it") }
    }
}

fn validate(options: &BoxOptions) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if options.vcpus == 0 || usize::from(options.vcpus) > cores {
        return Err(Error::InvalidOption {
            field: "vcpus",
            reason: format!("{} vCPUs asked for; this host allows 1 to {cores}", options.vcpus),
        });
    }
    let host_mib = host_memory_mib();
    if options.memory_mib < MIN_MEMORY_MIB || host_mib.is_some_and(|m| u64::from(options.memory_mib) > m) {
        return Err(Error::InvalidOption {
            field: "memory_mib",
            reason: format!(
                "{} MiB asked for; a box needs {MIN_MEMORY_MIB} MiB to {} MiB (the host's memory)",
                options.memory_mib,
                host_mib.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            ),
        });
    }
    if let Some(name) = &options.name {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(Error::InvalidOption {
                field: "name",
                reason: format!("{name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'"),
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

fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// 12 random hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes.copy_from_slice(&(nanos as u64 ^ u64::from(std::process::id()) << 32).to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
