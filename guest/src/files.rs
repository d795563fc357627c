//! The `boxlite.agent.v1.Files` service: copies into and out of the box as tar streams.
//!
//! Each copy does its file system work on a thread of its own (those calls block), joined
//! to the ttrpc handlers by a bounded channel of chunks: CopyInWrite waits for room in it,
//! CopyOutRead takes what the thread wrote. Memory per copy stays under
//! `(COPY_CHANNEL_CHUNKS + 2) * MAX_COPY_CHUNK` whatever the size of the tree.
//!
//! Paths: the host's path is resolved in the box's root with openat2(RESOLVE_IN_ROOT). A
//! copy in of a directory extracts every entry below the destination directory, its parent
//! resolved the same way *inside that directory*, and never follows an entry's own last
//! component (it is created or replaced with *at calls, O_NOFOLLOW). A copy out walks the
//! tree by descriptor (openat O_NOFOLLOW, fstatat AT_SYMLINK_NOFOLLOW): symlinks are stored
//! as symlinks, and nothing outside the tree is read.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::agent::{
    copy_error::Kind, CopyError, CopyInFinishRequest, CopyInFinishResponse, CopyInOpenRequest, CopyInOpenResponse, CopyInWriteRequest,
    CopyInWriteResponse, CopyOutOpenRequest, CopyOutOpenResponse, CopyOutReadRequest, CopyOutReadResponse, CopyReleaseRequest,
    CopyReleaseResponse,
};
use boxlite_protocol::{MAX_COPY_CHUNK, MAX_OPEN_COPIES};
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use tokio::sync::{mpsc, watch};
use ttrpc::asynchronous::TtrpcContext;

use crate::rootfs::Root;
use crate::sys;

/// Chunks buffered between a copy's thread and the ttrpc handlers.
const COPY_CHANNEL_CHUNKS: usize = 4;
/// Longest long-poll the agent honours; the host asks again after it.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Directory levels a copy out descends (each holds a descriptor while below it).
const MAX_DEPTH: usize = 128;
/// Directories whose owner, mode and mtime a copy in sets at its end (so that writing their
/// contents does not move the mtime, and a read-only mode does not block the writes); past
/// this many, a directory's are set at once.
const MAX_DEFERRED_DIRS: usize = 1 << 16;
/// Multiply-linked files a copy out remembers, to store later names as hard links.
const MAX_HARDLINKS: usize = 1 << 16;

/// What a copy's thread ends with: the entries it handled, or why it failed.
type Outcome = Result<u64, CopyError>;

pub struct FilesService {
    root: Arc<Root>,
    copies: Mutex<HashMap<String, Copy>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
enum Copy {
    In(Arc<CopyIn>),
    Out(Arc<CopyOut>),
}

struct CopyIn {
    /// The stream's way to the extracting thread; taken (closed) by CopyInFinish.
    chunks: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    outcome: watch::Receiver<Option<Outcome>>,
}

struct CopyOut {
    reader: tokio::sync::Mutex<OutReader>,
    outcome: watch::Receiver<Option<Outcome>>,
}

struct OutReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    /// The rest of a chunk larger than the host's last max_bytes.
    pending: Vec<u8>,
}

fn copy_error(kind: Kind, path: &str, message: impl Into<String>) -> CopyError {
    CopyError { kind: kind.into(), path: path.to_string(), message: message.into(), ..Default::default() }
}

