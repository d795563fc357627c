//! The `boxlite.agent.v1.Execution` service: processes in the box's root.
//!
//! Output is pulled: a ReadOutput reads the process's pipe (or pty) once, plus whatever is
//! immediately available up to the host's limit, and nothing is buffered in between. A host
//! that stops reading leaves the pipe full and the process blocked in write(2): memory stays
//! bounded on both sides whatever the process writes.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::agent::{
    exec_error::Kind as ErrorKind, ExecError, OutputStream, ReadOutputRequest, ReadOutputResponse, ReleaseRequest, ReleaseResponse,
    ResizeRequest, ResizeResponse, SignalRequest, SignalResponse, StartRequest, StartResponse, WaitRequest, WaitResponse,
    WriteStdinRequest, WriteStdinResponse,
};
use boxlite_protocol::{valid_exec_id, MAX_OUTPUT_CHUNK, MAX_STDIN_CHUNK};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use ttrpc::asynchronous::TtrpcContext;

use crate::reaper::{Exit, Reaper};
use crate::rootfs::{self, Root};
use crate::sys::{self, ChildSetup};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest long-poll the agent honours; the host asks again after it.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Bytes read from a pipe per read(2) call while filling a response.
const READ_BUFFER: usize = 64 * 1024;
/// The capacity of a process's stdout and stderr pipes: one ReadOutput's worth
/// (`MAX_OUTPUT_CHUNK`), and the kernel's default cap for unprivileged pipes (fs.pipe-max-size).
const OUTPUT_PIPE_SIZE: i32 = 1024 * 1024;
/// How many early kill-Releases (see `Registry`) the agent remembers; the oldest go first.
const MAX_RELEASED_EARLY: usize = 64;

pub struct ExecService {
    root: Arc<Root>,
    reaper: Reaper,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
}

/// The executions the host can name, and the ids of those it gave up on before their Start
/// had registered them: a host that cancels a Start sends Release with `kill`, and that
/// Release may overtake the Start it cancels.
#[derive(Default)]
struct Registry {
    execs: HashMap<String, Arc<Exec>>,
    released_early: VecDeque<String>,
}

/// Why a started process was not registered.
#[derive(Debug, PartialEq)]
enum NotAdmitted {
    IdInUse,
    ReleasedEarly,
}

impl Registry {
    /// Registers a started process, unless its id is taken or was released before this.
    fn admit(&mut self, exec_id: &str, exec: Arc<Exec>) -> Result<(), NotAdmitted> {
        if let Some(at) = self.released_early.iter().position(|id| id == exec_id) {
            self.released_early.remove(at);
            return Err(NotAdmitted::ReleasedEarly);
        }
        if self.execs.contains_key(exec_id) {
            return Err(NotAdmitted::IdInUse);
        }
        self.execs.insert(exec_id.to_owned(), exec);
        Ok(())
    }

    /// Drops the record of `exec_id` and returns it; a kill-Release of an id not registered
    /// (yet) is remembered for `admit`.
    fn release(&mut self, exec_id: &str, kill: bool) -> Option<Arc<Exec>> {
        let released = self.execs.remove(exec_id);
        if released.is_none() && kill {
            if self.released_early.len() == MAX_RELEASED_EARLY {
                self.released_early.pop_front();
            }
            self.released_early.push_back(exec_id.to_owned());
        }
        released
    }
}

/// How a process ended, as the host sees it.
#[derive(Debug, Clone, Copy)]
struct Ended {
    exit: Exit,
    timed_out: bool,
}

struct Exec {
    pid: u32,
    stdout: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
    stderr: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
    stdin: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
    /// The pty master, for window size changes (tty mode only).
    pty: Option<OwnedFd>,
    ended: watch::Receiver<Option<Ended>>,
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn exec_error(kind: ErrorKind, message: impl Into<String>) -> ExecError {
    ExecError { kind: kind.into(), message: message.into(), ..Default::default() }
}

fn id_in_use(exec_id: &str) -> ExecError {
    exec_error(ErrorKind::INVALID_ARGUMENT, format!("exec id {exec_id:?} is in use in this box"))
}

impl ExecService {
    pub fn new(root: Arc<Root>, reaper: Reaper) -> Self {
        Self { root, reaper, registry: Mutex::default(), next_id: AtomicU64::new(1) }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, exec_id: &str) -> ttrpc::Result<Arc<Exec>> {
        let registry = self.registry();
        registry.execs.get(exec_id).cloned().ok_or_else(|| status(ttrpc::Code::NOT_FOUND, format!("no execution {exec_id:?} in this box")))
    }

