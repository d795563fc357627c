//! Copies into and out of a box, host side (the agent's Files service).
//!
//! Both ways the data is a tar stream in chunks of at most [`MAX_COPY_CHUNK`] bytes, one
//! chunk per call, with a bounded channel between the calls and the thread that does the
//! file system work, so host memory stays under `(COPY_CHANNEL_CHUNKS + 2) * MAX_COPY_CHUNK`
//! per copy whatever the size of the tree:
//! - in: a blocking thread builds the tar of the host path (symlinks stored, never followed)
//!   into the channel; the async side sends each chunk with CopyInWrite, which the agent
//!   answers once it has taken the chunk, so a slow guest disk slows the reading down.
//! - out: a pump pulls CopyOutRead (long polls; early "nothing yet" answers throttled as for
//!   exec output) into the channel; a blocking thread extracts from it with the image
//!   layers' path-safe extractor ([`Staging::extract`]), so no entry, symlink or hard link
//!   the box sends makes the host write or read outside the destination.
//!
//! What a copy does where (`docker cp`'s rules) is in docs/volumes.md, "Copy in and out".

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use boxlite_protocol::agent::{
    copy_error::Kind as WireKind, CopyError, CopyInFinishRequest, CopyInOpenRequest, CopyInWriteRequest, CopyOutOpenRequest,
    CopyOutReadRequest, CopyReleaseRequest,
};
use boxlite_protocol::MAX_COPY_CHUNK;
use tokio::sync::mpsc;

use crate::runtime::agent::context;
use crate::runtime::boxes::LiteBox;
use crate::runtime::error::{quoted, CopyErrorKind, Error, Result, MAX_QUOTED_MESSAGE, MAX_QUOTED_NAME};
use crate::runtime::exec::{EarlyReplies, LONG_POLL, RPC_MARGIN, RPC_TIMEOUT};
use crate::runtime::images::unpack::{ExtractOptions, Staging, UnpackReport};
use crate::runtime::vm::{Link, Vm};

/// Chunks buffered between the calls and the file system thread.
const COPY_CHANNEL_CHUNKS: usize = 2;
/// The longest copy id we accept from the guest.
const MAX_COPY_ID: usize = 64;
/// Bytes of the box's stream taken after the end of its archive (tar pads with zero
/// blocks, 10 KiB at most); more than this is a broken stream.
const MAX_TRAILER: u64 = 64 * 1024;

const OP_IN: &str = "copy into the box";
const OP_OUT: &str = "copy out of the box";

/// What a finished copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries (files, directories, symlinks, ...) in the archive.
    pub entries: u64,
    /// Bytes of tar stream that crossed into or out of the box.
    pub bytes: u64,
    /// Entries of a copy out left out, each with the reason (device nodes). A copy in logs
    /// what it leaves out on the box's console instead.
    pub warnings: Vec<String>,
}

impl LiteBox {
    /// Copies `host_src` (a file, a symlink, or a directory tree) into the box at
    /// `guest_dest`, keeping modes (setuid included), owners, mtimes, symlinks (never
    /// followed) and empty directories. As `docker cp`: when `guest_dest` is an existing
    /// directory the copy goes inside it, under the source's name; otherwise it becomes
    /// `guest_dest`, whose parent must exist. A stopped box is started first (and left
    /// running), as [`LiteBox::exec`] does.
    pub async fn copy_in(&self, host_src: &Path, guest_dest: &str) -> Result<CopyReport> {
        self.running_vm().await?.copy_in(host_src, guest_dest).await
    }

    /// Copies `guest_src` (a file, a symlink, or a directory tree; a symlink as the last
    /// component is copied as the symlink) out of the box to `host_dest`, with the
    /// path-safe extractor of image layers: nothing the box sends is written outside the
    /// destination. As `docker cp`: when `host_dest` is an existing directory the copy goes
    /// inside it, under the source's name; otherwise it becomes `host_dest`, whose parent
    /// must exist. Owners are kept when the host process runs as root; extended attributes
    /// are not copied. A stopped box is started first (and left running).
    pub async fn copy_out(&self, guest_src: &str, host_dest: &Path) -> Result<CopyReport> {
        self.running_vm().await?.copy_out(guest_src, host_dest).await
    }
}

