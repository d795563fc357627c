//! Extracting untrusted tar streams into a root on the host: OCI image layers, and copies
//! out of a box (`runtime::files`). The part of boxlite that reads untrusted archives on the
//! host, so the part nobody may break; both callers go through [`Staging::extract`], so the
//! path-safety rules below live here only.
//!
//! Rules (each enforced here, each covered by tests/unpack_hostile.rs):
//! - An entry's path is normalised lexically; one that climbs above the root (`../x`,
//!   `a/../../x`) is refused. Leading `/` and `./` are dropped, as every runtime does.
//! - Parent directories are resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
//!   a symlink met on the way (`lib -> /usr/lib`, `evil -> ../../..`) is followed *inside*
//!   the root, the way the guest will see it, never into the host.
//! - The final component is never followed: it is created or replaced with `*at` calls on
//!   the parent's descriptor (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`). Symlinks are stored as
//!   they are (an absolute target is the image's business, resolved later in the guest).
//! - A hard link's target is resolved inside the root the same way, so it can only name a
//!   file of the image.
//! - Layers only ([`ExtractOptions::whiteouts`]): whiteouts (`.wh.<name>`) delete inside the
//!   root only; `.wh..wh..opq` empties the directory of what lower layers put there. A
//!   whiteout of `.` or `..` is refused. Elsewhere a `.wh.` name is a plain file.
//! - Device nodes are skipped with a warning (the guest has devtmpfs); fifos are kept.
//! - Modes (setuid included), owners and mtimes are kept, owners only where
//!   [`ExtractOptions::owners`] asks; xattrs (`SCHILY.xattr.*`) only where
//!   [`ExtractOptions::xattrs`] does. A directory's owner, mode and mtime are set once the
//!   whole archive is in (so its contents do not move its mtime, and a read-only mode does
//!   not stop them), for up to MAX_DEFERRED_DIRS directories; past that, at once.

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_MESSAGE, MAX_QUOTED_NAME};
use crate::runtime::sys;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// Symlinks followed while creating one entry's parents before it counts as a loop (as
/// the kernel's own limit).
const MAX_SYMLINK_HOPS: u32 = 40;
/// Directories whose metadata waits for the end of the archive (bounded memory).
const MAX_DEFERRED_DIRS: usize = 1 << 16;

/// What an extraction keeps besides paths, types and contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Apply OCI whiteouts (`.wh.*`): for image layers only.
    pub whiteouts: bool,
    /// Give entries the archive's owners (needs root on the host).
    pub owners: bool,
    /// Set the archive's extended attributes (`SCHILY.xattr.*`).
    pub xattrs: bool,
}

impl ExtractOptions {
    /// An OCI image layer: everything the image says, whiteouts applied.
    pub const LAYER: ExtractOptions = ExtractOptions { whiteouts: true, owners: true, xattrs: true };
}

/// A directory's metadata, set at the end of the archive.
struct DeferredDir {
    path: InRoot,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime: i64,
}

/// What applying a layer did besides the plain entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries left out, each with the reason (device nodes, unsupported types).
    pub warnings: Vec<String>,
    pub entries: u64,
}

/// One path inside the root, as normalised components (never empty, no `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InRoot(Vec<Vec<u8>>);

impl InRoot {
    /// Normalises an archive path; `None` when it climbs above the root.
    fn parse(raw: &[u8]) -> Option<InRoot> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop()?;
                }
                name => parts.push(name.to_vec()),
            }
        }
        Some(InRoot(parts))
    }

    /// The path for a message, bounded in length (the image chose it).
    fn display(&self) -> String {
        quoted(&format!("/{}", String::from_utf8_lossy(&self.0.join(&b'/'))), MAX_QUOTED_NAME)
    }

    fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        self.0.split_last().map(|(last, parent)| (parent, last.as_slice()))
    }
}

/// A staging root being assembled, held open by descriptor.
pub struct Staging {
    root: OwnedFd,
    path: PathBuf,
}