    fn start_process(&self, req: &StartRequest) -> Result<(String, Arc<Exec>), ExecError> {
        let exec_id = if req.exec_id.is_empty() {
            format!("exec-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
        } else if !valid_exec_id(&req.exec_id) {
            return Err(exec_error(ErrorKind::INVALID_ARGUMENT, "the exec id is not 1 to 64 of [A-Za-z0-9_-]"));
        } else if self.registry().execs.contains_key(&req.exec_id) {
            return Err(id_in_use(&req.exec_id));
        } else {
            req.exec_id.clone()
        };
        let user = rootfs::lookup_user(&self.root, &req.user).map_err(|m| exec_error(ErrorKind::USER_NOT_FOUND, m))?;

        let mut env: Vec<(String, String)> = vec![("PATH".into(), DEFAULT_PATH.into()), ("HOME".into(), user.home.clone())];
        if req.tty {
            env.push(("TERM".into(), "xterm-256color".into()));
        }
        for entry in &req.env {
            let Some((name, value)) = entry.split_once('=').filter(|(n, _)| !n.is_empty()) else {
                return Err(exec_error(ErrorKind::INVALID_ARGUMENT, format!("environment entry {entry:?} is not NAME=value")));
            };
            env.retain(|(n, _)| n != name);
            env.push((name.into(), value.into()));
        }

        let working_dir = if req.working_dir.is_empty() {
            if self.is_dir(&user.home) {
                user.home.clone()
            } else {
                "/".into()
            }
        } else if self.is_dir(&req.working_dir) {
            req.working_dir.clone()
        } else {
            return Err(exec_error(
                ErrorKind::WORKING_DIR_NOT_FOUND,
                format!("working directory {:?} does not exist in the box (or is not a directory)", req.working_dir),
            ));
        };
        let path_var = env.iter().find(|(n, _)| n == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
        let program = self.resolve_program(&req.program, &path_var, &working_dir)?;

        let cstr = |what: &str, s: &str| {
            CString::new(s).map_err(|_| exec_error(ErrorKind::INVALID_ARGUMENT, format!("{what} contains a NUL byte")))
        };
        let root = (self.root.path != std::path::Path::new("/")).then(|| cstr("root", &self.root.path.to_string_lossy())).transpose()?;
        let cwd = cstr("working directory", &working_dir)?;
        let tty = req.tty;

        let (argv, envp) = (
            std::iter::once(&req.program).chain(&req.args).map(|a| cstr("an argument", a)).collect::<Result<Vec<_>, _>>()?,
            env.iter().map(|(n, v)| cstr("the environment", &format!("{n}={v}"))).collect::<Result<Vec<_>, _>>()?,
        );
        let setup = ChildSetup { root, cwd, tty, uid: user.uid, gid: user.gid, groups: user.groups.clone() };
        let failed = |what: &str, e: nix::Error| exec_error(ErrorKind::SPAWN_FAILED, format!("{what}: {e}"));
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| failed("pipe", e));
        // Ours, then the child's ends: (stdin writer, stdout reader, stderr reader, pty master).
        let (ours, theirs): ([Option<OwnedFd>; 4], [OwnedFd; 3]) = if tty {
            let size = nix::pty::Winsize {
                ws_row: req.tty_rows.clamp(1, 1000) as u16,
                ws_col: req.tty_cols.clamp(1, 1000) as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pair = nix::pty::openpty(Some(&size), None).map_err(|e| failed("openpty", e))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| exec_error(ErrorKind::SPAWN_FAILED, format!("dup pty: {e}")));
            let (writer, reader) = (dup(&pair.master)?, dup(&pair.master)?);
            ([Some(writer), Some(reader), None, Some(pair.master)], [dup(&pair.slave)?, dup(&pair.slave)?, pair.slave])
        } else {
            let ((stdin_r, stdin_w), (stdout_r, stdout_w), (stderr_r, stderr_w)) = (pipe()?, pipe()?, pipe()?);
            ([Some(stdin_w), Some(grown(stdout_r)), Some(grown(stderr_r)), None], [stdin_r, stdout_w, stderr_w])
        };
        let spawn = sys::Spawn {
            program: cstr("the program's path", &program)?,
            argv,
            envp,
            stdio: [theirs[0].as_fd(), theirs[1].as_fd(), theirs[2].as_fd()],
            setup,
        };
        let spawned = self.reaper.spawn(|| sys::spawn(&spawn).map(|pid| ((), pid)));
        let ((), pid, exited) = spawned.map_err(|e| spawn_error(&req.program, &program, e))?;
        drop(theirs); // the child has its copies: EOF comes when it (and its children) close them

        // The process runs from here on: a failure to set up its pipes must not leave it
        // running where no record reaches it.
        let nonblocking = |fd: OwnedFd| {
            async_fd(fd).map_err(|e| {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                exec_error(ErrorKind::SPAWN_FAILED, format!("pipe setup: {e}"))
            })
        };
        let [stdin, stdout, stderr, pty] = ours;
        // With close_stdin the host has nothing to send: dropping our end gives the process EOF.
        let stdin = stdin.filter(|_| !req.close_stdin).map(nonblocking).transpose()?;
        let (stdout, stderr) = (stdout.map(nonblocking).transpose()?, stderr.map(nonblocking).transpose()?);

        let (ended_tx, ended_rx) = watch::channel(None);
        let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        tokio::spawn(async move {
            let timed_out = Arc::new(AtomicBool::new(false));
            let exit = match timeout {
                None => exited.await,
                Some(limit) => {
                    tokio::pin!(exited);
                    match tokio::time::timeout(limit, &mut exited).await {
                        Ok(exit) => exit,
                        Err(_) => {
                            timed_out.store(true, Ordering::Relaxed);
                            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                            exited.await
                        }
                    }
                }
            };
            // The reaper drops the sender only if it stops, which never happens while we run.
            let exit = exit.unwrap_or(Exit::Signal(libc::SIGKILL));
            let _ = ended_tx.send(Some(Ended { exit, timed_out: timed_out.load(Ordering::Relaxed) }));
        });

        let exec = Exec {
            pid,
            stdout: tokio::sync::Mutex::new(stdout),
            stderr: tokio::sync::Mutex::new(stderr),
            stdin: tokio::sync::Mutex::new(stdin),
            pty,
            ended: ended_rx,
        };
        let exec = Arc::new(exec);
        if let Err(why) = self.registry().admit(&exec_id, exec.clone()) {
            // Nobody could reach this process: it must not run on unseen.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(match why {
                NotAdmitted::IdInUse => id_in_use(&exec_id),
                NotAdmitted::ReleasedEarly => exec_error(
                    ErrorKind::INVALID_ARGUMENT,
                    format!("execution {exec_id:?} was released (its Start cancelled) before it started"),
                ),
            });
        }
        Ok((exec_id, exec))
    }

