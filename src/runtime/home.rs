//! `BoxliteRuntime`: boxes under one home directory (`~/.boxlite`, `BOXLITE_HOME`), held by
//! one runtime at a time (`boxlite.lock`, flock).
//!
//! Ownership: the runtime owns its table of boxes; each box holds the runtime's shared part
//! (home, lock, engine), never the table, so there is no cycle, and a box handle keeps the
//! home locked after the runtime handle is gone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::runtime::boxes::{record_error, BoxOptions, BoxStatus, LiteBox, RecordError};
use crate::runtime::engine::EngineChoice;
use crate::runtime::error::{Error, Result};
use crate::runtime::images::pull::RegistryOptions;
use crate::runtime::images::ImageManager;

pub const HOME_ENV: &str = "BOXLITE_HOME";

#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The home directory; `None` means `$BOXLITE_HOME`, else `~/.boxlite`.
    pub home: Option<PathBuf>,
    pub engine: EngineChoice,
    /// Insecure (plain-HTTP) registries and credentials for pulls.
    pub registries: RegistryOptions,
    /// Write the process's boxlite logs to `<home>/logs/boxlite.log` (daily files). Off by
    /// default: a library installs no logger the application did not ask for
    /// (`runtime::logging`).
    pub log_to_home: bool,
}

/// What every box of a runtime shares.
#[derive(Debug)]
pub(crate) struct RuntimeShared {
    pub home: PathBuf,
    pub engine: EngineChoice,
    pub images: ImageManager,
    pub counters: RuntimeCounters,
    /// Held (flock) for as long as anything of this runtime lives.
    _lock: File,
}

/// Runtime-wide counters.
#[derive(Debug, Default)]
pub(crate) struct RuntimeCounters {
    pub boxes_created: AtomicU64,
    pub boots: AtomicU64,
    pub boot_failures: AtomicU64,
}

/// Runtime figures (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeMetrics {
    pub boxes_created: u64,
    pub boxes_running: u64,
    pub boots: u64,
    pub boot_failures: u64,
    /// Executions started in the boxes this runtime holds.
    pub executions: u64,
}

impl RuntimeShared {
    pub fn boxes_dir(&self) -> PathBuf {
        self.home.join("boxes")
    }
}

/// A directory under `boxes/` that did not load as a box. Nothing in it was deleted: inspect
/// it, then repair its `config.json` and move it back to `boxes/<id>`, or delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBox {
    /// The box's id: its directory's name before it was moved aside.
    pub id: String,
    /// Where the directory is now: `boxes/.invalid-<id>` (a corrupt, unreadable or missing
    /// record, moved aside), or still `boxes/<id>` (a newer boxlite's record, left for it).
    pub dir: PathBuf,
    /// Why it did not load.
    pub reason: String,
}

/// The name prefix of box directories moved aside (their record could not be loaded).
const INVALID_PREFIX: &str = ".invalid-";
/// In a directory moved aside: its id and why (`id: ...` and `reason: ...` lines).
const INVALID_REASON_FILE: &str = "invalid-reason.txt";
/// The most of `invalid-reason.txt` read back; what boxlite writes there is one line or two.
const MAX_REASON_BYTES: u64 = 64 * 1024;

/// A boxlite runtime. Cheap to clone; all clones are the same runtime.
#[derive(Clone)]
pub struct BoxliteRuntime {
    shared: Arc<RuntimeShared>,
    boxes: Arc<RwLock<HashMap<String, LiteBox>>>,
}

impl BoxliteRuntime {
    /// Opens (creating if needed) the home directory and locks it. A second runtime on the
    /// same home fails at once with the holder's pid. Removes the cgroups of boxlite shims on
    /// this host that no longer run (waiting up to 2 s for VM processes still exiting).
    pub fn new(options: RuntimeOptions) -> Result<BoxliteRuntime> {
        let home = match options.home {
            Some(home) => home,
            None => default_home()?,
        };
        if home.as_os_str().is_empty() {
            return Err(Error::InvalidOption { field: "home", reason: "the home directory path is empty".into() });
        }
        let home = std::path::absolute(&home).map_err(|e| Error::io(format!("resolve {}", home.display()), e))?;
        for dir in [home.clone(), home.join("boxes"), home.join("logs")] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let lock = lock_home(&home)?;
        if options.log_to_home {
            crate::runtime::logging::log_to_dir(&home.join("logs"))?;
        }
        let images = ImageManager::open(&home.join("images"), options.registries)?;
        let shared = Arc::new(RuntimeShared { home, engine: options.engine, images, counters: RuntimeCounters::default(), _lock: lock });
        let boxes = load_boxes(&shared)?;
        // Those of shims that ended unseen (a SIGKILLed process that ran boxes).
        crate::runtime::cgroups::remove_orphaned();
        Ok(BoxliteRuntime { shared, boxes: Arc::new(RwLock::new(boxes)) })
    }