impl Staging {
    /// Opens (creating if needed) an empty directory to assemble a root in.
    pub fn create(path: &Path) -> Result<Staging> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let dir = std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Ok(Staging { root: dir.into(), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies one uncompressed layer tar, in order. An entry that breaks a rule fails the
    /// whole layer with an error naming the entry; what was applied before stays (the
    /// caller discards the staging root on error).
    pub fn apply_layer(&self, layer: impl Read) -> Result<UnpackReport> {
        self.extract(layer, ExtractOptions::LAYER)
    }

    /// Extracts one uncompressed tar stream into the root, in order, by the rules of this
    /// module. An entry that breaks a rule fails the whole archive with
    /// [`Error::UnsafeLayer`] naming the entry; what was extracted before stays.
    pub fn extract(&self, archive: impl Read, options: ExtractOptions) -> Result<UnpackReport> {
        let mut report = UnpackReport::default();
        let mut archive = tar::Archive::new(archive);
        let mut deferred: Vec<DeferredDir> = Vec::new();
        // Paths this layer created: an opaque whiteout later in the same layer keeps them.
        let mut created: HashSet<InRoot> = HashSet::new();
        let entries = archive.entries().map_err(|e| layer_error("reading the layer", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer_error("reading the layer", e))?;
            report.entries += 1;
            let raw_path = entry.path_bytes().into_owned();
            // The image chose the path: a message quotes a bounded piece of it.
            let shown = quoted(&String::from_utf8_lossy(&raw_path), MAX_QUOTED_NAME);
            let path = InRoot::parse(&raw_path).ok_or_else(|| refuse(&shown, "its path climbs above the root"))?;
            let Some((parent, name)) = path.split_last() else {
                continue; // the root itself ("./"): nothing to create
            };
            if options.whiteouts && name.starts_with(WHITEOUT_PREFIX) {
                self.whiteout(parent, name, &created, &shown)?;
                continue;
            }
            let parent_fd = self.dir(parent, true).map_err(|e| refuse(&shown, &format!("its parent directory: {e}")))?;
            if let Some(dir) = self.apply_entry(&mut entry, parent_fd.as_fd(), name, &shown, &mut report, options)? {
                if deferred.len() < MAX_DEFERRED_DIRS {
                    deferred.push(DeferredDir { path: path.clone(), ..dir });
                } else {
                    self.set_dir_metadata(&DeferredDir { path: path.clone(), ..dir })?;
                }
            }
            if options.whiteouts {
                created.insert(path);
            }
        }
        // Deepest last-made first; each is looked up again (never followed as the last
        // component: something later in the archive may have replaced it).
        for dir in deferred.iter().rev() {
            self.set_dir_metadata(dir)?;
        }
        Ok(report)
    }

    fn set_dir_metadata(&self, dir: &DeferredDir) -> Result<()> {
        let Some((parent, name)) = dir.path.split_last() else { return Ok(()) };
        let shown = dir.path.display();
        let Ok(parent) = self.dir(parent, false) else { return Ok(()) };
        let c_name = CString::new(name).map_err(|_| refuse(&shown, "its name contains a NUL byte"))?;
        if !is_dir_at(parent.as_fd(), &c_name) {
            return Ok(()); // replaced by a later entry, which has its own metadata
        }
        sys::set_metadata_at(parent.as_fd(), &c_name, false, dir.owner, dir.mode, dir.mtime)
            .map_err(|e| Error::io(format!("set owner/mode/time of {shown}"), e))
    }

    fn apply_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
        report: &mut UnpackReport,
        options: ExtractOptions,
    ) -> Result<Option<DeferredDir>> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| layer_error(shown, e))? & 0o7777;
        let uid = header.uid().map_err(|e| layer_error(shown, e))? as u32;
        let gid = header.gid().map_err(|e| layer_error(shown, e))? as u32;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let owner = options.owners.then_some((uid, gid));
        let xattrs = if options.xattrs { xattrs_of(entry).map_err(|e| layer_error(shown, e))? } else { Vec::new() };
        let c_name = CString::new(name).map_err(|_| refuse(shown, "its name contains a NUL byte"))?;
        let io_err = |what: &str, e: io::Error| Error::io(format!("{what} {shown}"), e);

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !is_dir_at(parent, &c_name) {
                    remove_at(parent, &c_name).map_err(|e| io_err("replace", e))?;
                    sys::mkdir_at(parent, &c_name, 0o700).map_err(|e| io_err("mkdir", e))?;
                }
                let dir = sys::open_at(parent, &c_name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
                    .map_err(|e| io_err("open", e))?;
                set_xattrs(&dir, &xattrs).map_err(|e| io_err("set xattrs on", e))?;
                return Ok(Some(DeferredDir { path: InRoot(Vec::new()), owner, mode, mtime }));
            }
            T::Regular | T::Continuous => {
                remove_at(parent, &c_name).map_err(|e| io_err("replace", e))?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                let file = sys::open_at(parent, &c_name, flags, 0o600).map_err(|e| io_err("create", e))?;
                let mut file = std::fs::File::from(file);
                io::copy(entry, &mut file).map_err(|e| layer_error(shown, e))?;
                set_xattrs(&file.as_fd().try_clone_to_owned().map_err(|e| io_err("dup", e))?, &xattrs)
                    .map_err(|e| io_err("set xattrs on", e))?;
            }
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse(shown, "a symlink without a target"))?;
                let target = CString::new(target.into_owned()).map_err(|_| refuse(shown, "its link target contains a NUL byte"))?;
                remove_at(parent, &c_name).map_err(|e| io_err("replace", e))?;
                sys::symlink_at(&target, parent, &c_name).map_err(|e| io_err("symlink", e))?;
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse(shown, "a hard link without a target"))?;
                let target = InRoot::parse(&target).ok_or_else(|| refuse(shown, "its hard link target climbs above the root"))?;
                let (target_parent, target_name) = target.split_last().ok_or_else(|| refuse(shown, "a hard link to the root directory"))?;
                let target_dir = self
                    .dir(target_parent, false)
                    .map_err(|e| refuse(shown, &format!("its hard link target {}: {e}", target.display())))?;
                let c_target = CString::new(target_name).map_err(|_| refuse(shown, "its link target contains a NUL byte"))?;
                remove_at(parent, &c_name).map_err(|e| io_err("replace", e))?;
                sys::link_at(target_dir.as_fd(), &c_target, parent, &c_name)
                    .map_err(|e| io_err(&format!("hard link to {} as", target.display()), e))?;
                return Ok(None); // a hard link shares the target's metadata
            }
            T::Fifo => {
                remove_at(parent, &c_name).map_err(|e| io_err("replace", e))?;
                sys::mkfifo_at(parent, &c_name, 0o600).map_err(|e| io_err("mkfifo", e))?;
            }
            T::Char | T::Block => {
                report.warnings.push(format!("{shown}: device node skipped (the box gets its devices from devtmpfs)"));
                return Ok(None);
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(None), // consumed by the reader
            other => {
                report.warnings.push(format!("{shown}: entry type {other:?} skipped (not a file, directory, link or fifo)"));
                return Ok(None);
            }
        }
        sys::set_metadata_at(parent, &c_name, kind == T::Symlink, owner, mode, mtime).map_err(|e| io_err("set owner/mode/time of", e))?;
        Ok(None)
    }

    /// Opens the directory at `parts` inside the root, creating missing ones when `create`
    /// is set. Symlinks on the way resolve as they will in the guest (`/x` is the root's
    /// `x`, `..` stops at the root) and never leave it: lookups use RESOLVE_IN_ROOT, and
    /// when directories must be created, the walk follows symlinks itself, in the root.
    fn dir(&self, parts: &[Vec<u8>], create: bool) -> io::Result<OwnedFd> {
        match sys::open_dir_in_root(self.root.as_fd(), &joined(parts)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {}
            other => return other,
        }
        // Components resolved so far: real directories only, no symlinks.
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut pending: VecDeque<Vec<u8>> = parts.iter().cloned().collect();
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let parent = sys::open_dir_in_root(self.root.as_fd(), &joined(&resolved))?;
            let name = CString::new(part.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            match sys::lstat_at(parent.as_fd(), &name) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => resolved.push(part),
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = sys::read_link_at(parent.as_fd(), &name)?;
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    for component in target.split(|&b| b == b'/').rev() {
                        pending.push_front(component.to_vec());
                    }
                }
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdir_at(parent.as_fd(), &name, 0o755)?;
                    resolved.push(part);
                }
                Err(e) => return Err(e),
            }
        }
        sys::open_dir_in_root(self.root.as_fd(), &joined(&resolved))
    }

    fn whiteout(&self, parent: &[Vec<u8>], name: &[u8], created: &HashSet<InRoot>, shown: &str) -> Result<()> {
        let Ok(dir) = self.dir(parent, false) else {
            return Ok(()); // nothing below to hide
        };
        if name == OPAQUE_WHITEOUT {
            let keep: HashSet<Vec<u8>> = created
                .iter()
                .filter(|p| p.0.len() == parent.len() + 1 && p.0[..parent.len()] == *parent)
                .map(|p| p.0[parent.len()].clone())
                .collect();
            for child in list_dir(&dir).map_err(|e| Error::io(format!("opaque whiteout {shown}"), e))? {
                if !keep.contains(&child) {
                    let c_child = CString::new(child).expect("directory entries have no NUL");
                    remove_at(dir.as_fd(), &c_child).map_err(|e| Error::io(format!("opaque whiteout {shown}"), e))?;
                }
            }
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(refuse(shown, "a whiteout of '.', '..' or nothing"));
        }
        let c_hidden = CString::new(hidden).map_err(|_| refuse(shown, "its name contains a NUL byte"))?;
        remove_at(dir.as_fd(), &c_hidden).map_err(|e| Error::io(format!("whiteout {shown}"), e))
    }
}