    fn is_dir(&self, path: &str) -> bool {
        self.root.resolve(path).and_then(|fd| rootfs::fstat(&fd)).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// The program's path inside the root: as given if it has a '/', else the first
    /// executable match in PATH. Distinguishes "not there" from "there but not executable".
    fn resolve_program(&self, program: &str, path_var: &str, working_dir: &str) -> Result<String, ExecError> {
        if program.is_empty() {
            return Err(exec_error(ErrorKind::INVALID_ARGUMENT, "the program name is empty"));
        }
        let check = |candidate: &str| -> Option<bool> {
            let st = self.root.resolve(candidate).and_then(|fd| rootfs::fstat(&fd)).ok()?;
            Some(st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
        };
        if program.contains('/') {
            let path = if program.starts_with('/') { program.to_string() } else { format!("{working_dir}/{program}") };
            return match check(&path) {
                Some(true) => Ok(path),
                Some(false) => Err(exec_error(ErrorKind::NOT_EXECUTABLE, format!("{program:?} is not an executable file"))),
                None => Err(exec_error(ErrorKind::PROGRAM_NOT_FOUND, format!("program {program:?} does not exist in the box"))),
            };
        }
        let mut not_executable = None;
        for dir in path_var.split(':').filter(|d| !d.is_empty()) {
            let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
            match check(&candidate) {
                Some(true) => return Ok(candidate),
                Some(false) => not_executable = not_executable.or(Some(candidate)),
                None => {}
            }
        }
        Err(match not_executable {
            Some(path) => exec_error(ErrorKind::NOT_EXECUTABLE, format!("{path} is not an executable file")),
            None => exec_error(ErrorKind::PROGRAM_NOT_FOUND, format!("program {program:?} not found in PATH ({path_var})")),
        })
    }
}

fn spawn_error(program: &str, resolved: &str, failed: sys::SpawnError) -> ExecError {
    let e = failed.error;
    if failed.step != "execve" {
        return exec_error(ErrorKind::SPAWN_FAILED, format!("starting {resolved}: {} failed: {e}", failed.step));
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) => exec_error(
            ErrorKind::PROGRAM_NOT_FOUND,
            format!("{resolved} (for {program:?}) or its interpreter does not exist in the box: {e}"),
        ),
        Some(libc::EACCES) | Some(libc::ENOEXEC) => {
            exec_error(ErrorKind::NOT_EXECUTABLE, format!("{resolved} cannot be executed by this user: {e}"))
        }
        _ => exec_error(ErrorKind::SPAWN_FAILED, format!("starting {resolved}: {e}")),
    }
}

/// An output pipe grown to [`OUTPUT_PIPE_SIZE`] (best effort: the default 64 KiB still works).
/// Each ReadOutput drains what the pipe holds, so a pipe that holds more while the answer
/// travels means fewer round trips per byte (measured: docs/exec.md).
fn grown(fd: OwnedFd) -> OwnedFd {
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
    fd
}

fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    sys::register_async_fd(fd)
}