impl Vm {
    /// See [`LiteBox::copy_in`].
    pub async fn copy_in(&self, host_src: &Path, guest_dest: &str) -> Result<CopyReport> {
        copy_in(self.link().clone(), host_src, guest_dest).await
    }

    /// See [`LiteBox::copy_out`].
    pub async fn copy_out(&self, guest_src: &str, host_dest: &Path) -> Result<CopyReport> {
        copy_out(self.link().clone(), guest_src, host_dest).await
    }
}

/// A copy out through an agent connection with no VM behind it (no shim whose exit to
/// watch). For tests that play a hostile agent; not an API.
#[doc(hidden)]
pub async fn copy_out_unsupervised(agent: crate::runtime::agent::AgentClient, guest_src: &str, host_dest: &Path) -> Result<CopyReport> {
    copy_out(Link::unsupervised(agent), guest_src, host_dest).await
}

fn copy_error(op: &'static str, path: impl AsRef<str>, kind: CopyErrorKind, cause: impl Into<String>) -> Error {
    Error::Copy { op, path: path.as_ref().to_string(), kind, cause: cause.into() }
}

fn host_error(op: &'static str, path: &Path, what: &str, e: io::Error) -> Error {
    let kind = if e.kind() == io::ErrorKind::NotFound { CopyErrorKind::NotFound } else { CopyErrorKind::Io };
    copy_error(op, path.display().to_string(), kind, format!("{what}: {e}"))
}

/// The agent's error, if it sent one (untrusted: its texts are quoted, bounded).
fn guest_error(op: &'static str, asked: &str, error: Option<&CopyError>) -> Option<Error> {
    let error = error.filter(|e| e.kind.value() != 0)?;
    let kind = match error.kind.enum_value() {
        Ok(WireKind::NOT_FOUND) => CopyErrorKind::NotFound,
        Ok(WireKind::INVALID) => CopyErrorKind::Invalid,
        _ => CopyErrorKind::Io,
    };
    let path = if error.path.is_empty() { asked } else { &error.path };
    Some(copy_error(op, format!("{} (in the box)", quoted(path, MAX_QUOTED_NAME)), kind, quoted(&error.message, MAX_QUOTED_MESSAGE)))
}

fn checked_id(id: String) -> Result<String> {
    if id.is_empty() || id.len() > MAX_COPY_ID {
        return Err(Error::GuestProtocol { what: format!("the agent answered a copy id of {} bytes", id.len()) });
    }
    Ok(id)
}

fn check_guest_path(path: &str, field: &'static str) -> Result<()> {
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return Err(Error::InvalidOption {
            field,
            reason: format!("{:?} is empty, longer than 4096 bytes or holds a NUL byte", quoted(path, MAX_QUOTED_NAME)),
        });
    }
    Ok(())
}

/// The agent's record of a copy, released when the copy ends however it ends.
struct Release {
    link: Link,
    copy_id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let (link, copy_id) = (self.link.clone(), std::mem::take(&mut self.copy_id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let request = CopyReleaseRequest { copy_id, ..Default::default() };
                let _ = link.call("CopyRelease", link.agent.files().copy_release(context(RPC_TIMEOUT), &request)).await;
            });
        }
    }
}

/// The name a copy of `path` takes inside an existing directory: its last component, the
/// real name for `.` and the like.
fn source_name(path: &Path) -> Option<String> {
    let name = match path.file_name() {
        Some(name) => name.to_os_string(),
        None => std::fs::canonicalize(path).ok()?.file_name()?.to_os_string(),
    };
    name.into_string().ok()
}