fn io_error(path: &str, what: &str, e: impl Into<io::Error>) -> CopyError {
    let e: io::Error = e.into();
    let kind = if e.raw_os_error() == Some(libc::ENOENT) { Kind::NOT_FOUND } else { Kind::IO };
    copy_error(kind, path, format!("{what}: {e}"))
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn bounded_wait(wait_ms: u64) -> Duration {
    Duration::from_millis(wait_ms).min(MAX_WAIT)
}

impl FilesService {
    pub fn new(root: Arc<Root>) -> Self {
        Self { root, copies: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Copy>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, copy_id: &str) -> ttrpc::Result<Copy> {
        self.copies().get(copy_id).cloned().ok_or_else(|| status(ttrpc::Code::NOT_FOUND, format!("no copy {copy_id:?} in this box")))
    }

    fn register(&self, copy: Copy) -> Result<String, CopyError> {
        let mut copies = self.copies();
        if copies.len() >= MAX_OPEN_COPIES {
            return Err(copy_error(Kind::INVALID, "", format!("{MAX_OPEN_COPIES} copies are open already; release one first")));
        }
        let id = format!("copy-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        copies.insert(id.clone(), copy);
        Ok(id)
    }

    fn open_in(&self, req: &CopyInOpenRequest) -> Result<String, CopyError> {
        if self.copies().len() >= MAX_OPEN_COPIES {
            return Err(copy_error(Kind::INVALID, &req.path, format!("{MAX_OPEN_COPIES} copies are open already")));
        }
        let dest = in_destination(&self.root, &req.path, &req.name, req.is_dir)?;
        let (tx, rx) = mpsc::channel(COPY_CHANNEL_CHUNKS);
        let (done_tx, done_rx) = watch::channel(None);
        let shown = req.path.clone();
        std::thread::Builder::new()
            .name("copy-in".into())
            .spawn(move || {
                let mut reader = ChannelReader { chunks: rx, current: Vec::new(), offset: 0 };
                let outcome = extract(&mut reader, dest, &shown);
                if outcome.is_ok() {
                    // Whatever follows the archive's end (tar pads with zero blocks).
                    let _ = io::copy(&mut reader, &mut io::sink());
                }
                drop(reader);
                let _ = done_tx.send(Some(outcome));
            })
            .map_err(|e| io_error(&req.path, "starting the copy's thread", e))?;
        self.register(Copy::In(Arc::new(CopyIn { chunks: Mutex::new(Some(tx)), outcome: done_rx })))
    }

    fn open_out(&self, req: &CopyOutOpenRequest) -> Result<(String, bool), CopyError> {
        if self.copies().len() >= MAX_OPEN_COPIES {
            return Err(copy_error(Kind::INVALID, &req.path, format!("{MAX_OPEN_COPIES} copies are open already")));
        }
        let source = out_source(&self.root, &req.path)?;
        let is_dir = matches!(source, Source::Dir(_));
        let (tx, rx) = mpsc::channel(COPY_CHANNEL_CHUNKS);
        let (done_tx, done_rx) = watch::channel(None);
        let shown = req.path.clone();
        std::thread::Builder::new()
            .name("copy-out".into())
            .spawn(move || {
                let writer = chunk_writer(tx);
                let outcome = archive(writer, source, &shown);
                let _ = done_tx.send(Some(outcome));
            })
            .map_err(|e| io_error(&req.path, "starting the copy's thread", e))?;
        let reader = tokio::sync::Mutex::new(OutReader { chunks: rx, pending: Vec::new() });
        let id = self.register(Copy::Out(Arc::new(CopyOut { reader, outcome: done_rx })))?;
        Ok((id, is_dir))
    }
}

/// The outcome, waiting up to `wait` for it.
async fn outcome_within(outcome: &watch::Receiver<Option<Outcome>>, wait: Duration) -> Option<Outcome> {
    let mut outcome = outcome.clone();
    let waited = tokio::time::timeout(wait, outcome.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(value)) => value.clone(),
        _ => None,
    }
}

#[async_trait::async_trait]
impl boxlite_protocol::agent_ttrpc::Files for FilesService {
    async fn copy_in_open(&self, _ctx: &TtrpcContext, req: CopyInOpenRequest) -> ttrpc::Result<CopyInOpenResponse> {
        Ok(match self.open_in(&req) {
            Ok(copy_id) => CopyInOpenResponse { copy_id, ..Default::default() },
            Err(error) => {
                crate::log!("copy into {:?} refused: {}", req.path, error.message);
                CopyInOpenResponse { error: Some(error).into(), ..Default::default() }
            }
        })
    }

    async fn copy_in_write(&self, _ctx: &TtrpcContext, req: CopyInWriteRequest) -> ttrpc::Result<CopyInWriteResponse> {
        let Copy::In(copy) = self.get(&req.copy_id)? else {
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("{:?} is a copy out of the box", req.copy_id)));
        };
        if req.data.len() > MAX_COPY_CHUNK as usize {
            return Err(status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("a chunk of {} bytes is more than {MAX_COPY_CHUNK}", req.data.len()),
            ));
        }
        let sender = copy.chunks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(sender) = sender else {
            return Err(status(ttrpc::Code::FAILED_PRECONDITION, "the copy was finished already"));
        };
        if sender.send(req.data).await.is_ok() {
            return Ok(CopyInWriteResponse::default());
        }
        // The thread stopped reading: it failed (or the archive ended early), and says why.
        let error = match outcome_within(&copy.outcome, Duration::from_secs(5)).await {
            Some(Err(error)) => error,
            _ => copy_error(Kind::INVALID, "", "the extraction stopped before the end of the stream"),
        };
        Ok(CopyInWriteResponse { error: Some(error).into(), ..Default::default() })
    }

    async fn copy_in_finish(&self, _ctx: &TtrpcContext, req: CopyInFinishRequest) -> ttrpc::Result<CopyInFinishResponse> {
        let Copy::In(copy) = self.get(&req.copy_id)? else {
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("{:?} is a copy out of the box", req.copy_id)));
        };
        // End of stream: the thread reads EOF.
        copy.chunks.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(match outcome_within(&copy.outcome, bounded_wait(req.wait_ms)).await {
            None => CopyInFinishResponse::default(),
            Some(Ok(entries)) => CopyInFinishResponse { done: true, entries, ..Default::default() },
            Some(Err(error)) => CopyInFinishResponse { done: true, error: Some(error).into(), ..Default::default() },
        })
    }

    async fn copy_out_open(&self, _ctx: &TtrpcContext, req: CopyOutOpenRequest) -> ttrpc::Result<CopyOutOpenResponse> {
        Ok(match self.open_out(&req) {
            Ok((copy_id, is_dir)) => CopyOutOpenResponse { copy_id, is_dir, ..Default::default() },
            Err(error) => {
                crate::log!("copy out of {:?} refused: {}", req.path, error.message);
                CopyOutOpenResponse { error: Some(error).into(), ..Default::default() }
            }
        })
    }

    async fn copy_out_read(&self, _ctx: &TtrpcContext, req: CopyOutReadRequest) -> ttrpc::Result<CopyOutReadResponse> {
        let Copy::Out(copy) = self.get(&req.copy_id)? else {
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("{:?} is a copy into the box", req.copy_id)));
        };
        let max = (req.max_bytes.min(MAX_COPY_CHUNK) as usize).max(1);
        let mut reader = copy.reader.lock().await;
        if reader.pending.is_empty() {
            match tokio::time::timeout(bounded_wait(req.wait_ms), reader.chunks.recv()).await {
                Err(_) => return Ok(CopyOutReadResponse::default()),
                Ok(Some(chunk)) => reader.pending = chunk,
                Ok(None) => {
                    // The thread is done (it publishes its outcome right after its writer goes).
                    return Ok(match outcome_within(&copy.outcome, Duration::from_secs(5)).await {
                        Some(Ok(_)) => CopyOutReadResponse { eof: true, ..Default::default() },
                        Some(Err(error)) => CopyOutReadResponse { eof: true, error: Some(error).into(), ..Default::default() },
                        None => CopyOutReadResponse {
                            eof: true,
                            error: Some(copy_error(Kind::IO, "", "the copy's thread ended without a result")).into(),
                            ..Default::default()
                        },
                    });
                }
            }
        }
        let take = reader.pending.len().min(max);
        let rest = reader.pending.split_off(take);
        let data = std::mem::replace(&mut reader.pending, rest);
        Ok(CopyOutReadResponse { data, ..Default::default() })
    }

    async fn copy_release(&self, _ctx: &TtrpcContext, req: CopyReleaseRequest) -> ttrpc::Result<CopyReleaseResponse> {
        // Dropping the channel ends stops the thread: its next send or receive fails.
        self.copies().remove(&req.copy_id);
        Ok(CopyReleaseResponse::default())
    }
}