    pub fn home(&self) -> &Path {
        &self.shared.home
    }

    /// The runtime's image cache.
    pub fn images(&self) -> &ImageManager {
        &self.shared.images
    }

    /// Removes an image from the cache: refused while a box uses it, unless `force`.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        let reference = crate::runtime::images::normalize_reference(reference)?;
        let users: Vec<String> = self
            .list_boxes()
            .into_iter()
            .filter(|b| b.image().is_some_and(|i| i == reference))
            .map(|b| b.name().unwrap_or(b.id()).to_string())
            .collect();
        if !users.is_empty() && !force {
            return Err(Error::InvalidState {
                what: format!("image {reference}"),
                reason: format!("boxes use it ({}); remove them first or force", users.join(", ")),
            });
        }
        self.shared.images.untag(&reference)
    }

    /// Creates a box (validating every option now, not at boot). It starts on `start()` or
    /// on its first exec.
    pub fn create_box(&self, options: BoxOptions) -> Result<LiteBox> {
        let mut boxes = self.boxes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = &options.name {
            if boxes.values().any(|b| b.name() == Some(name.as_str())) {
                return Err(Error::InvalidOption { field: "name", reason: format!("a box named {name:?} already exists") });
            }
        }
        let lite_box = LiteBox::create(self.shared.clone(), options)?;
        self.shared.counters.boxes_created.fetch_add(1, Ordering::Relaxed);
        boxes.insert(lite_box.id().to_string(), lite_box.clone());
        Ok(lite_box)
    }

    /// A box by id or name.
    pub fn get_box(&self, id_or_name: &str) -> Option<LiteBox> {
        let boxes = self.boxes.read().unwrap_or_else(|e| e.into_inner());
        boxes.get(id_or_name).or_else(|| boxes.values().find(|b| b.name() == Some(id_or_name))).cloned()
    }

    pub fn list_boxes(&self) -> Vec<LiteBox> {
        self.boxes.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn metrics(&self) -> RuntimeMetrics {
        let boxes = self.list_boxes();
        RuntimeMetrics {
            boxes_created: self.shared.counters.boxes_created.load(Ordering::Relaxed),
            boxes_running: boxes.iter().filter(|b| b.status() == BoxStatus::Running).count() as u64,
            boots: self.shared.counters.boots.load(Ordering::Relaxed),
            boot_failures: self.shared.counters.boot_failures.load(Ordering::Relaxed),
            executions: boxes.iter().map(|b| b.metrics().exec.started).sum(),
        }
    }

    /// The directories under `boxes/` that are not boxes this runtime loaded: those moved
    /// aside because their record was corrupt, unreadable or missing (by this runtime or an
    /// earlier one), and those whose record a newer boxlite wrote (left in place). Sorted by
    /// directory.
    pub fn invalid_boxes(&self) -> Vec<InvalidBox> {
        // Held while scanning: a box being created has its directory before its record.
        let boxes = self.boxes.read().unwrap_or_else(|e| e.into_inner());
        let dir = self.shared.boxes_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut invalid = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            if let Some(id) = name.strip_prefix(INVALID_PREFIX) {
                invalid.push(read_set_aside(path, id));
            } else if !name.starts_with('.') && !boxes.contains_key(&name) {
                if let Some(e) = record_error(&path) {
                    invalid.push(InvalidBox { id: name, dir: path, reason: e.reason().to_string() });
                }
            }
        }
        invalid.sort_by(|a, b| a.dir.cmp(&b.dir));
        invalid
    }

    /// Removes a box: refuses a running one unless `force` (which stops it first), then
    /// deletes its directory.
    pub async fn remove_box(&self, id_or_name: &str, force: bool) -> Result<()> {
        let lite_box = self.get_box(id_or_name).ok_or_else(|| Error::NotFound { what: format!("box {id_or_name:?}") })?;
        lite_box.remove(force).await?;
        self.boxes.write().unwrap_or_else(|e| e.into_inner()).remove(lite_box.id());
        Ok(())
    }
}