/// Reads at least one byte (waiting up to `wait`), then whatever else is ready, up to `max`.
/// `Ok(None)` is end of file (for a pty: the last slave descriptor closed, EIO).
async fn read_chunk(fd: &AsyncFd<OwnedFd>, max: usize, wait: Duration) -> io::Result<Option<Vec<u8>>> {
    // Read straight into the answer's buffer: no second copy of every byte.
    let mut data = Vec::new();
    loop {
        let start = data.len();
        data.resize(start + (max - start).min(READ_BUFFER), 0);
        let result = if start == 0 {
            let Ok(guard) = tokio::time::timeout(wait, fd.readable()).await else {
                data.clear();
                return Ok(Some(data)); // nothing within the wait: an empty chunk
            };
            let mut guard = guard?;
            match guard.try_io(|inner| raw_read(inner.get_ref(), &mut data[start..])) {
                Ok(result) => result,
                Err(_would_block) => {
                    data.clear();
                    continue;
                }
            }
        } else {
            raw_read(fd.get_ref(), &mut data[start..])
        };
        data.truncate(start + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => return Ok(if data.is_empty() { None } else { Some(data) }),
            Ok(_) if data.len() >= max => return Ok(Some(data)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(data)),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(if data.is_empty() { None } else { Some(data) }),
            Err(e) => return Err(e),
        }
    }
}