/// The chunks the host wrote, as a `Read` for the extracting thread.
struct ChannelReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// The archive's writer: chunks to the ttrpc side, waiting while the channel is full.
type ChunkWriter = boxlite_protocol::ChunkWriter<Box<dyn FnMut(Vec<u8>) -> io::Result<()> + Send>>;

fn chunk_writer(chunks: mpsc::Sender<Vec<u8>>) -> ChunkWriter {
    boxlite_protocol::ChunkWriter::new(Box::new(move |chunk| {
        chunks.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the host released the copy"))
    }))
}

/// Where a copy in goes.
enum Dest {
    /// A directory: the stream's "./" is this directory.
    Dir(OwnedFd),
    /// One non-directory, created (or replaced) as `name` in `parent`.
    Single { parent: OwnedFd, name: CString },
}

/// Checks a name the host gave (one path component).
fn component(name: &[u8], path: &str) -> Result<CString, CopyError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(copy_error(Kind::INVALID, path, format!("{:?} is not a file name", String::from_utf8_lossy(name))));
    }
    CString::new(name).map_err(|_| copy_error(Kind::INVALID, path, "the name contains a NUL byte"))
}

/// `path` as (parent, last component); the last component may not be `.` or `..`.
fn split_path(path: &str) -> Result<(String, CString), CopyError> {
    let trimmed = path.trim_end_matches('/');
    let (parent, last) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let parent = if parent.is_empty() { "/".to_string() } else { parent.to_string() };
    Ok((parent, component(last.as_bytes(), path)?))
}