async fn copy_in(link: Link, host_src: &Path, guest_dest: &str) -> Result<CopyReport> {
    check_guest_path(guest_dest, "guest_dest")?;
    let meta = std::fs::symlink_metadata(host_src).map_err(|e| host_error(OP_IN, host_src, "reading it", e))?;
    let name = source_name(host_src).ok_or_else(|| {
        copy_error(
            OP_IN,
            host_src.display().to_string(),
            CopyErrorKind::Invalid,
            "it has no file name in UTF-8 (copy a directory below it instead)",
        )
    })?;
    let is_dir = meta.is_dir();
    let files = link.agent.files();
    let request = CopyInOpenRequest { path: guest_dest.to_string(), name: name.clone(), is_dir, ..Default::default() };
    let opened = link.call("CopyInOpen", files.copy_in_open(context(RPC_TIMEOUT), &request)).await?;
    if let Some(error) = guest_error(OP_IN, guest_dest, opened.error.as_ref()) {
        return Err(error);
    }
    let copy_id = checked_id(opened.copy_id)?;
    let _release = Release { link: link.clone(), copy_id: copy_id.clone() };

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(COPY_CHANNEL_CHUNKS);
    let src = host_src.to_path_buf();
    let builder = tokio::task::spawn_blocking(move || build_archive(&src, &name, is_dir, tx));
    let mut bytes = 0u64;
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        let request = CopyInWriteRequest { copy_id: copy_id.clone(), data: chunk, ..Default::default() };
        let written = link.call("CopyInWrite", files.copy_in_write(context(LONG_POLL + RPC_MARGIN), &request)).await?;
        if let Some(error) = guest_error(OP_IN, guest_dest, written.error.as_ref()) {
            return Err(error); // dropping `rx` stops the builder
        }
    }
    match builder.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(host_error(OP_IN, host_src, "archiving it", e)),
        Err(e) => {
            return Err(copy_error(OP_IN, host_src.display().to_string(), CopyErrorKind::Io, format!("the archiving thread failed: {e}")))
        }
    }
    let mut early = EarlyReplies::new("CopyInFinish");
    loop {
        let request = CopyInFinishRequest { copy_id: copy_id.clone(), wait_ms: LONG_POLL.as_millis() as u64, ..Default::default() };
        let asked = Instant::now();
        let finished = link.call("CopyInFinish", files.copy_in_finish(context(LONG_POLL + RPC_MARGIN), &request)).await?;
        if finished.done {
            if let Some(error) = guest_error(OP_IN, guest_dest, finished.error.as_ref()) {
                return Err(error);
            }
            return Ok(CopyReport { entries: finished.entries, bytes, warnings: Vec::new() });
        }
        early.nothing_after(asked.elapsed()).await?;
    }
}

/// A writer of chunks to a channel, waiting while it is full (run it on a blocking thread).
type ChunkSender = boxlite_protocol::ChunkWriter<Box<dyn FnMut(Vec<u8>) -> io::Result<()> + Send>>;

fn chunk_sender(chunks: mpsc::Sender<Vec<u8>>) -> ChunkSender {
    boxlite_protocol::ChunkWriter::new(Box::new(move |chunk| {
        chunks.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the copy was stopped"))
    }))
}

/// The tar of `src` in the layout of the Files service: a directory as "./" and its
/// contents, anything else as one entry called `name`. Symlinks are stored, not followed.
fn build_archive(src: &Path, name: &str, is_dir: bool, chunks: mpsc::Sender<Vec<u8>>) -> io::Result<()> {
    let mut builder = tar::Builder::new(chunk_sender(chunks));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    if is_dir {
        builder.append_dir_all(".", src)?;
    } else {
        builder.append_path_with_name(src, name)?;
    }
    builder.into_inner()?.flush()
}

/// Where a copy out lands, by docker cp's rules.
#[derive(Debug)]
struct OutTarget {
    /// The existing directory the copy is made in.
    into: PathBuf,
    /// The copy's own path (`into` itself when the box's path has no name, e.g. "/").
    target: PathBuf,
}

