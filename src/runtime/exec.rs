//! Processes in a VM, host side: start one, stream its stdout and stderr, feed its stdin,
//! signal it, wait for it.
//!
//! Flow control end to end: one pump task per output stream pulls chunks from the agent
//! (ReadOutput) and hands them to a bounded channel. A consumer that stops reading fills
//! the channel, the pump stops asking, the agent stops reading the pipe, and the process
//! blocks in write(2). Host memory per stream is at most
//! `(OUTPUT_CHANNEL_CHUNKS + 1) * MAX_OUTPUT_CHUNK`, whatever the process writes.
//!
//! Collected output ([`Execution::output`]) keeps at most [`ExecCommand::output_limit`]
//! bytes per stream: past that the process group is killed and the rest is discarded.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_protocol::agent::{
    exec_error::Kind as WireErrorKind, OutputStream as WireStream, ReadOutputRequest, ReleaseRequest, ResizeRequest, SignalRequest,
    StartRequest, WaitRequest, WaitResponse, WriteStdinRequest,
};
use boxlite_protocol::{MAX_OUTPUT_CHUNK, MAX_STDIN_CHUNK};
use tokio::sync::{mpsc, OnceCell};

use crate::runtime::agent::{context, AgentClient};
use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_MESSAGE};
use crate::runtime::vm::Link;

/// Chunks buffered per output stream between the pump and the consumer.
const OUTPUT_CHANNEL_CHUNKS: usize = 2;
/// How long one ReadOutput or Wait may wait in the agent before answering "nothing yet".
pub(crate) const LONG_POLL: Duration = Duration::from_secs(20);
/// Deadline margin on top of a long poll, for the round trip.
pub(crate) const RPC_MARGIN: Duration = Duration::from_secs(10);
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// A long poll answered "nothing yet" sooner than this is early: an honest agent says so only
/// when the poll's wait has passed.
const EARLY_REPLY: Duration = Duration::from_secs(LONG_POLL.as_secs() / 2);
/// The pause after an early reply, doubling with each one in a row up to EARLY_BACKOFF_MAX.
const EARLY_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const EARLY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Early replies in a row after which the stream or the wait fails (about 43 s of backoff).
const MAX_EARLY_REPLIES: u32 = 50;
/// How long the agent may wait for a process started with [`ExecCommand::no_stdin`] to
/// finish before it answers the start: one that ends sooner costs one round trip; one that
/// runs longer goes on through ReadOutput and Wait, having paid this much delay for its first
/// output and for the caller's control of it (a few round trips against its run time).
pub const QUICK_EXIT_WAIT: Duration = Duration::from_millis(250);
/// The default of [`ExecCommand::output_limit`]: 64 MiB per stream.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 << 20;

/// What to run. Defaults come from the box (and, once images land, the image config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// A user name, "uid" or "uid:gid" from the box's /etc/passwd; `None` is root.
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this many rows and columns (stderr then joins stdout).
    pub tty: Option<(u16, u16)>,
    /// Kill the whole process group after this long and report a timeout.
    pub timeout: Option<Duration>,
    /// The most bytes of each stream (stdout, stderr) that collected output
    /// ([`Execution::output`], `exec_output`) keeps; more than zero. A process that writes
    /// more is killed (its whole process group, SIGKILL), the rest of its output is
    /// discarded, and [`ExecOutput`] says which stream was truncated. Streams read through
    /// [`Execution::take_stdout`] are not limited (they are flow-controlled instead).
    /// Default [`DEFAULT_OUTPUT_LIMIT`].
    pub output_limit: usize,
    /// The process starts with its stdin at end of file, and the caller has no stdin to
    /// write ([`Execution::take_stdin`] is `None`). Then the agent answers the start only
    /// once the process has finished (up to [`QUICK_EXIT_WAIT`]), with its output and exit: a
    /// quick process costs one round trip, and [`LiteBox::exec`](crate::LiteBox::exec) may
    /// return only after that wait. `exec_output` always runs commands so.
    pub no_stdin: bool,
}

impl Default for ExecCommand {
    fn default() -> Self {
        ExecCommand {
            program: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            tty: None,
            timeout: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            no_stdin: false,
        }
    }
}