/// `parts` as a path relative to the root ("." for the root itself).
fn joined(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        b".".to_vec()
    } else {
        parts.join(&b'/')
    }
}

fn refuse(entry: &str, why: &str) -> Error {
    Error::UnsafeLayer { entry: entry.to_string(), reason: why.to_string() }
}

fn layer_error(what: &str, e: io::Error) -> Error {
    // tar's errors can quote the entry's path.
    let cause = quoted(&e.to_string(), MAX_QUOTED_MESSAGE);
    Error::UnsafeLayer { entry: what.to_string(), reason: format!("the archive is malformed or truncated: {cause}") }
}

fn is_dir_at(dir: BorrowedFd<'_>, name: &CString) -> bool {
    sys::lstat_at(dir, name).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Removes `name` in `dir` (a directory recursively), never following symlinks. Missing is fine.
fn remove_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<()> {
    let st = match sys::lstat_at(dir, name) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let child_dir = sys::open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        for child in list_dir(&child_dir)? {
            remove_at(child_dir.as_fd(), &CString::new(child).expect("directory entries have no NUL"))?;
        }
        sys::unlink_at(dir, name, true)
    } else {
        sys::unlink_at(dir, name, false)
    }
}

/// Names in a directory (without `.` and `..`).
fn list_dir(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().as_bytes().to_vec());
    }
    Ok(names)
}

type Xattrs = Vec<(CString, Vec<u8>)>;

fn xattrs_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Xattrs> {
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if let Ok(name) = CString::new(name) {
                    xattrs.push((name, extension.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(xattrs)
}

fn set_xattrs(fd: &OwnedFd, xattrs: &Xattrs) -> io::Result<()> {
    for (name, value) in xattrs {
        sys::set_xattr(fd.as_fd(), name, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::InRoot;

    #[test]
    fn paths_normalise_inside_the_root_or_are_refused() {
        assert_eq!(InRoot::parse(b"/etc/passwd").unwrap().display(), "/etc/passwd");
        assert_eq!(InRoot::parse(b"./a//b/./c").unwrap().display(), "/a/b/c");
        assert_eq!(InRoot::parse(b"a/../b").unwrap().display(), "/b");
        assert!(InRoot::parse(b"../x").is_none());
        assert!(InRoot::parse(b"a/../../x").is_none());
        assert!(InRoot::parse(b"/..").is_none());
        assert_eq!(InRoot::parse(b"./").unwrap().0.len(), 0);
    }
}