/// Resolves the destination of a copy in (docker cp's rules): into an existing directory as
/// `name`, else as `path` itself, whose parent must exist.
fn in_destination(root: &Root, path: &str, name: &str, is_dir: bool) -> Result<Dest, CopyError> {
    if path.is_empty() || path.contains('\0') {
        return Err(copy_error(Kind::INVALID, path, "the destination path is empty or holds a NUL byte"));
    }
    let (parent, last) = match root.open_in_root(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) {
        Ok(dir) => (dir, component(name.as_bytes(), path)?),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            let (parent_path, last) = split_path(path)?;
            let parent = root
                .open_in_root(&parent_path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .map_err(|e| io_error(path, &format!("opening its parent directory {parent_path}"), e))?;
            (parent, last)
        }
        Err(e) => return Err(io_error(path, "resolving it in the box", e)),
    };
    let existing = nix::sys::stat::fstatat(Some(parent.as_raw_fd()), last.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
    let existing_dir = matches!(&existing, Ok(st) if is_kind(st, SFlag::S_IFDIR));
    if !is_dir {
        if existing_dir {
            return Err(copy_error(Kind::INVALID, path, format!("a file cannot replace the directory {:?} there", last)));
        }
        return Ok(Dest::Single { parent, name: last });
    }
    match existing {
        Ok(_) if existing_dir => {}
        Ok(_) => return Err(copy_error(Kind::INVALID, path, format!("a directory cannot replace the file {last:?} there"))),
        Err(nix::errno::Errno::ENOENT) => {
            nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), last.as_c_str(), Mode::from_bits_truncate(0o755))
                .map_err(|e| io_error(path, "creating the directory", e))?
        }
        Err(e) => return Err(io_error(path, "looking at the destination", e)),
    }
    let dir = sys::open_at(&parent, &last, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
        .map_err(|e| io_error(path, "opening the destination directory", e))?;
    Ok(Dest::Dir(dir))
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// An archive path as components inside the destination (no `.`, no `..`); `None` when it
/// climbs above it.
fn normalise(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts)
}

fn joined(parts: &[&[u8]]) -> CString {
    let bytes = if parts.is_empty() { b".".to_vec() } else { parts.join(&b'/') };
    CString::new(bytes).unwrap_or_else(|_| c".".into())
}