fn raw_read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd.as_raw_fd(), buf)?)
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        let result = guard.try_io(|inner| Ok(nix::unistd::write(inner.get_ref(), data)?));
        match result {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// What a lingering Start read and saw before it answered.
#[derive(Default)]
struct Lingered {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_eof: bool,
    stderr_eof: bool,
    ended: Option<Ended>,
}

impl Lingered {
    /// Everything the host could ask about this execution is here.
    fn complete(&self) -> bool {
        self.ended.is_some() && self.stdout_eof && self.stderr_eof
    }
}

/// Reads both output streams and watches for the exit until the execution is complete, a
/// stream holds `max` bytes, or `wait` passes. A read error ends the lingering early, with
/// the stream not at its end: the host's next ReadOutput meets the error and reports it.
async fn linger(exec: &Exec, wait: Duration, max: usize) -> Lingered {
    let deadline = tokio::time::Instant::now() + wait;
    let mut stdout = exec.stdout.lock().await;
    let mut stderr = exec.stderr.lock().await;
    let mut ended = exec.ended.clone();
    let mut got = Lingered { stdout_eof: stdout.is_none(), stderr_eof: stderr.is_none(), ..Default::default() };
    loop {
        got.ended = *ended.borrow_and_update();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if got.complete() || got.stdout.len() >= max || got.stderr.len() >= max || left.is_zero() {
            break;
        }
        let (out_room, err_room) = (max - got.stdout.len(), max - got.stderr.len());
        tokio::select! {
            read = read_some(stdout.as_ref(), out_room, left), if !got.stdout_eof => match read {
                Ok(Some(data)) => got.stdout.extend_from_slice(&data),
                Ok(None) => got.stdout_eof = true,
                Err(_) => break,
            },
            read = read_some(stderr.as_ref(), err_room, left), if !got.stderr_eof => match read {
                Ok(Some(data)) => got.stderr.extend_from_slice(&data),
                Ok(None) => got.stderr_eof = true,
                Err(_) => break,
            },
            changed = ended.changed(), if got.ended.is_none() => {
                if changed.is_err() {
                    break; // the exit's sender is gone: nothing more will come
                }
            }
        }
    }
    // Streams at their end answer EOF to any later ReadOutput, as after a ReadOutput's EOF.
    if got.stdout_eof {
        *stdout = None;
    }
    if got.stderr_eof {
        *stderr = None;
    }
    got
}

/// `read_chunk` on a stream that may be gone (then never ready).
async fn read_some(fd: Option<&AsyncFd<OwnedFd>>, max: usize, wait: Duration) -> io::Result<Option<Vec<u8>>> {
    match fd {
        Some(fd) => read_chunk(fd, max, wait).await,
        None => std::future::pending().await,
    }
}

fn wait_response(ended: Option<Ended>) -> WaitResponse {
    match ended {
        None => WaitResponse::default(),
        Some(Ended { exit, timed_out }) => {
            let (exit_code, signal) = match exit {
                Exit::Code(code) => (code, 0),
                Exit::Signal(signal) => (0, signal),
            };
            WaitResponse { exited: true, exit_code, signal, timed_out, ..Default::default() }
        }
    }
}

fn bounded_wait(wait_ms: u64) -> Duration {
    Duration::from_millis(wait_ms).min(MAX_WAIT)
}

#[async_trait::async_trait]
impl boxlite_protocol::agent_ttrpc::Execution for ExecService {
    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let (exec_id, exec) = match self.start_process(&req) {
            Ok(started) => started,
            Err(error) => {
                crate::log!("exec {:?} refused: {}", req.program, error.message);
                return Ok(StartResponse { error: Some(error).into(), ..Default::default() });
            }
        };
        let mut response = StartResponse { exec_id, pid: exec.pid, ..Default::default() };
        if req.linger_ms == 0 {
            return Ok(response);
        }
        let max = req.linger_max_bytes.clamp(1, MAX_OUTPUT_CHUNK) as usize;
        let got = linger(&exec, bounded_wait(req.linger_ms), max).await;
        if got.complete() {
            // The host has it all and will not ask again: no Release needed.
            self.registry().release(&response.exec_id, false);
        }
        response.exit = Some(wait_response(got.ended)).into();
        (response.stdout, response.stderr) = (got.stdout, got.stderr);
        (response.stdout_eof, response.stderr_eof) = (got.stdout_eof, got.stderr_eof);
        Ok(response)
    }

    async fn read_output(&self, _ctx: &TtrpcContext, req: ReadOutputRequest) -> ttrpc::Result<ReadOutputResponse> {
        let exec = self.get(&req.exec_id)?;
        let stream = match req.stream.enum_value() {
            Ok(OutputStream::STDOUT) => &exec.stdout,
            Ok(OutputStream::STDERR) => &exec.stderr,
            Err(n) => return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("unknown output stream {n}"))),
        };
        let max = req.max_bytes.clamp(1, MAX_OUTPUT_CHUNK) as usize;
        let mut stream = stream.lock().await;
        let Some(fd) = stream.as_ref() else {
            return Ok(ReadOutputResponse { eof: true, ..Default::default() });
        };
        match read_chunk(fd, max, bounded_wait(req.wait_ms)).await {
            Ok(Some(data)) => Ok(ReadOutputResponse { data, ..Default::default() }),
            Ok(None) => {
                *stream = None;
                Ok(ReadOutputResponse { eof: true, ..Default::default() })
            }
            Err(e) => Err(status(ttrpc::Code::INTERNAL, format!("reading output of {}: {e}", req.exec_id))),
        }
    }

    async fn write_stdin(&self, _ctx: &TtrpcContext, req: WriteStdinRequest) -> ttrpc::Result<WriteStdinResponse> {
        if req.data.len() > MAX_STDIN_CHUNK {
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("stdin chunk over {MAX_STDIN_CHUNK} bytes")));
        }
        let exec = self.get(&req.exec_id)?;
        let mut stdin = exec.stdin.lock().await;
        let Some(fd) = stdin.as_ref() else {
            return Err(status(ttrpc::Code::FAILED_PRECONDITION, format!("stdin of {} is closed", req.exec_id)));
        };
        if let Err(e) = write_all(fd, &req.data).await {
            *stdin = None;
            return Err(status(ttrpc::Code::FAILED_PRECONDITION, format!("writing stdin of {}: {e}", req.exec_id)));
        }
        if req.close {
            *stdin = None;
        }
        Ok(WriteStdinResponse::default())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exec = self.get(&req.exec_id)?;
        let mut ended = exec.ended.clone();
        let result = tokio::time::timeout(bounded_wait(req.wait_ms), ended.wait_for(Option::is_some)).await;
        let ended = match result {
            Ok(Ok(value)) => *value,
            _ => None,
        };
        Ok(wait_response(ended))
    }

    async fn signal(&self, _ctx: &TtrpcContext, req: SignalRequest) -> ttrpc::Result<SignalResponse> {
        let exec = self.get(&req.exec_id)?;
        if !(1..=64).contains(&req.signal) {
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, format!("{} is not a signal number", req.signal)));
        }
        if exec.ended.borrow().is_some() {
            return Ok(SignalResponse::default()); // already gone; the pid may be reused
        }
        let target = if req.process_group { -(exec.pid as i32) } else { exec.pid as i32 };
        // The process (group) has not been reaped yet (checked above), so the pid still names it.
        if let Err(e) = sys::kill(target, req.signal) {
            return Err(status(ttrpc::Code::INTERNAL, format!("signal {} to {}: {e}", req.signal, req.exec_id)));
        }
        Ok(SignalResponse::default())
    }

    async fn resize(&self, _ctx: &TtrpcContext, req: ResizeRequest) -> ttrpc::Result<ResizeResponse> {
        let exec = self.get(&req.exec_id)?;
        let Some(pty) = &exec.pty else {
            return Err(status(ttrpc::Code::FAILED_PRECONDITION, format!("{} has no tty", req.exec_id)));
        };
        if let Err(e) = sys::set_window_size(pty.as_fd(), req.rows.clamp(1, 1000) as u16, req.cols.clamp(1, 1000) as u16) {
            return Err(status(ttrpc::Code::INTERNAL, format!("resize {}: {e}", req.exec_id)));
        }
        Ok(ResizeResponse::default())
    }

    async fn release(&self, _ctx: &TtrpcContext, req: ReleaseRequest) -> ttrpc::Result<ReleaseResponse> {
        let released = self.registry().release(&req.exec_id, req.kill);
        if let Some(exec) = released.filter(|exec| req.kill && exec.ended.borrow().is_none()) {
            // Not reaped yet (checked above), so the pid still names its group.
            let _ = killpg(Pid::from_raw(exec.pid as i32), Signal::SIGKILL);
        }
        Ok(ReleaseResponse::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Arc<Exec> {
        let no_fd = || tokio::sync::Mutex::new(None);
        Arc::new(Exec { pid: 1, stdout: no_fd(), stderr: no_fd(), stdin: no_fd(), pty: None, ended: watch::channel(None).1 })
    }

    #[test]
    fn a_kill_release_that_overtakes_its_start_refuses_that_start_once() {
        let mut registry = Registry::default();
        assert!(registry.release("h-1", true).is_none());
        assert_eq!(registry.admit("h-1", record()), Err(NotAdmitted::ReleasedEarly));
        assert!(registry.execs.is_empty());
        // Remembered once: the id can be used again.
        assert_eq!(registry.admit("h-1", record()), Ok(()));
        assert_eq!(registry.admit("h-1", record()), Err(NotAdmitted::IdInUse));
        assert!(registry.release("h-1", true).is_some());
        assert!(registry.released_early.is_empty(), "a Release that found its record is not remembered");
    }

    #[test]
    fn a_plain_release_of_an_unknown_id_is_not_remembered_and_early_ones_are_bounded() {
        let mut registry = Registry::default();
        assert!(registry.release("gone", false).is_none());
        assert!(registry.released_early.is_empty());
        for n in 0..MAX_RELEASED_EARLY + 10 {
            registry.release(&format!("h-{n}"), true);
        }
        assert_eq!(registry.released_early.len(), MAX_RELEASED_EARLY);
        assert_eq!(registry.admit("h-0", record()), Ok(()), "the oldest were forgotten");
        assert_eq!(registry.admit(&format!("h-{}", MAX_RELEASED_EARLY + 9), record()), Err(NotAdmitted::ReleasedEarly));
    }
}