impl ExecCommand {
    pub fn new(program: impl Into<String>) -> Self {
        ExecCommand { program: program.into(), ..Default::default() }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn tty(mut self, rows: u16, cols: u16) -> Self {
        self.tty = Some((rows, cols));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// See [`ExecCommand::output_limit`].
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// See [`ExecCommand::no_stdin`].
    pub fn no_stdin(mut self) -> Self {
        self.no_stdin = true;
        self
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidOption { field: "exec command", reason });
        if self.program.is_empty() {
            return invalid("the program is empty (and no image Entrypoint/Cmd stands in for it)".into());
        }
        if let Some((name, _)) = self.env.iter().find(|(n, _)| n.is_empty() || n.contains('=')) {
            return invalid(format!("environment variable name {name:?} is empty or contains '='"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return invalid("a timeout must be more than zero (leave it unset for none)".into());
        }
        if self.output_limit == 0 {
            return invalid(format!("output_limit must be more than zero bytes (the default is {DEFAULT_OUTPUT_LIMIT})"));
        }
        Ok(())
    }
}

/// Why the agent would not start a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecErrorKind {
    ProgramNotFound,
    NotExecutable,
    WorkingDirNotFound,
    UserNotFound,
    InvalidArgument,
    SpawnFailed,
}

impl std::fmt::Display for ExecErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecErrorKind::ProgramNotFound => "program not found",
            ExecErrorKind::NotExecutable => "not executable",
            ExecErrorKind::WorkingDirNotFound => "working directory not found",
            ExecErrorKind::UserNotFound => "user not found",
            ExecErrorKind::InvalidArgument => "invalid argument",
            ExecErrorKind::SpawnFailed => "spawn failed",
        })
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Killed because its timeout passed.
    pub timed_out: bool,
}

impl ExecStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Everything a finished process produced, up to the command's output limit per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExecStatus,
    /// stdout passed [`ExecCommand::output_limit`]: `stdout` holds its first `output_limit`
    /// bytes, and the process was killed (then `status.signal` is `Some(9)`, unless it ended
    /// by itself first).
    pub stdout_truncated: bool,
    /// As `stdout_truncated`, for stderr.
    pub stderr_truncated: bool,
}

/// Per-VM execution counters (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecMetrics {
    pub started: u64,
    /// Executions the agent refused or that could not be asked for.
    pub failed: u64,
    /// Output bytes received (stdout + stderr).
    pub bytes_out: u64,
    /// Stdin bytes sent.
    pub bytes_in: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ExecCounters {
    started: AtomicU64,
    failed: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
}

impl ExecCounters {
    pub(crate) fn snapshot(&self) -> ExecMetrics {
        ExecMetrics {
            started: self.started.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
        }
    }
}

/// A running (or finished) process in a VM. Dropping it releases the agent's record of the
/// process; a process still running then loses its stdin and output pipes.
pub struct Execution {
    id: String,
    pid: u32,
    link: Link,
    /// The agent has dropped its record already (its Start saw everything).
    released: bool,
    stdout: Option<OutputStream>,
    stderr: Option<OutputStream>,
    stdin: Option<StdinWriter>,
    status: OnceCell<ExecStatus>,
    output_limit: usize,
}

/// One output stream of an execution: ordered chunks, then `None` at end of stream.
pub struct OutputStream {
    chunks: mpsc::Receiver<Result<Vec<u8>>>,
}

impl OutputStream {
    /// The next chunk; `None` once the stream has ended.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>>> {
        self.chunks.recv().await
    }

    /// Reads the stream to its end.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }
}

/// The stdin of an execution.
pub struct StdinWriter {
    exec_id: String,
    link: Link,
    counters: Arc<ExecCounters>,
}