fn out_target(guest_src: &str, host_dest: &Path) -> Result<OutTarget> {
    match std::fs::metadata(host_dest) {
        Ok(meta) if meta.is_dir() => {
            let name = guest_src.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty() && *n != "." && *n != "..");
            let target = name.map(|n| host_dest.join(n)).unwrap_or_else(|| host_dest.to_path_buf());
            Ok(OutTarget { into: host_dest.to_path_buf(), target })
        }
        Ok(_) => {
            let into = host_dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
            Ok(OutTarget { into, target: host_dest.to_path_buf() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let into = host_dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
            if !into.is_dir() {
                return Err(copy_error(
                    OP_OUT,
                    host_dest.display().to_string(),
                    CopyErrorKind::NotFound,
                    "its parent directory does not exist",
                ));
            }
            if host_dest.file_name().is_none() {
                return Err(copy_error(OP_OUT, host_dest.display().to_string(), CopyErrorKind::Invalid, "it has no file name"));
            }
            Ok(OutTarget { into, target: host_dest.to_path_buf() })
        }
        Err(e) => Err(host_error(OP_OUT, host_dest, "reading it", e)),
    }
}

async fn copy_out(link: Link, guest_src: &str, host_dest: &Path) -> Result<CopyReport> {
    check_guest_path(guest_src, "guest_src")?;
    let OutTarget { into, target } = out_target(guest_src, host_dest)?;
    let files = link.agent.files();
    let request = CopyOutOpenRequest { path: guest_src.to_string(), ..Default::default() };
    let opened = link.call("CopyOutOpen", files.copy_out_open(context(RPC_TIMEOUT), &request)).await?;
    if let Some(error) = guest_error(OP_OUT, guest_src, opened.error.as_ref()) {
        return Err(error);
    }
    let copy_id = checked_id(opened.copy_id)?;
    let _release = Release { link: link.clone(), copy_id: copy_id.clone() };

    let (tx, rx) = mpsc::channel(COPY_CHANNEL_CHUNKS);
    let bytes = Arc::new(AtomicU64::new(0));
    let pump = tokio::spawn(pump(link.clone(), copy_id, guest_src.to_string(), tx, bytes.clone()));
    // The box's word for what it sends: whichever it is, the extraction stays inside `target`
    // (a directory) or a fresh directory of ours (anything else).
    let is_dir = opened.is_dir;
    let extracted = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader { chunks: rx, current: Vec::new(), offset: 0, failure: Arc::new(Mutex::new(None)) };
        let failure = reader.failure.clone();
        let result = if is_dir { extract_dir(&mut reader, &target) } else { extract_single(&mut reader, &into, &target) };
        let result = result.and_then(|report| reader.finish().map(|()| report));
        // The box's own error explains a broken stream better than the tar reader does.
        let failed = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        match failed {
            Some(error) => Err(error),
            None => result,
        }
    })
    .await;
    pump.abort();
    let report = match extracted {
        Ok(result) => result?,
        Err(e) => {
            return Err(copy_error(
                OP_OUT,
                host_dest.display().to_string(),
                CopyErrorKind::Io,
                format!("the extracting thread failed: {e}"),
            ))
        }
    };
    Ok(CopyReport { entries: report.entries, bytes: bytes.load(Ordering::Relaxed), warnings: report.warnings })
}

/// How a box's archive is extracted: no whiteouts (a `.wh.` name is a plain file), owners
/// only when we may set them (root), no extended attributes (a box must not hand the host
/// `security.capability` or the like).
fn copy_out_options() -> ExtractOptions {
    ExtractOptions { whiteouts: false, owners: nix::unistd::geteuid().is_root(), xattrs: false }
}

fn unsafe_archive(target: &Path, error: Error) -> Error {
    match error {
        Error::UnsafeLayer { entry, reason } => {
            copy_error(OP_OUT, target.display().to_string(), CopyErrorKind::Unsafe, format!("refusing the box's entry {entry:?}: {reason}"))
        }
        other => other,
    }
}

/// Extracts a directory's stream into `target` (created if missing; an existing directory
/// is merged into).
fn extract_dir(reader: &mut ChannelReader, target: &Path) -> Result<UnpackReport> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(copy_error(OP_OUT, target.display().to_string(), CopyErrorKind::Invalid, "a directory cannot replace this file"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir(target).map_err(|e| host_error(OP_OUT, target, "creating it", e))?;
        }
        Err(e) => return Err(host_error(OP_OUT, target, "reading it", e)),
    }
    let staging = Staging::create(target)?;
    let report = staging.extract(reader, copy_out_options()).map_err(|e| unsafe_archive(target, e))?;
    Ok(report)
}