/// A directory's metadata, set when the copy ends.
struct Deferred {
    path: CString,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

/// Extracts the stream at `dest`. `shown` is the destination, for errors.
fn extract(reader: &mut ChannelReader, dest: Dest, shown: &str) -> Outcome {
    let mut archive = tar::Archive::new(reader);
    let bad_archive = |e: io::Error| copy_error(Kind::INVALID, shown, format!("reading the archive: {e}"));
    let entries = archive.entries().map_err(bad_archive)?;
    let mut count = 0u64;
    let mut deferred: Vec<Deferred> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(bad_archive)?;
        if matches!(entry.header().entry_type(), tar::EntryType::XGlobalHeader) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let entry_shown = format!("{shown}/{}", String::from_utf8_lossy(&raw));
        match &dest {
            Dest::Single { parent, name } => {
                if count == 1 {
                    return Err(copy_error(Kind::INVALID, shown, "the stream for a single file holds more than one entry"));
                }
                if entry.header().entry_type().is_dir() {
                    return Err(copy_error(Kind::INVALID, shown, "the stream for a single file holds a directory"));
                }
                create_entry(&mut entry, parent, name, None, &entry_shown)?;
            }
            Dest::Dir(root) => {
                let parts = normalise(&raw)
                    .ok_or_else(|| copy_error(Kind::INVALID, &entry_shown, "the entry's path climbs out of the destination"))?;
                let header = entry.header();
                let is_dir = header.entry_type().is_dir();
                let Some((last, parents)) = parts.split_last() else {
                    if is_dir {
                        defer_or_apply(root, &mut deferred, joined(&[]), header, &entry_shown)?;
                    }
                    count += 1;
                    continue;
                };
                let name = CString::new(*last).map_err(|_| copy_error(Kind::INVALID, &entry_shown, "a NUL byte in its name"))?;
                let parent = sys::openat2_in_root(root.as_fd(), &joined(parents), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .map_err(|e| io_error(&entry_shown, "opening its parent directory", e))?;
                create_entry(&mut entry, &parent, &name, Some(root), &entry_shown)?;
                if is_dir {
                    defer_or_apply(root, &mut deferred, joined(&parts), entry.header(), &entry_shown)?;
                }
            }
        }
        count += 1;
    }
    if count == 0 {
        return Err(copy_error(Kind::INVALID, shown, "the archive is empty"));
    }
    if let Dest::Dir(root) = &dest {
        // Deepest first: setting a child's times does not touch its parent's, but a
        // read-only parent would not stop a later child anyway (the agent is root).
        for dir in deferred.iter().rev() {
            apply_dir(root, dir)
                .map_err(|e| io_error(&format!("{shown}/{}", dir.path.to_string_lossy()), "setting its owner, mode and time", e))?;
        }
    }
    Ok(count)
}

fn header_metadata(header: &tar::Header, shown: &str) -> Result<(u32, u32, u32, i64), CopyError> {
    let bad = |e: io::Error| copy_error(Kind::INVALID, shown, format!("a malformed header: {e}"));
    Ok((
        header.uid().map_err(bad)? as u32,
        header.gid().map_err(bad)? as u32,
        header.mode().map_err(bad)? & 0o7777,
        header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64,
    ))
}

fn defer_or_apply(root: &OwnedFd, deferred: &mut Vec<Deferred>, path: CString, header: &tar::Header, shown: &str) -> Result<(), CopyError> {
    let (uid, gid, mode, mtime) = header_metadata(header, shown)?;
    let dir = Deferred { path, uid, gid, mode, mtime };
    if deferred.len() < MAX_DEFERRED_DIRS {
        deferred.push(dir);
        return Ok(());
    }
    apply_dir(root, &dir).map_err(|e| io_error(shown, "setting its owner, mode and time", e))
}

fn apply_dir(root: &OwnedFd, dir: &Deferred) -> io::Result<()> {
    let fd = sys::openat2_in_root(root.as_fd(), &dir.path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)?;
    nix::unistd::fchown(fd.as_raw_fd(), Some(Uid::from_raw(dir.uid)), Some(Gid::from_raw(dir.gid)))?;
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(dir.mode))?;
    let time = TimeSpec::new(dir.mtime, 0);
    nix::sys::stat::futimens(fd.as_raw_fd(), &time, &time)?;
    Ok(())
}