impl StdinWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(MAX_STDIN_CHUNK) {
            self.send(piece, false).await?;
        }
        Ok(())
    }

    /// Closes stdin: the process reads end of file.
    pub async fn close(self) -> Result<()> {
        self.send(&[], true).await
    }

    async fn send(&self, data: &[u8], close: bool) -> Result<()> {
        let request = WriteStdinRequest { exec_id: self.exec_id.clone(), data: data.to_vec(), close, ..Default::default() };
        let execution = self.link.agent.execution();
        self.link.call("WriteStdin", execution.write_stdin(context(RPC_TIMEOUT), &request)).await?;
        self.counters.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Execution {
    /// Starts a process through an agent connection with no VM behind it: no shim whose
    /// exit to watch, nothing kept alive. For tests that play a hostile agent; not an API.
    #[doc(hidden)]
    pub async fn start_unsupervised(agent: AgentClient, command: ExecCommand) -> Result<Execution> {
        Execution::start(Link::unsupervised(agent), Arc::default(), command).await
    }

    pub(crate) async fn start(link: Link, counters: Arc<ExecCounters>, command: ExecCommand) -> Result<Execution> {
        command.validate()?;
        let (rows, cols) = command.tty.unwrap_or((0, 0));
        // Without stdin the agent may wait for the process's end before it answers.
        let lingers = command.no_stdin;
        // One byte past the limit tells `collect` that the stream overflowed.
        let linger_max_bytes = (command.output_limit.saturating_add(1)).min(MAX_OUTPUT_CHUNK as usize) as u32;
        // Named here, so that a Start given up on can be released (see `StartGuard`).
        let exec_id = format!("h{}", crate::runtime::sys::random_hex::<8>());
        let guard = StartGuard { link: Some(link.clone()), exec_id: exec_id.clone() };
        let request = StartRequest {
            exec_id: exec_id.clone(),
            program: command.program.clone(),
            args: command.args.clone(),
            env: command.env.iter().map(|(n, v)| format!("{n}={v}")).collect(),
            working_dir: command.working_dir.clone().unwrap_or_default(),
            user: command.user.clone().unwrap_or_default(),
            tty: command.tty.is_some(),
            tty_rows: rows.into(),
            tty_cols: cols.into(),
            timeout_ms: command.timeout.map(|t| t.as_millis().max(1) as u64).unwrap_or(0),
            close_stdin: lingers,
            linger_ms: if lingers { QUICK_EXIT_WAIT.as_millis() as u64 } else { 0 },
            linger_max_bytes: if lingers { linger_max_bytes } else { 0 },
            ..Default::default()
        };
        let deadline = if lingers { QUICK_EXIT_WAIT + RPC_TIMEOUT } else { RPC_TIMEOUT };
        let started = link.call("Start", link.agent.execution().start(context(deadline), &request)).await;
        let response = match started {
            Ok(response) => response,
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Some(error) = response.error.as_ref().filter(|e| e.kind.value() != 0) {
            guard.disarm(); // nothing started
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let kind = match error.kind.enum_value() {
                Ok(WireErrorKind::PROGRAM_NOT_FOUND) => ExecErrorKind::ProgramNotFound,
                Ok(WireErrorKind::NOT_EXECUTABLE) => ExecErrorKind::NotExecutable,
                Ok(WireErrorKind::WORKING_DIR_NOT_FOUND) => ExecErrorKind::WorkingDirNotFound,
                Ok(WireErrorKind::USER_NOT_FOUND) => ExecErrorKind::UserNotFound,
                Ok(WireErrorKind::INVALID_ARGUMENT) => ExecErrorKind::InvalidArgument,
                _ => ExecErrorKind::SpawnFailed,
            };
            return Err(Error::ExecRefused { program: command.program, kind, message: quoted(&error.message, MAX_QUOTED_MESSAGE) });
        }
        if response.exec_id != exec_id {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let what = format!("Start answered exec id {}, not the {exec_id} asked for", quoted(&response.exec_id, MAX_QUOTED_MESSAGE));
            return Err(Error::GuestProtocol { what });
        }
        // What a lingering Start read: an honest agent answers at most what was asked.
        let lingered = (response.stdout.len(), response.stderr.len());
        if lingered.0.max(lingered.1) > if lingers { linger_max_bytes as usize } else { 0 } {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let what = format!(
                "Start answered {} + {} bytes of output, more than the {} per stream asked for",
                lingered.0, lingered.1, request.linger_max_bytes
            );
            return Err(Error::GuestProtocol { what });
        }
        counters.started.fetch_add(1, Ordering::Relaxed);
        guard.disarm(); // from here on Execution's Drop releases it
        let id = exec_id;
        let exit = response.exit.as_ref().filter(|exit| lingers && exit.exited).map(exec_status);
        let released = lingers && exit.is_some() && response.stdout_eof && response.stderr_eof;
        let already = |data, eof| Already { data, eof: lingers && eof };
        let stdout = pump(link.clone(), counters.clone(), id.clone(), WireStream::STDOUT, already(response.stdout, response.stdout_eof));
        let stderr = pump(link.clone(), counters.clone(), id.clone(), WireStream::STDERR, already(response.stderr, response.stderr_eof));
        let stdin = (!lingers).then(|| StdinWriter { exec_id: id.clone(), link: link.clone(), counters });
        let status = OnceCell::new_with(exit);
        Ok(Execution {
            id,
            pid: response.pid,
            link,
            released,
            stdout: Some(stdout),
            stderr: Some(stderr),
            stdin,
            status,
            output_limit: command.output_limit,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The process id inside the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn take_stdout(&mut self) -> Option<OutputStream> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<OutputStream> {
        self.stderr.take()
    }

    pub fn take_stdin(&mut self) -> Option<StdinWriter> {
        self.stdin.take()
    }

    /// Waits for the process to end. May be called again; the answer is kept.
    pub async fn wait(&self) -> Result<ExecStatus> {
        self.status.get_or_try_init(|| self.wait_once()).await.copied()
    }

    async fn wait_once(&self) -> Result<ExecStatus> {
        let execution = self.link.agent.execution();
        let mut early = EarlyReplies::new("Wait");
        loop {
            let request = WaitRequest { exec_id: self.id.clone(), wait_ms: LONG_POLL.as_millis() as u64, ..Default::default() };
            let asked = Instant::now();
            let response = self.link.call("Wait", execution.wait(context(LONG_POLL + RPC_MARGIN), &request)).await?;
            if response.exited {
                return Ok(exec_status(&response));
            }
            early.nothing_after(asked.elapsed()).await?;
        }
    }

    /// Sends `signal` to the process.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.send_signal(signal, false).await
    }

    /// Kills the process and everything in its process group (SIGKILL).
    pub async fn kill(&self) -> Result<()> {
        self.send_signal(libc::SIGKILL, true).await
    }

    async fn send_signal(&self, signal: i32, process_group: bool) -> Result<()> {
        let request = SignalRequest { exec_id: self.id.clone(), signal, process_group, ..Default::default() };
        let execution = self.link.agent.execution();
        self.link.call("Signal", execution.signal(context(RPC_TIMEOUT), &request)).await.map(|_| ())
    }

    /// Changes the window size of a tty execution.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let request = ResizeRequest { exec_id: self.id.clone(), rows: rows.into(), cols: cols.into(), ..Default::default() };
        let execution = self.link.agent.execution();
        self.link.call("Resize", execution.resize(context(RPC_TIMEOUT), &request)).await.map(|_| ())
    }

    /// Closes stdin, reads both streams to their end and waits for the exit. Each stream
    /// keeps at most the command's [`ExecCommand::output_limit`] bytes: when one passes it,
    /// the process group is killed, the rest of both streams is read and discarded, and the
    /// result is still `Ok`, with the stream's truncated flag set and the status of the
    /// killed process.
    pub async fn output(mut self) -> Result<ExecOutput> {
        if let Some(stdin) = self.stdin.take() {
            stdin.close().await?;
        }
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let limit = self.output_limit;
        // A kill that fails fails the collection: without it the stream might never end.
        let (out, err) = tokio::join!(collect(stdout, limit, self.kill()), collect(stderr, limit, self.kill()));
        let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = (out?, err?);
        let status = self.wait().await?;
        Ok(ExecOutput { stdout, stderr, status, stdout_truncated, stderr_truncated })
    }
}

/// Reads a stream to its end, keeping its first `limit` bytes. The first chunk past the limit
/// runs `overflow` (which kills the process, so that the stream ends); whatever follows is
/// read and discarded. Returns the bytes kept and whether any were discarded.
async fn collect(stream: Option<OutputStream>, limit: usize, overflow: impl Future<Output = Result<()>>) -> Result<(Vec<u8>, bool)> {
    let Some(mut stream) = stream else { return Ok((Vec::new(), false)) };
    let mut kept = Vec::new();
    let mut overflow = Some(overflow);
    let mut truncated = false;
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk?;
        if truncated {
            continue;
        }
        let take = chunk.len().min(limit - kept.len());
        // Grow by doubling but never past the limit: the limit bounds the allocation too.
        let want = (kept.len() + take).max(kept.capacity() * 2).min(limit);
        if want > kept.capacity() {
            kept.reserve_exact(want - kept.len());
        }
        kept.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            truncated = true;
            if let Some(overflow) = overflow.take() {
                overflow.await?;
            }
        }
    }
    Ok((kept, truncated))
}

/// The status in a Wait answer that says the process exited.
fn exec_status(exit: &WaitResponse) -> ExecStatus {
    ExecStatus {
        code: (exit.signal == 0).then_some(exit.exit_code),
        signal: (exit.signal != 0).then_some(exit.signal),
        timed_out: exit.timed_out,
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        release_in_background(self.link.clone(), ReleaseRequest { exec_id: self.id.clone(), ..Default::default() });
    }
}

/// Sends `request` from a task of its own: a Drop cannot wait for the answer.
fn release_in_background(link: Link, request: ReleaseRequest) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = link.call("Release", link.agent.execution().release(context(RPC_TIMEOUT), &request)).await;
        });
    }
}