/// Extracts a one-entry stream into a fresh directory of ours in `into`, then renames that
/// entry to `target` (replacing a file there, never a directory).
fn extract_single(reader: &mut ChannelReader, into: &Path, target: &Path) -> Result<UnpackReport> {
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
        return Err(copy_error(OP_OUT, target.display().to_string(), CopyErrorKind::Invalid, "a file cannot replace this directory"));
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = into.join(format!(".boxlite-cp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&scratch).map_err(|e| host_error(OP_OUT, &scratch, "creating a scratch directory", e))?;
    let result = (|| {
        let report = Staging::create(&scratch)?.extract(&mut *reader, copy_out_options()).map_err(|e| unsafe_archive(target, e))?;
        let names: Vec<_> = std::fs::read_dir(&scratch)
            .map_err(|e| host_error(OP_OUT, &scratch, "listing", e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| host_error(OP_OUT, &scratch, "listing", e))?;
        let [name] = names.as_slice() else {
            let cause = format!("the box sent {} entries for one file", names.len());
            return Err(copy_error(OP_OUT, target.display().to_string(), CopyErrorKind::Unsafe, cause));
        };
        std::fs::rename(scratch.join(name), target).map_err(|e| host_error(OP_OUT, target, "moving the copy in place", e))?;
        Ok(report)
    })();
    if let Err(e) = std::fs::remove_dir_all(&scratch) {
        tracing::warn!("cannot remove the scratch directory {}: {e}", scratch.display());
    }
    result
}

/// The box's stream as a `Read` for the extracting thread. A failure of the pump (the
/// box's error, a broken connection) is kept for the caller and read as an I/O error.
struct ChannelReader {
    chunks: mpsc::Receiver<Result<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
    failure: Arc<Mutex<Option<Error>>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Some(Err(error)) => {
                    let text = error.to_string();
                    *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                    return Err(io::Error::other(text));
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

impl ChannelReader {
    /// After the archive's end: reads the rest of the stream (padding), which must end
    /// soon and without an error, so that a stream the box cut short is not taken for a
    /// whole one (tar reads a clean end of file between entries as the end).
    fn finish(&mut self) -> Result<()> {
        let trailer = io::copy(&mut self.by_ref().take(MAX_TRAILER + 1), &mut io::sink());
        match trailer {
            Ok(n) if n <= MAX_TRAILER => Ok(()),
            Ok(n) => Err(Error::GuestProtocol { what: format!("the box sent more than {n} bytes after the end of its archive") }),
            Err(e) => Err(copy_error(OP_OUT, "", CopyErrorKind::Io, e.to_string())),
        }
    }
}

/// Pulls the box's stream into `tx` until its end (then `tx` closes) or an error (sent).
async fn pump(link: Link, copy_id: String, guest_src: String, tx: mpsc::Sender<Result<Vec<u8>>>, bytes: Arc<AtomicU64>) {
    let files = link.agent.files();
    let mut early = EarlyReplies::new("CopyOutRead");
    loop {
        let request = CopyOutReadRequest {
            copy_id: copy_id.clone(),
            max_bytes: MAX_COPY_CHUNK,
            wait_ms: LONG_POLL.as_millis() as u64,
            ..Default::default()
        };
        let asked = Instant::now();
        let response = match link.call("CopyOutRead", files.copy_out_read(context(LONG_POLL + RPC_MARGIN), &request)).await {
            Ok(response) => response,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if response.data.len() > MAX_COPY_CHUNK as usize {
            let what = format!("CopyOutRead answered {} bytes, more than the {MAX_COPY_CHUNK} asked for", response.data.len());
            let _ = tx.send(Err(Error::GuestProtocol { what })).await;
            return;
        }
        let nothing = response.data.is_empty();
        if !nothing {
            early.reset();
            bytes.fetch_add(response.data.len() as u64, Ordering::Relaxed);
            if tx.send(Ok(response.data)).await.is_err() {
                return; // the extraction ended
            }
        }
        if response.eof {
            if let Some(error) = guest_error(OP_OUT, &guest_src, response.error.as_ref()) {
                let _ = tx.send(Err(error)).await;
            }
            return;
        }
        if nothing {
            if let Err(e) = early.nothing_after(asked.elapsed()).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn copies_out_land_as_docker_cp_puts_them() {
        let dir = std::env::temp_dir().join(format!("boxlite-files-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("existing")).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        // Into an existing directory, under the box path's name.
        let t = out_target("/srv/data/", &dir.join("existing")).unwrap();
        assert_eq!((t.into, t.target), (dir.join("existing"), dir.join("existing/data")));
        // A new name: the copy becomes it.
        let t = out_target("/srv/data", &dir.join("new")).unwrap();
        assert_eq!((t.into, t.target), (dir.clone(), dir.join("new")));
        // An existing file is the target itself (replaced by a file; a directory is refused later).
        let t = out_target("/etc/hosts", &dir.join("file")).unwrap();
        assert_eq!(t.target, dir.join("file"));
        // The root of the box into an existing directory: merged into it.
        assert_eq!(out_target("/", &dir.join("existing")).unwrap().target, dir.join("existing"));
        // A missing parent is an error naming the path.
        let error = out_target("/x", &dir.join("no/such/dir")).unwrap_err().to_string();
        assert!(error.contains("parent directory does not exist") && error.contains("no/such/dir"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Path, type, link target, contents.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

    /// A raw tar entry: the path and link target written as they are (no sanitising).
    fn raw_entry(out: &mut Vec<u8>, path: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path);
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn reader_of(stream: Vec<u8>) -> ChannelReader {
        let (tx, rx) = mpsc::channel(stream.len().div_ceil(4096).max(1));
        for chunk in stream.chunks(4096) {
            tx.try_send(Ok(chunk.to_vec())).unwrap();
        }
        ChannelReader { chunks: rx, current: Vec::new(), offset: 0, failure: Arc::new(Mutex::new(None)) }
    }

    /// What a hostile box might send instead of an honest archive: writes through its own
    /// symlinks (to `/` and `../../..`), `..` paths and hard links out. Nothing may land
    /// outside the destination, and no host file may be linked into it.
    #[test]
    fn a_hostile_box_stream_writes_nothing_outside_the_destination() {
        use tar::EntryType as T;
        let dir = std::env::temp_dir().join(format!("boxlite-files-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("beside")).unwrap();
        std::fs::write(dir.join("beside/sentinel"), b"keep").unwrap();
        let target = dir.join("dest");
        let cases: Vec<(&str, Vec<RawEntry>)> = vec![
            (
                "symlink to /",
                vec![(b"./", T::Directory, b"", b""), (b"root", T::Symlink, b"/", b""), (b"root/pwned", T::Regular, b"", b"x")],
            ),
            ("symlink up", vec![(b"up", T::Symlink, b"../../..", b""), (b"up/beside/pwned", T::Regular, b"", b"x")]),
            ("dot-dot path", vec![(b"../beside/pwned", T::Regular, b"", b"x")]),
            ("hard link out", vec![(b"link", T::Link, b"../beside/sentinel", b"")]),
            ("hard link via symlink", vec![(b"up2", T::Symlink, b"../..", b""), (b"link2", T::Link, b"up2/beside/sentinel", b"")]),
        ];
        for (name, entries) in cases {
            let _ = std::fs::remove_dir_all(&target);
            let mut stream = Vec::new();
            for (path, kind, link, data) in entries {
                raw_entry(&mut stream, path, kind, link, data);
            }
            stream.extend_from_slice(&[0u8; 1024]);
            let outcome = extract_dir(&mut reader_of(stream), &target);
            // Either refused, or applied inside: never a malformed-header failure.
            if let Err(e) = &outcome {
                assert!(!e.to_string().contains("malformed"), "{name}: {e}");
            }
            let beside: Vec<_> = std::fs::read_dir(dir.join("beside")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(beside, vec![std::ffi::OsString::from("sentinel")], "{name}: something was written beside the destination");
            assert_eq!(std::fs::read(dir.join("beside/sentinel")).unwrap(), b"keep", "{name}");
            assert_eq!(std::fs::metadata(dir.join("beside/sentinel")).unwrap().nlink(), 1, "{name}: a host file was linked into the copy");
            assert!(!Path::new("/pwned").exists() && !dir.join("pwned").exists(), "{name}: written outside");
        }
        // Writes through the box's symlinks land inside the destination, as in the box.
        let _ = std::fs::remove_dir_all(&target);
        let mut stream = Vec::new();
        raw_entry(&mut stream, b"root", T::Symlink, b"/", b"");
        raw_entry(&mut stream, b"root/inside", T::Regular, b"", b"x");
        extract_dir(&mut reader_of(stream), &target).unwrap();
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stream_that_goes_on_after_its_archive_is_refused() {
        let (tx, rx) = mpsc::channel(4);
        let failure = Arc::new(Mutex::new(None));
        tx.try_send(Ok(vec![0u8; MAX_TRAILER as usize])).unwrap();
        tx.try_send(Ok(vec![0u8; 10])).unwrap();
        drop(tx);
        let mut reader = ChannelReader { chunks: rx, current: Vec::new(), offset: 0, failure: failure.clone() };
        assert!(reader.finish().is_err(), "64 KiB + 10 bytes after the archive's end");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(vec![0u8; 1024])).unwrap();
        drop(tx);
        let mut reader = ChannelReader { chunks: rx, current: Vec::new(), offset: 0, failure };
        reader.finish().unwrap();
    }
}