/// Removes a non-directory at `name` in `parent` (missing is fine); refuses a directory.
fn make_room(parent: &OwnedFd, name: &CStr, shown: &str) -> Result<(), CopyError> {
    match nix::sys::stat::fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_error(shown, "looking at what is there", e)),
        Ok(st) if is_kind(&st, SFlag::S_IFDIR) => Err(copy_error(Kind::INVALID, shown, "a directory is in the way (it is not replaced)")),
        Ok(_) => nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_error(shown, "replacing it", e)),
    }
}

/// Creates one entry as `name` in `parent`, never following `name` itself. Directory
/// metadata is left to the caller (deferred); everything else gets its owner, mode and mtime.
fn create_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &CStr,
    link_root: Option<&OwnedFd>,
    shown: &str,
) -> Result<(), CopyError> {
    use tar::EntryType as T;
    let (uid, gid, mode, mtime) = header_metadata(entry.header(), shown)?;
    let dirfd = Some(parent.as_raw_fd());
    let time = TimeSpec::new(mtime, 0);
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let kind = entry.header().entry_type();
    match kind {
        T::Directory => match nix::sys::stat::fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_kind(&st, SFlag::S_IFDIR) => Ok(()),
            _ => {
                make_room(parent, name, shown)?;
                nix::sys::stat::mkdirat(dirfd, name, Mode::from_bits_truncate(0o700)).map_err(|e| io_error(shown, "mkdir", e))
            }
        },
        T::Regular | T::Continuous => {
            make_room(parent, name, shown)?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            let file = sys::open_at(parent, name, flags, 0o600).map_err(|e| io_error(shown, "creating it", e))?;
            let mut file = std::fs::File::from(file);
            io::copy(entry, &mut file).map_err(|e| copy_error(Kind::IO, shown, format!("writing it: {e}")))?;
            nix::unistd::fchown(file.as_raw_fd(), owner.0, owner.1).map_err(|e| io_error(shown, "chown", e))?;
            // After the chown, which clears setuid and setgid.
            nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(|e| io_error(shown, "chmod", e))?;
            nix::sys::stat::futimens(file.as_raw_fd(), &time, &time).map_err(|e| io_error(shown, "setting its time", e))
        }
        T::Symlink => {
            let target = entry.link_name_bytes().ok_or_else(|| copy_error(Kind::INVALID, shown, "a symlink without a target"))?;
            let target = CString::new(target.into_owned()).map_err(|_| copy_error(Kind::INVALID, shown, "a NUL byte in its target"))?;
            make_room(parent, name, shown)?;
            nix::unistd::symlinkat(target.as_c_str(), dirfd, name).map_err(|e| io_error(shown, "symlink", e))?;
            nix::unistd::fchownat(dirfd, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| io_error(shown, "chown", e))?;
            nix::sys::stat::utimensat(dirfd, name, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
                .map_err(|e| io_error(shown, "setting its time", e))
        }
        T::Link => {
            let root = link_root.ok_or_else(|| copy_error(Kind::INVALID, shown, "a hard link in the stream of a single file"))?;
            let target = entry.link_name_bytes().ok_or_else(|| copy_error(Kind::INVALID, shown, "a hard link without a target"))?;
            let parts = normalise(&target).ok_or_else(|| copy_error(Kind::INVALID, shown, "its hard link target climbs out"))?;
            let (last, parents) =
                parts.split_last().ok_or_else(|| copy_error(Kind::INVALID, shown, "a hard link to the directory itself"))?;
            let target_dir = sys::openat2_in_root(root.as_fd(), &joined(parents), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .map_err(|e| io_error(shown, "opening its hard link target's directory", e))?;
            let target_name = CString::new(*last).map_err(|_| copy_error(Kind::INVALID, shown, "a NUL byte in its target"))?;
            make_room(parent, name, shown)?;
            nix::unistd::linkat(Some(target_dir.as_raw_fd()), target_name.as_c_str(), dirfd, name, AtFlags::empty())
                .map_err(|e| io_error(shown, "hard link", e))
        }
        T::Fifo => {
            make_room(parent, name, shown)?;
            nix::unistd::mkfifoat(dirfd, name, Mode::from_bits_truncate(0o600)).map_err(|e| io_error(shown, "mkfifo", e))?;
            nix::unistd::fchownat(dirfd, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| io_error(shown, "chown", e))?;
            nix::sys::stat::fchmodat(dirfd, name, Mode::from_bits_truncate(mode), nix::sys::stat::FchmodatFlags::NoFollowSymlink)
                .map_err(|e| io_error(shown, "chmod", e))?;
            nix::sys::stat::utimensat(dirfd, name, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
                .map_err(|e| io_error(shown, "setting its time", e))
        }
        other => {
            crate::log!("copy in: {shown}: entry type {other:?} skipped");
            Ok(())
        }
    }
}

/// What a copy out reads.
enum Source {
    Dir(OwnedFd),
    Single { parent: OwnedFd, name: CString },
}

fn out_source(root: &Root, path: &str) -> Result<Source, CopyError> {
    if path.is_empty() || path.contains('\0') {
        return Err(copy_error(Kind::INVALID, path, "the source path is empty or holds a NUL byte"));
    }
    match root.open_in_root(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) {
        Ok(dir) => return Ok(Source::Dir(dir)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {}
        Err(e) => return Err(io_error(path, "opening it in the box", e)),
    }
    let (parent_path, name) = split_path(path)?;
    let parent = root
        .open_in_root(&parent_path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .map_err(|e| io_error(path, "opening its parent directory", e))?;
    Ok(Source::Single { parent, name })
}

/// Multiply-linked files seen so far: (dev, ino) -> the archive path of the first name.
type Links = HashMap<(u64, u64), Vec<u8>>;

/// Writes the tar of `source` to `writer`; returns the entries written.
fn archive(writer: ChunkWriter, source: Source, shown: &str) -> Outcome {
    let mut builder = tar::Builder::new(writer);
    let mut count = 0u64;
    let mut links = Links::new();
    match source {
        Source::Dir(dir) => {
            let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(|e| io_error(shown, "stat", e))?;
            let mut header = header_of(&st, tar::EntryType::Directory, 0);
            builder.append_data(&mut header, ".", io::empty()).map_err(|e| write_error(shown, e))?;
            count += 1;
            let dir = nix::dir::Dir::from(dir).map_err(|e| io_error(shown, "opendir", e))?;
            walk(&mut builder, dir, b".", 0, &mut count, &mut links, shown)?;
        }
        Source::Single { parent, name } => {
            let st = nix::sys::stat::fstatat(Some(parent.as_raw_fd()), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| io_error(shown, "stat", e))?;
            append(&mut builder, &parent, &name, &st, name.as_bytes(), 0, &mut count, &mut links, shown)?;
        }
    }
    let mut writer = builder.into_inner().map_err(|e| write_error(shown, e))?;
    writer.flush().map_err(|e| write_error(shown, e))?;
    Ok(count)
}

fn write_error(shown: &str, e: io::Error) -> CopyError {
    copy_error(Kind::IO, shown, format!("writing the archive: {e}"))
}

fn header_of(st: &FileStat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(st.st_uid.into());
    header.set_gid(st.st_gid.into());
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_size(size);
    header
}

fn walk(
    builder: &mut tar::Builder<ChunkWriter>,
    mut dir: nix::dir::Dir,
    prefix: &[u8],
    depth: usize,
    count: &mut u64,
    links: &mut Links,
    shown: &str,
) -> Result<(), CopyError> {
    if depth >= MAX_DEPTH {
        return Err(copy_error(Kind::INVALID, shown, format!("the tree is more than {MAX_DEPTH} directories deep")));
    }
    // A second descriptor for the *at calls: the iterator borrows `dir`.
    let at = sys::open_at(&dir, c".", libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|e| io_error(shown, "reopening a directory", e))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| io_error(shown, "reading a directory", e))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(b'/');
        path.extend_from_slice(name.to_bytes());
        let st = match nix::sys::stat::fstatat(Some(at.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue, // removed while we walked
            Err(e) => return Err(io_error(&String::from_utf8_lossy(&path), "stat", e)),
        };
        append(builder, &at, name, &st, &path, depth, count, links, shown)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn append(
    builder: &mut tar::Builder<ChunkWriter>,
    parent: &OwnedFd,
    name: &CStr,
    st: &FileStat,
    path: &[u8],
    depth: usize,
    count: &mut u64,
    links: &mut Links,
    shown: &str,
) -> Result<(), CopyError> {
    use tar::EntryType as T;
    let path_os = Path::new(OsStr::from_bytes(path));
    let entry_shown = || format!("{shown}/{}", String::from_utf8_lossy(path));
    let failed = |what: &str, e: io::Error| io_error(&entry_shown(), what, e);
    if is_kind(st, SFlag::S_IFDIR) {
        let mut header = header_of(st, T::Directory, 0);
        builder.append_data(&mut header, path_os, io::empty()).map_err(|e| write_error(&entry_shown(), e))?;
        *count += 1;
        let child = match sys::open_at(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
            Ok(child) => child,
            Err(e) => return Err(failed("opening the directory", e)),
        };
        let child = nix::dir::Dir::from(child).map_err(|e| failed("opendir", e.into()))?;
        return walk(builder, child, path, depth + 1, count, links, shown);
    }
    if is_kind(st, SFlag::S_IFREG) {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = links.get(&key) {
                let mut header = header_of(st, T::Link, 0);
                let first = Path::new(OsStr::from_bytes(first)).to_path_buf();
                builder.append_link(&mut header, path_os, first).map_err(|e| write_error(&entry_shown(), e))?;
                *count += 1;
                return Ok(());
            }
            if links.len() < MAX_HARDLINKS {
                links.insert(key, path.to_vec());
            }
        }
        let file = sys::open_at(parent, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(|e| failed("opening the file", e))?;
        let size = st.st_size.max(0) as u64;
        let mut header = header_of(st, T::Regular, size);
        // Exactly `size` bytes, whatever the file does meanwhile: a shorter file is padded
        // with zeroes, a longer one cut, so the archive stays well formed.
        let data = std::fs::File::from(file).take(size).chain(io::repeat(0)).take(size);
        builder.append_data(&mut header, path_os, data).map_err(|e| write_error(&entry_shown(), e))?;
        *count += 1;
        return Ok(());
    }
    if is_kind(st, SFlag::S_IFLNK) {
        let target = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name).map_err(|e| failed("readlink", e.into()))?;
        let mut header = header_of(st, T::Symlink, 0);
        builder.append_link(&mut header, path_os, Path::new(&target)).map_err(|e| write_error(&entry_shown(), e))?;
        *count += 1;
        return Ok(());
    }
    if is_kind(st, SFlag::S_IFIFO) {
        let mut header = header_of(st, T::Fifo, 0);
        builder.append_data(&mut header, path_os, io::empty()).map_err(|e| write_error(&entry_shown(), e))?;
        *count += 1;
        return Ok(());
    }
    crate::log!("copy out: {} skipped (a socket or device node)", entry_shown());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside_the_destination() {
        assert_eq!(normalise(b"./a//b/./c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(normalise(b"a/../b").unwrap(), vec![&b"b"[..]]);
        assert!(normalise(b"../x").is_none());
        assert!(normalise(b"a/../../x").is_none());
        assert!(normalise(b"./").unwrap().is_empty());
        assert_eq!(joined(&[]).as_bytes(), b".");
    }

    #[test]
    fn destination_names_are_one_plain_component() {
        assert_eq!(split_path("/srv/data/").unwrap(), ("/srv".to_string(), c"data".to_owned()));
        assert_eq!(split_path("/x").unwrap(), ("/".to_string(), c"x".to_owned()));
        assert!(split_path("/srv/..").is_err());
        assert!(split_path("/").is_err());
        assert!(component(b"a/b", "p").is_err());
        assert!(component(b"", "p").is_err());
    }
}
