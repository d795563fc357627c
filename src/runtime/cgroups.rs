//! Removing the per-VM cgroups, `<hierarchy>/boxlite/shim-<pid>`, that a shim creates for
//! itself and its VM's processes (src/shim/jail.rs, docs/jailer.md). The shim cannot remove
//! them (it is inside them, and jailed), so the library does: when it sees a shim end,
//! however it ended, and, when a runtime opens a home, those of every shim on the host that
//! no longer runs (a shim whose library process was SIGKILLed tears its VM down unseen).
//!
//! Only directories named `shim-<pid>` right under a hierarchy's `boxlite/` are touched, and
//! only with rmdir, which the kernel refuses (EBUSY) for a cgroup that still holds processes.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a busy cgroup is retried: after a SIGKILL the VM's processes (qemu and the vsock
/// backend, in a pid namespace of their own) leave it only as they finish exiting.
pub(crate) const REMOVE_PATIENCE: Duration = Duration::from_secs(2);
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// The mounted hierarchies: v2's root, or each v1 hierarchy (and hybrid mode's v2 one).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").is_file() {
        return vec![root.to_path_buf()];
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        // cpu and cpuacct are often links to one mount (cpu,cpuacct): list it once.
        let Ok(real) = std::fs::canonicalize(entry.path()) else { continue };
        if real.starts_with(root) && real.join("cgroup.procs").is_file() && !found.contains(&real) {
            found.push(real);
        }
    }
    found
}

/// Whether `dir` is one the library may remove: `shim-<pid>` right under a `boxlite`
/// directory below /sys/fs/cgroup, with no `..` on the way.
fn is_shim_cgroup(dir: &Path) -> bool {
    let named = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| shim_pid(n).is_some());
    let parent = dir.parent().and_then(Path::file_name).is_some_and(|n| n == "boxlite");
    named && parent && dir.starts_with(CGROUP_ROOT) && !dir.components().any(|c| c == Component::ParentDir)
}

/// The pid in a `shim-<pid>` name.
fn shim_pid(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("shim-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The cgroup directories of the shim `pid`: its `boxlite/shim-<pid>` in every hierarchy,
/// plus any of that name the shim recorded elsewhere under /sys/fs/cgroup.
pub(crate) fn of_shim(pid: u32, recorded: &[PathBuf]) -> Vec<PathBuf> {
    let leaf = format!("shim-{pid}");
    let mut dirs: Vec<PathBuf> = hierarchies().into_iter().map(|h| h.join("boxlite").join(&leaf)).filter(|d| d.is_dir()).collect();
    for dir in recorded {
        if is_shim_cgroup(dir) && dir.file_name().is_some_and(|n| *n == *leaf) && !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    dirs
}

/// rmdir of `dir`, its child cgroups first (a cgroup with children cannot go). A cgroup's
/// only subdirectories are its children; its files are the kernel's and go with it.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = remove_tree(&entry.path());
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Removes the shim cgroups among `dirs` (others are ignored), retrying while one is busy,
/// for up to `patience`. Returns those left, with the last error.
pub(crate) fn remove(dirs: &[PathBuf], patience: Duration) -> Vec<(PathBuf, std::io::Error)> {
    let deadline = Instant::now() + patience;
    let mut left: Vec<PathBuf> = dirs.iter().filter(|d| is_shim_cgroup(d)).cloned().collect();
    loop {
        let failed: Vec<(PathBuf, std::io::Error)> = left.into_iter().filter_map(|dir| remove_tree(&dir).err().map(|e| (dir, e))).collect();
        let busy = failed.iter().any(|(_, e)| e.raw_os_error() == Some(libc::EBUSY));
        if !busy || Instant::now() >= deadline {
            return failed;
        }
        std::thread::sleep(RETRY_INTERVAL);
        left = failed.into_iter().map(|(dir, _)| dir).collect();
    }
}

/// Logs the cgroups `remove` left, with what to do about them.
pub(crate) fn report_left(left: &[(PathBuf, std::io::Error)]) {
    for (dir, e) in left {
        if e.raw_os_error() == Some(libc::EBUSY) {
            tracing::warn!(
                cgroup = %dir.display(),
                "cannot remove the cgroup of a shim that ended: {e}; processes of its VM still run (listed in {}/cgroup.procs); \
                 the next runtime retries, or kill them and rmdir it",
                dir.display()
            );
        } else {
            // Typically a runtime without the privileges of the one that created it.
            tracing::debug!(cgroup = %dir.display(), "cannot remove the cgroup of a shim that ended: {e}");
        }
    }
}

/// Removes the cgroups of every shim on the host that no longer runs (whatever home or
/// process started it): a live shim's are never touched, and a cgroup that still holds
/// processes stays (its rmdir fails).
pub(crate) fn remove_orphaned() {
    let mut orphaned = Vec::new();
    for hierarchy in hierarchies() {
        for entry in std::fs::read_dir(hierarchy.join("boxlite")).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(shim_pid) else { continue };
            if !crate::runtime::vm::shim_running(pid) {
                orphaned.push(entry.path());
            }
        }
    }
    if orphaned.is_empty() {
        return;
    }
    let left = remove(&orphaned, REMOVE_PATIENCE);
    let removed: Vec<String> = orphaned.iter().filter(|d| !left.iter().any(|(l, _)| l == *d)).map(|d| d.display().to_string()).collect();
    if !removed.is_empty() {
        tracing::info!("removed the cgroups of shims that no longer run: {}", removed.join(", "));
    }
    report_left(&left);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shim_directories_under_boxlite_are_ever_removed() {
        for ok in ["/sys/fs/cgroup/boxlite/shim-12", "/sys/fs/cgroup/memory/boxlite/shim-1"] {
            assert!(is_shim_cgroup(Path::new(ok)), "{ok}");
        }
        for refused in [
            "/sys/fs/cgroup/boxlite",
            "/sys/fs/cgroup/memory/boxlite/other",
            "/sys/fs/cgroup/memory/boxlite/shim-",
            "/sys/fs/cgroup/memory/boxlite/shim-12x",
            "/sys/fs/cgroup/memory/user.slice/shim-12",
            "/sys/fs/cgroup/memory/boxlite/../shim-12",
            "/sys/fs/cgroup/memory/boxlite/shim-12/../../boxlite/shim-3/..",
            "/tmp/boxlite/shim-12",
            "/sys/fs/cgroup/memory/boxlite/shim-99999999999",
        ] {
            assert!(!is_shim_cgroup(Path::new(refused)), "{refused}");
        }
    }
}