/// The boxes recorded under `boxes/`. A directory whose record cannot be loaded is moved
/// aside to `boxes/.invalid-<id>`, whole (its disk is the user's data), and reported by
/// `invalid_boxes`; one of a newer boxlite is left as it is. Only an empty directory, what a
/// crash at the very start of create leaves, is removed.
fn load_boxes(shared: &Arc<RuntimeShared>) -> Result<HashMap<String, LiteBox>> {
    let dir = shared.boxes_dir();
    let mut boxes = HashMap::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Dot directories are not boxes: `.invalid-*` are those moved aside.
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        match LiteBox::load(shared.clone(), &path) {
            Ok(lite_box) => {
                boxes.insert(lite_box.id().to_string(), lite_box);
            }
            Err(RecordError::Newer(reason)) => {
                tracing::warn!(dir = %path.display(), "leaving a box of a newer boxlite as it is: {reason}");
            }
            Err(RecordError::Unreadable(reason)) => {
                let empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
                // remove_dir, not remove_dir_all: it refuses if anything appeared meanwhile.
                if empty && std::fs::remove_dir(&path).is_ok() {
                    tracing::info!(dir = %path.display(), "removed an empty box directory (a crash at the start of create)");
                    continue;
                }
                set_aside(&dir, &path, &name, &reason);
            }
        }
    }
    Ok(boxes)
}

/// Moves a box directory whose record cannot be loaded to `boxes/.invalid-<id>` (or
/// `.invalid-<id>-<n>` if that is taken) and writes why into it. If it cannot be moved it
/// stays, and `invalid_boxes` still reports it.
fn set_aside(boxes_dir: &Path, path: &Path, id: &str, reason: &str) {
    let mut aside = boxes_dir.join(format!("{INVALID_PREFIX}{id}"));
    let mut n = 1;
    // symlink_metadata: a dangling link at that name is taken too.
    while std::fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        aside = boxes_dir.join(format!("{INVALID_PREFIX}{id}-{n}"));
    }
    if let Err(e) = std::fs::rename(path, &aside) {
        tracing::warn!(dir = %path.display(), "a box record cannot be loaded ({reason}) and the directory cannot be moved aside to {}: {e}; it stays as it is", aside.display());
        return;
    }
    let note = format!("id: {id}\nreason: {}\n", reason.replace('\n', " "));
    if let Err(e) = std::fs::write(aside.join(INVALID_REASON_FILE), note) {
        tracing::warn!(dir = %aside.display(), "cannot write {INVALID_REASON_FILE}: {e}");
    }
    tracing::warn!(
        dir = %aside.display(),
        "moved box {id} aside to {}: {reason}; nothing in it was deleted: repair its {} and move it back to {}, or delete it",
        aside.display(),
        crate::runtime::boxes::RECORD_FILE,
        path.display()
    );
}

/// A directory moved aside, as `invalid-reason.txt` describes it (`name_id`: the id its name gives).
fn read_set_aside(dir: PathBuf, name_id: &str) -> InvalidBox {
    let mut note = String::new();
    if let Ok(file) = File::open(dir.join(INVALID_REASON_FILE)) {
        let _ = file.take(MAX_REASON_BYTES).read_to_string(&mut note);
    }
    let field = |key: &str| note.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
    InvalidBox {
        id: field("id: ").unwrap_or_else(|| name_id.to_string()),
        reason: field("reason: ").unwrap_or_else(|| format!("moved aside by boxlite; its {INVALID_REASON_FILE} is missing or unreadable")),
        dir,
    }
}

fn default_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(home.into());
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".boxlite")),
        None => Err(Error::InvalidOption { field: "home", reason: format!("neither {HOME_ENV} nor HOME is set; pass a home directory") }),
    }
}

/// How long a runtime waits for a home whose lock is held before calling it taken.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Takes `boxlite.lock` (exclusive, without blocking for long) and writes our pid into it.
fn lock_home(home: &Path) -> Result<File> {
    let path = home.join("boxlite.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    // A lock just released can still be held for an instant by a child another thread of
    // this process forked (it shares the descriptor until its exec closes it): retry briefly.
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    while !crate::runtime::sys::try_lock_exclusive(file.as_fd()).map_err(|e| Error::io(format!("lock {}", path.display()), e))? {
        if std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(Error::HomeLocked { home: home.to_path_buf(), holder_pid: holder.trim().parse().ok() });
    }
    let pid = format!("{}\n", std::process::id());
    let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(pid.as_bytes()));
    written.map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(file)
}