/// A Start in flight. Dropped before the Execution exists (the caller's timeout or task
/// cancelled the start, the RPC failed, or the answer was refused), it sends a Release with
/// `kill`: else the process would run on in the box with nobody able to reach, signal or
/// release it. The agent honours that Release even when it overtakes the Start.
struct StartGuard {
    link: Option<Link>,
    exec_id: String,
}

impl StartGuard {
    /// Nothing to release: no process started, or an Execution owns it now.
    fn disarm(mut self) {
        self.link = None;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            release_in_background(link, ReleaseRequest { exec_id: std::mem::take(&mut self.exec_id), kill: true, ..Default::default() });
        }
    }
}

/// What a lingering Start already read of one stream.
struct Already {
    data: Vec<u8>,
    /// The stream has ended: nothing to pull.
    eof: bool,
}

/// Pulls one output stream into a bounded channel until end of stream, after what Start
/// already read. If the consumer drops its end, the pump keeps draining (and discarding) so
/// that the process is not left blocked on a full pipe; Release ends that.
fn pump(link: Link, counters: Arc<ExecCounters>, exec_id: String, stream: WireStream, already: Already) -> OutputStream {
    let (tx, rx) = mpsc::channel(OUTPUT_CHANNEL_CHUNKS);
    if !already.data.is_empty() {
        counters.bytes_out.fetch_add(already.data.len() as u64, Ordering::Relaxed);
        // A fresh channel has room for one chunk.
        let _ = tx.try_send(Ok(already.data));
    }
    if already.eof {
        return OutputStream { chunks: rx }; // the sender goes: the stream ends after `already`
    }
    tokio::spawn(async move {
        let execution = link.agent.execution();
        let mut early = EarlyReplies::new("ReadOutput");
        loop {
            let request = ReadOutputRequest {
                exec_id: exec_id.clone(),
                stream: stream.into(),
                max_bytes: MAX_OUTPUT_CHUNK,
                wait_ms: LONG_POLL.as_millis() as u64,
                ..Default::default()
            };
            let asked = Instant::now();
            let response = match link.call("ReadOutput", execution.read_output(context(LONG_POLL + RPC_MARGIN), &request)).await {
                Ok(response) => response,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if response.data.len() > MAX_OUTPUT_CHUNK as usize {
                let what = format!("ReadOutput answered {} bytes, more than the {MAX_OUTPUT_CHUNK} asked for", response.data.len());
                let _ = tx.send(Err(Error::GuestProtocol { what })).await;
                return;
            }
            if response.eof {
                if !response.data.is_empty() {
                    counters.bytes_out.fetch_add(response.data.len() as u64, Ordering::Relaxed);
                    let _ = tx.send(Ok(response.data)).await;
                }
                return;
            }
            if response.data.is_empty() {
                if let Err(e) = early.nothing_after(asked.elapsed()).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                continue;
            }
            early.reset();
            counters.bytes_out.fetch_add(response.data.len() as u64, Ordering::Relaxed);
            // A closed receiver means nobody wants the output: keep draining it.
            let _ = tx.send(Ok(response.data)).await;
        }
    });
    OutputStream { chunks: rx }
}

/// Early "nothing yet" answers to one long poll, in a row. An agent that answers at once
/// with nothing would otherwise make the host ask again at once, busy-looping on the
/// runtime's shared workers: each early answer is followed by a pause (doubling, bounded),
/// and after MAX_EARLY_REPLIES of them the poll fails with `Error::GuestProtocol`.
pub(crate) struct EarlyReplies {
    rpc: &'static str,
    in_a_row: u32,
}

impl EarlyReplies {
    pub(crate) fn new(rpc: &'static str) -> EarlyReplies {
        EarlyReplies { rpc, in_a_row: 0 }
    }

    /// Data came: the agent is doing its job.
    pub(crate) fn reset(&mut self) {
        self.in_a_row = 0;
    }

    /// The poll came back with nothing after `took`: fine after (most of) the poll's wait;
    /// early, it costs a pause, and too many in a row are an error.
    pub(crate) async fn nothing_after(&mut self, took: Duration) -> Result<()> {
        if took >= EARLY_REPLY {
            self.in_a_row = 0;
            return Ok(());
        }
        self.in_a_row += 1;
        if self.in_a_row >= MAX_EARLY_REPLIES {
            return Err(Error::GuestProtocol {
                what: format!(
                    "{} answered \"nothing yet\" {} times in a row, the last after {took:?}, to long polls of {LONG_POLL:?} \
                     (an agent answers so only once the poll's wait has passed); giving up",
                    self.rpc, self.in_a_row
                ),
            });
        }
        tokio::time::sleep(early_backoff(self.in_a_row)).await;
        Ok(())
    }
}

/// The pause after the `in_a_row`-th early reply in a row (from 1).
fn early_backoff(in_a_row: u32) -> Duration {
    EARLY_BACKOFF_FIRST.saturating_mul(1 << in_a_row.saturating_sub(1).min(16)).min(EARLY_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A stream fed by a task that sends `chunks` and then ends it; the task's handle says
    /// whether every chunk was taken.
    fn stream_of(chunks: Vec<Result<Vec<u8>>>) -> (OutputStream, tokio::task::JoinHandle<usize>) {
        let (tx, rx) = mpsc::channel(OUTPUT_CHANNEL_CHUNKS);
        let feeder = tokio::spawn(async move {
            let mut sent = 0;
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        (OutputStream { chunks: rx }, feeder)
    }

    #[tokio::test]
    async fn collect_keeps_the_first_limit_bytes_overflows_once_and_drains_the_rest() {
        let chunks: Vec<Result<Vec<u8>>> = (0..10u8).map(|n| Ok(vec![n; 1000])).collect();
        let (stream, feeder) = stream_of(chunks);
        let overflows = AtomicU32::new(0);
        let overflow = async {
            overflows.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        let (kept, truncated) = collect(Some(stream), 2500, overflow).await.unwrap();
        assert_eq!(kept.len(), 2500);
        assert_eq!(&kept[..1000], &[0u8; 1000][..]);
        assert_eq!(&kept[2000..], &[2u8; 500][..]);
        assert!(truncated);
        assert!(kept.capacity() <= 2500, "the buffer grew past the limit: {}", kept.capacity());
        assert_eq!(overflows.load(Ordering::Relaxed), 1);
        assert_eq!(feeder.await.unwrap(), 10, "every chunk was read (drained), not left in the pipe");
    }

    #[tokio::test]
    async fn collect_at_exactly_the_limit_is_not_truncated() {
        let (stream, _) = stream_of(vec![Ok(vec![7; 600]), Ok(vec![8; 400])]);
        let overflows = AtomicU32::new(0);
        let overflow = async {
            overflows.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        let (kept, truncated) = collect(Some(stream), 1000, overflow).await.unwrap();
        assert_eq!((kept.len(), truncated), (1000, false));
        assert_eq!(overflows.load(Ordering::Relaxed), 0, "no kill at exactly the limit");
    }

    #[tokio::test]
    async fn collect_fails_when_the_stream_or_the_kill_fails() {
        let (stream, _) = stream_of(vec![Ok(vec![1; 10]), Err(Error::GuestProtocol { what: "broken".into() })]);
        let error = collect(Some(stream), 1000, async { Ok(()) }).await.unwrap_err();
        assert!(error.to_string().contains("broken"), "{error}");

        let (stream, _) = stream_of(vec![Ok(vec![1; 2000])]);
        let kill_failed = async { Err(Error::Agent { rpc: "Signal", cause: "gone".into() }) };
        let error = collect(Some(stream), 1000, kill_failed).await.unwrap_err();
        assert!(error.to_string().contains("Signal"), "{error}");
    }

    #[test]
    fn an_output_limit_of_zero_is_refused() {
        assert_eq!(ExecCommand::new("yes").output_limit, DEFAULT_OUTPUT_LIMIT);
        assert!(ExecCommand::new("yes").validate().is_ok());
        let error = ExecCommand::new("yes").output_limit(0).validate().unwrap_err().to_string();
        assert!(error.contains("output_limit must be more than zero"), "{error}");
    }
}
