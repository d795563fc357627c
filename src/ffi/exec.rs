//! Commands, executions with callback streaming, and the blocking `boxlite_box_run`.

use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::boxes::boxlite_box_t;
use super::error::{boxlite_error_t, error_parts, new_error};
use super::{
    block_on, c_string, free_handle, guard, guard_value, guard_void, handle, out_arg, sized_len, str_arg, tokio, write_sized, SizedStruct,
};
use crate::runtime::error::Error;
use crate::runtime::exec::{ExecCommand, ExecOutput, ExecStatus, Execution, OutputStream, StdinWriter, DEFAULT_OUTPUT_LIMIT};
use crate::runtime::sink::{deliver, OutputSink, StreamKind};

/// A command to run in a box (an opaque builder).
pub struct boxlite_command_t {
    command: ExecCommand,
}

/// How a process ended. A sized struct: set `size` to `sizeof(boxlite_exit_status_t)`
/// before passing it to a call that fills it (BOXLITE_EXIT_STATUS_INIT); the library writes
/// no more than that. In `on_exit` it is the library's own, of the library's size.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_exit_status_t {
    /// The size of the struct: set by the caller (or, in `on_exit`, by the library).
    pub size: u32,
    /// The exit code, or -1 if a signal ended the process.
    pub exit_code: i32,
    /// The signal that ended the process, or 0.
    pub signal: i32,
    /// The process group was killed because the command's timeout passed.
    pub timed_out: bool,
    /// An output callback returned non-zero, so the process group was killed.
    pub cancelled: bool,
}

/// Receives a chunk of output: `data` is valid only during the call. Return 0 to go on;
/// non-zero cancels the execution (its process group is killed and no more output is
/// delivered).
pub type boxlite_output_cb = Option<unsafe extern "C" fn(data: *const u8, len: usize, user_data: *mut c_void) -> i32>;

/// Called exactly once when the execution is over: with its status and NULL, or with NULL
/// and the error that ended it (both pointers valid only during the call).
pub type boxlite_exit_cb =
    Option<unsafe extern "C" fn(status: *const boxlite_exit_status_t, error: *const boxlite_error_t, user_data: *mut c_void)>;

/// Frees `user_data` once the library is done with it.
pub type boxlite_user_data_free_cb = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// The version of `boxlite_exec_callbacks_t` this header describes.
pub const BOXLITE_EXEC_CALLBACKS_VERSION: u32 = 1;

/// Callbacks of an execution. All run on a library thread, one at a time for one
/// execution (never re-entrantly); chunks of one stream arrive in order.
#[repr(C)]
pub struct boxlite_exec_callbacks_t {
    /// Must be BOXLITE_EXEC_CALLBACKS_VERSION.
    pub version: u32,
    pub on_stdout: boxlite_output_cb,
    pub on_stderr: boxlite_output_cb,
    pub on_exit: boxlite_exit_cb,
    pub user_data: *mut c_void,
    /// Called exactly once: after the last callback, or before `boxlite_box_exec` returns
    /// an error (then no other callback runs).
    pub user_data_free: boxlite_user_data_free_cb,
}

/// The callbacks, movable to the thread that calls them.
struct Callbacks {
    on_stdout: boxlite_output_cb,
    on_stderr: boxlite_output_cb,
    on_exit: boxlite_exit_cb,
    user_data: *mut c_void,
    user_data_free: boxlite_user_data_free_cb,
}

// SAFETY: the C contract says callbacks may run on any library thread, and user_data is
// only ever passed back to them, from one thread at a time.
unsafe impl Send for Callbacks {}

impl Drop for Callbacks {
    fn drop(&mut self) {
        if let Some(free) = self.user_data_free.take() {
            // SAFETY: the caller's own function, with the caller's own pointer, once.
            unsafe { free(self.user_data) };
        }
    }
}

/// What `boxlite_execution_wait` waits for.
type Outcome = Result<boxlite_exit_status_t, (i32, String)>;

struct Shared {
    execution: Execution,
    stdin: tokio::sync::Mutex<Option<StdinWriter>>,
    outcome: Mutex<Option<Outcome>>,
    finished: Condvar,
    /// `boxlite_execution_pause_output` holds the delivering thread back.
    output_paused: Mutex<bool>,
    output_resumed: Condvar,
}

impl Shared {
    fn set_output_paused(&self, paused: bool) {
        *self.output_paused.lock().unwrap_or_else(|e| e.into_inner()) = paused;
        if !paused {
            self.output_resumed.notify_all();
        }
    }

    fn wait_while_output_paused(&self) {
        let paused = self.output_paused.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.output_resumed.wait_while(paused, |paused| *paused).unwrap_or_else(|e| e.into_inner()));
    }
}

/// A running (or finished) process. Keeps its box alive; may be freed while running (the
/// process goes on, its callbacks too).
pub struct boxlite_execution_t {
    shared: Arc<Shared>,
    id_c: CString,
}

/// The collected result of `boxlite_box_run`.
pub struct boxlite_output_t {
    output: ExecOutput,
}

/// Creates a command running `program` (a path, or a name looked up in the box's PATH).
/// On success `*out` owns it (free with `boxlite_command_free`). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments or a non-UTF-8 program. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `program` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_new(out: *mut *mut boxlite_command_t, program: *const c_char) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let program = unsafe { str_arg(program, "program") }?;
        let command = Box::new(boxlite_command_t { command: ExecCommand::new(program) });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(command) };
        Ok(())
    })
}

/// Runs `change` on a command that must not be NULL.
///
/// # Safety
/// `command` is NULL or live and not used elsewhere during the call.
unsafe fn with_command(
    command: *mut boxlite_command_t,
    change: impl FnOnce(&mut ExecCommand) -> Result<(), Error>,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live, exclusive for this call (caller's contract).
        let command = unsafe { command.as_mut() }.ok_or_else(|| super::null_argument("command"))?;
        change(&mut command.command)
    })
}

/// Appends an argument (copied). Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL
/// arguments or non-UTF-8 text. Not thread-safe for the same command.
///
/// # Safety
/// `command` is NULL or live; `arg` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_add_arg(command: *mut boxlite_command_t, arg: *const c_char) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_command(command, |c| {
            c.args.push(str_arg(arg, "arg")?.to_string());
            Ok(())
        })
    }
}

/// Sets an environment variable (copied) on top of the box's defaults. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments, non-UTF-8 text, or a name that is
/// empty or contains '='. Not thread-safe for the same command.
///
/// # Safety
/// `command` is NULL or live; `name` and `value` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_env(
    command: *mut boxlite_command_t,
    name: *const c_char,
    value: *const c_char,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_command(command, |c| {
            let name = str_arg(name, "name")?;
            if name.is_empty() || name.contains('=') {
                return Err(Error::InvalidOption { field: "name", reason: format!("{name:?} is empty or contains '='") });
            }
            c.env.retain(|(n, _)| n != name);
            c.env.push((name.to_string(), str_arg(value, "value")?.to_string()));
            Ok(())
        })
    }
}

/// Sets the working directory inside the box (copied). Errors: as for the other setters.
///
/// # Safety
/// `command` is NULL or live; `dir` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_working_dir(command: *mut boxlite_command_t, dir: *const c_char) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_command(command, |c| {
            c.working_dir = Some(str_arg(dir, "dir")?.to_string());
            Ok(())
        })
    }
}

/// Sets the user: a name from the box's /etc/passwd, "uid" or "uid:gid" (copied).
/// Errors: as for the other setters.
///
/// # Safety
/// `command` is NULL or live; `user` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_user(command: *mut boxlite_command_t, user: *const c_char) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_command(command, |c| {
            c.user = Some(str_arg(user, "user")?.to_string());
            Ok(())
        })
    }
}

/// Kills the process group after `timeout_ms` milliseconds (0: no timeout).
///
/// # Safety
/// `command` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_timeout_ms(command: *mut boxlite_command_t, timeout_ms: u64) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_command(command, |c| {
            c.timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
            Ok(())
        })
    }
}

/// Runs the command on a pseudo-terminal of `rows` x `cols` (stderr then joins stdout).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL command or a zero size.
///
/// # Safety
/// `command` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_tty(command: *mut boxlite_command_t, rows: u16, cols: u16) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_command(command, |c| {
            check_tty_size(rows, cols)?;
            c.tty = Some((rows, cols));
            Ok(())
        })
    }
}

/// Bounds the output `boxlite_box_run` collects: at most `bytes` per stream (default 64
/// MiB). A process that writes more is killed (signal 9), the rest of its output is
/// discarded, and `boxlite_output_truncated` says which stream was cut. Streaming with
/// `boxlite_box_exec` is not bounded by it (the callbacks see everything). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for a NULL command, 0, or more than the host can address.
///
/// # Safety
/// `command` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_output_limit(command: *mut boxlite_command_t, bytes: u64) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_command(command, |c| {
            c.output_limit = usize::try_from(bytes).ok().filter(|&b| b > 0).ok_or_else(|| Error::InvalidOption {
                field: "output_limit",
                reason: format!("{bytes} bytes; give more than 0 (the default is {DEFAULT_OUTPUT_LIMIT})"),
            })?;
            Ok(())
        })
    }
}

/// Starts the process with its stdin at end of file; `boxlite_execution_write_stdin` then
/// fails (BOXLITE_ERROR_INVALID_STATE). In exchange the agent answers the start only once
/// the process has finished (at most ~250 ms), with its output and exit: a quick process
/// costs one round trip, and `boxlite_box_exec` may return only after that wait (output that
/// came meanwhile reaches the callbacks right after). `boxlite_box_run` always runs commands
/// so. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL command.
///
/// # Safety
/// `command` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_set_no_stdin(command: *mut boxlite_command_t) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_command(command, |c| {
            c.no_stdin = true;
            Ok(())
        })
    }
}

fn check_tty_size(rows: u16, cols: u16) -> Result<(), Error> {
    if rows == 0 || cols == 0 {
        return Err(Error::InvalidOption { field: "tty", reason: format!("{rows}x{cols} is not a terminal size") });
    }
    Ok(())
}

/// Frees a command. NULL does nothing.
///
/// # Safety
/// `command` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_command_free(command: *mut boxlite_command_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(command) })
}

/// Starts `command` in the box (booting it first if needed) and returns at once. Output
/// goes to the callbacks (`callbacks` NULL, or a NULL callback: that output is read and
/// dropped). If this call succeeds, `on_exit` fires exactly once, after the last output; if
/// it fails, no callback but `user_data_free` runs (the error is this call's result).
/// `user_data_free` runs exactly once either way. On success `*out` owns the execution (free with `boxlite_execution_free`).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULLs, unknown callbacks version),
/// BOXLITE_ERROR_PROGRAM_NOT_FOUND, BOXLITE_ERROR_NOT_EXECUTABLE,
/// BOXLITE_ERROR_WORKING_DIR_NOT_FOUND, BOXLITE_ERROR_USER_NOT_FOUND, and the boot errors
/// of `boxlite_box_start`. Thread-safe: any number of executions may run at once.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `box`, `command` and `callbacks` are
/// NULL or live; the callbacks obey their documented contract.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_exec(
    out: *mut *mut boxlite_execution_t,
    r#box: *const boxlite_box_t,
    command: *const boxlite_command_t,
    callbacks: *const boxlite_exec_callbacks_t,
) -> *mut boxlite_error_t {
    // SAFETY: NULL or live (caller's contract).
    let callbacks = unsafe { callbacks.as_ref() };
    // Owned from here on, so that user_data_free runs exactly once on every path.
    let owned = Callbacks {
        on_stdout: callbacks.and_then(|c| c.on_stdout),
        on_stderr: callbacks.and_then(|c| c.on_stderr),
        on_exit: callbacks.and_then(|c| c.on_exit),
        user_data: callbacks.map_or(std::ptr::null_mut(), |c| c.user_data),
        user_data_free: callbacks.and_then(|c| c.user_data_free),
    };
    guard(move || {
        out_arg(out, "out")?;
        if let Some(version) = callbacks.map(|c| c.version).filter(|&v| v != BOXLITE_EXEC_CALLBACKS_VERSION) {
            return Err(Error::InvalidOption {
                field: "callbacks",
                reason: format!("version {version} is not BOXLITE_EXEC_CALLBACKS_VERSION ({BOXLITE_EXEC_CALLBACKS_VERSION})"),
            });
        }
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?.lite_box.clone();
        // SAFETY: NULL or live (caller's contract).
        let command = unsafe { handle(command, "command") }?.command.clone();
        let mut execution = block_on(lite_box.exec(command))?;
        let stdout = execution.take_stdout();
        let stderr = execution.take_stderr();
        let stdin = execution.take_stdin();
        let shared = Arc::new(Shared {
            execution,
            stdin: tokio::sync::Mutex::new(stdin),
            outcome: Mutex::new(None),
            finished: Condvar::new(),
            output_paused: Mutex::new(false),
            output_resumed: Condvar::new(),
        });
        let driver = shared.clone();
        std::thread::Builder::new()
            .name("boxlite-exec".into())
            .spawn(move || drive(driver, stdout, stderr, owned))
            .map_err(|e| Error::io("starting the execution's callback thread", e))?;
        // The guest's exec id was checked to be short when it started; show any NUL.
        let id_c = c_string(shared.execution.id());
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_execution_t { shared, id_c })) };
        Ok(())
    })
}

/// The C callbacks as the runtime's output sink.
impl OutputSink for Callbacks {
    fn output(&mut self, stream: StreamKind, data: &[u8]) -> bool {
        let callback = match stream {
            StreamKind::Stdout => self.on_stdout,
            StreamKind::Stderr => self.on_stderr,
        };
        match callback {
            // SAFETY: the caller's callback with a buffer valid for the call.
            Some(callback) => unsafe { callback(data.as_ptr(), data.len(), self.user_data) == 0 },
            None => true,
        }
    }
}

/// The callbacks, held back while the caller has paused the output.
struct Gated<'a> {
    shared: &'a Shared,
    callbacks: &'a mut Callbacks,
}

impl OutputSink for Gated<'_> {
    fn output(&mut self, stream: StreamKind, data: &[u8]) -> bool {
        self.shared.wait_while_output_paused();
        self.callbacks.output(stream, data)
    }
}

/// Delivers output to the callbacks, then the exit, on a plain thread of its own (see
/// `runtime::sink`): callbacks may block or call back into the library.
fn drive(shared: Arc<Shared>, stdout: Option<OutputStream>, stderr: Option<OutputStream>, mut callbacks: Callbacks) {
    let mut gated = Gated { shared: &shared, callbacks: &mut callbacks };
    let delivered = deliver(tokio().handle(), &shared.execution, stdout, stderr, &mut gated);
    let outcome: Outcome = match delivered {
        Ok(d) => Ok(exit_status(d.status, d.cancelled)),
        Err(e) => Err(error_parts(&e)),
    };
    if let Some(on_exit) = callbacks.on_exit {
        match &outcome {
            // SAFETY: the caller's callback with pointers valid for the call.
            Ok(status) => unsafe { on_exit(status, std::ptr::null(), callbacks.user_data) },
            Err((code, message)) => {
                let error = new_error(*code, message.clone());
                // SAFETY: as above; the error is freed right after.
                unsafe { on_exit(std::ptr::null(), error, callbacks.user_data) };
                // SAFETY: created just above, not used afterwards.
                unsafe { super::error::boxlite_error_free(error) };
            }
        }
    }
    drop(callbacks); // user_data_free, after the last callback
    *shared.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    shared.finished.notify_all();
    let _context = tokio().enter();
    drop(shared);
}

fn exit_status(status: ExecStatus, cancelled: bool) -> boxlite_exit_status_t {
    boxlite_exit_status_t {
        size: std::mem::size_of::<boxlite_exit_status_t>() as u32,
        exit_code: status.code.unwrap_or(-1),
        signal: status.signal.unwrap_or(0),
        timed_out: status.timed_out,
        cancelled,
    }
}

/// Writes `len` bytes to the process's stdin (blocks until the agent took them). `data`
/// may be NULL only if `len` is 0. Errors: BOXLITE_ERROR_INVALID_ARGUMENT,
/// BOXLITE_ERROR_INVALID_STATE (stdin closed), BOXLITE_ERROR_AGENT, BOXLITE_ERROR_VM_EXITED.
/// Thread-safe (writes from several threads are serialised, each written whole).
///
/// # Safety
/// `execution` is NULL or live; `data` is valid for reading `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_write_stdin(
    execution: *const boxlite_execution_t,
    data: *const u8,
    len: usize,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        if data.is_null() && len > 0 {
            return Err(super::null_argument("data"));
        }
        let bytes = if len == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL and valid for `len` bytes (caller's contract).
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        block_on(async {
            let mut stdin = shared.stdin.lock().await;
            let writer = stdin.as_mut().ok_or_else(|| Error::InvalidState {
                what: format!("execution {}", shared.execution.id()),
                reason: "its stdin is closed".into(),
            })?;
            writer.write(bytes).await
        })
    })
}

/// Closes the process's stdin (it reads end of file). Closing twice is not an error.
/// Thread-safe.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_close_stdin(execution: *const boxlite_execution_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        block_on(async {
            match shared.stdin.lock().await.take() {
                Some(writer) => writer.close().await,
                None => Ok(()),
            }
        })
    })
}

/// Blocks until the execution is over (its output delivered, `on_exit` called) and writes
/// its status to `*out_status` (a sized struct). Errors: BOXLITE_ERROR_INVALID_ARGUMENT, or
/// the error that ended the execution (e.g. BOXLITE_ERROR_VM_EXITED). Thread-safe; may be
/// called again; must not be called from this execution's own callbacks (it would wait for
/// itself).
///
/// # Safety
/// `out_status` is NULL or valid for writing `out_status->size` bytes; `execution` is NULL
/// or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_wait(
    out_status: *mut boxlite_exit_status_t,
    execution: *const boxlite_execution_t,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe { wait_until(out_status, execution, None) }
}

/// As `boxlite_execution_wait`, but gives up after `timeout_ms` milliseconds (0: only
/// looks): an execution still running then is BOXLITE_ERROR_STILL_RUNNING, its own result
/// (`*out_status` untouched; call again later). Lets an event loop poll without blocking
/// a thread for long. Thread-safe; not from this execution's own callbacks.
///
/// # Safety
/// As `boxlite_execution_wait`.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_wait_timeout(
    out_status: *mut boxlite_exit_status_t,
    execution: *const boxlite_execution_t,
    timeout_ms: u64,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe { wait_until(out_status, execution, Some(Duration::from_millis(timeout_ms))) }
}

/// # Safety
/// As `boxlite_execution_wait`.
unsafe fn wait_until(
    out_status: *mut boxlite_exit_status_t,
    execution: *const boxlite_execution_t,
    timeout: Option<Duration>,
) -> *mut boxlite_error_t {
    let mut ended_by = None;
    let error = guard(|| {
        // SAFETY: valid for its size or NULL (caller's contract).
        unsafe { sized_len(out_status, "out_status") }?;
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut outcome = shared.outcome.lock().unwrap_or_else(|e| e.into_inner());
        while outcome.is_none() {
            outcome = match deadline {
                None => shared.finished.wait(outcome).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(Error::StillRunning { what: format!("execution {}", shared.execution.id()) });
                    }
                    shared.finished.wait_timeout(outcome, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        match outcome.as_ref().expect("loop ends on Some") {
            // SAFETY: valid for its size (caller's contract).
            Ok(status) => unsafe { write_sized(out_status, *status, "out_status") }?,
            Err(parts) => ended_by = Some(parts.clone()),
        }
        Ok(())
    });
    match ended_by {
        Some((code, message)) if error.is_null() => new_error(code, message),
        _ => error,
    }
}

/// Changes the window size of an execution started with `boxlite_command_set_tty` (the
/// process gets SIGWINCH). Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULL, a zero size),
/// BOXLITE_ERROR_AGENT (not a tty execution, or it ended), BOXLITE_ERROR_VM_EXITED.
/// Thread-safe.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_resize(execution: *const boxlite_execution_t, rows: u16, cols: u16) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        check_tty_size(rows, cols)?;
        block_on(shared.execution.resize(rows, cols))
    })
}

/// The execution's id in its box: NUL-terminated, owned by the handle (valid until
/// `boxlite_execution_free`); NULL for a NULL execution. Thread-safe.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_id(execution: *const boxlite_execution_t) -> *const c_char {
    // SAFETY: NULL or live (caller's contract).
    guard_value(std::ptr::null(), || unsafe { execution.as_ref() }.map_or(std::ptr::null(), |e| e.id_c.as_ptr()))
}

/// Writes the process's id inside the box to `*out` (the guest's word). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_pid(out: *mut u32, execution: *const boxlite_execution_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let pid = unsafe { handle(execution, "execution") }?.shared.execution.pid();
        // SAFETY: checked non-NULL above.
        unsafe { *out = pid };
        Ok(())
    })
}

/// Sends `signal` (1-64) to the process. Thread-safe.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_signal(execution: *const boxlite_execution_t, signal: i32) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidOption { field: "signal", reason: format!("{signal} is not a signal number (1-64)") });
        }
        block_on(shared.execution.signal(signal))
    })
}

/// Kills the process and its whole process group (SIGKILL). Thread-safe.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_kill(execution: *const boxlite_execution_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let shared = &unsafe { handle(execution, "execution") }?.shared;
        block_on(shared.execution.kill())
    })
}

/// Holds back this execution's output: once this returns, no output callback starts (one
/// already running finishes) until `boxlite_execution_resume_output`. The library stops
/// pulling output from the box meanwhile, so a process that goes on writing blocks once its
/// pipes are full: a consumer slower than the process keeps memory bounded this way. `on_exit`
/// comes after the last output, so it waits too. Pausing twice is not an error. Thread-safe,
/// and may be called from the execution's own callbacks.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_pause_output(execution: *const boxlite_execution_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        unsafe { handle(execution, "execution") }?.shared.set_output_paused(true);
        Ok(())
    })
}

/// Delivers output again after `boxlite_execution_pause_output`. Resuming output that is not
/// paused is not an error. Thread-safe, and may be called from the execution's own callbacks.
///
/// # Safety
/// `execution` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_resume_output(execution: *const boxlite_execution_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        unsafe { handle(execution, "execution") }?.shared.set_output_paused(false);
        Ok(())
    })
}

/// Frees an execution handle. A running process goes on and its callbacks still fire (paused
/// output resumes: nobody could resume it after this). NULL does nothing.
///
/// # Safety
/// `execution` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_execution_free(execution: *mut boxlite_execution_t) {
    guard_void(|| {
        // SAFETY: NULL or live (caller's contract).
        if let Some(live) = unsafe { execution.as_ref() } {
            live.shared.set_output_paused(false);
        }
        // SAFETY: NULL or from Box::into_raw, given up by the caller.
        unsafe { free_handle(execution) }
    })
}

/// Runs `command` in the box to completion (stdin closed at once) and collects its output.
/// Blocks. On success `*out` owns the result (free with `boxlite_output_free`); a non-zero
/// exit is a success of this call (see `boxlite_output_status`). Each stream is kept up to
/// the command's output limit (`boxlite_command_set_output_limit`, default 64 MiB): a
/// process that writes more is killed (signal 9), the rest of its output discarded, and
/// `boxlite_output_truncated` says so. Errors: as for `boxlite_box_exec`. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `box` and `command` are NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_run(
    out: *mut *mut boxlite_output_t,
    r#box: *const boxlite_box_t,
    command: *const boxlite_command_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = unsafe { handle(r#box, "box") }?.lite_box.clone();
        // SAFETY: NULL or live (caller's contract).
        let command = unsafe { handle(command, "command") }?.command.clone();
        let output = block_on(lite_box.exec_output(command))?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_output_t { output })) };
        Ok(())
    })
}

/// The collected stdout: `*len` gets its length; the bytes are owned by `output` (valid
/// until `boxlite_output_free`; not NUL-terminated). NULL (and `*len` 0) for a NULL output.
///
/// # Safety
/// `output` is NULL or live; `len` is NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn boxlite_output_stdout(output: *const boxlite_output_t, len: *mut usize) -> *const u8 {
    // SAFETY: forwarded caller contracts.
    guard_value(std::ptr::null(), || unsafe { bytes_of(output, len, |o| &o.stdout) })
}

/// The collected stderr; as `boxlite_output_stdout`.
///
/// # Safety
/// `output` is NULL or live; `len` is NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn boxlite_output_stderr(output: *const boxlite_output_t, len: *mut usize) -> *const u8 {
    // SAFETY: forwarded caller contracts.
    guard_value(std::ptr::null(), || unsafe { bytes_of(output, len, |o| &o.stderr) })
}

/// # Safety
/// `output` is NULL or live; `len` is NULL or valid for writing.
unsafe fn bytes_of(output: *const boxlite_output_t, len: *mut usize, pick: fn(&ExecOutput) -> &Vec<u8>) -> *const u8 {
    // SAFETY: NULL or live (caller's contract).
    let bytes = unsafe { output.as_ref() }.map(|o| pick(&o.output));
    if !len.is_null() {
        // SAFETY: non-NULL and valid for writes (caller's contract).
        unsafe { *len = bytes.map_or(0, |b| b.len()) };
    }
    bytes.map_or(std::ptr::null(), |b| b.as_ptr())
}

// SAFETY: repr(C), plain data, a u32 size first.
unsafe impl SizedStruct for boxlite_exit_status_t {}

/// Writes the process's exit status to `*out` (a sized struct). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `output` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_output_status(out: *mut boxlite_exit_status_t, output: *const boxlite_output_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: valid for its size or NULL (caller's contract).
        unsafe { sized_len(out, "out") }?;
        // SAFETY: NULL or live (caller's contract).
        let status = exit_status(unsafe { handle(output, "output") }?.output.status, false);
        // SAFETY: valid for its size (caller's contract).
        unsafe { write_sized(out, status, "out") }
    })
}

/// Flags of `boxlite_output_truncated`: the stream passed the command's output limit and
/// holds only its first `limit` bytes.
pub const BOXLITE_OUTPUT_STDOUT_TRUNCATED: u32 = 1;
pub const BOXLITE_OUTPUT_STDERR_TRUNCATED: u32 = 2;

/// Writes to `*out_flags` which collected streams were cut at the output limit
/// (BOXLITE_OUTPUT_STDOUT_TRUNCATED, BOXLITE_OUTPUT_STDERR_TRUNCATED; 0 if none). Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs. Thread-safe.
///
/// # Safety
/// `out_flags` is NULL or valid for writing; `output` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_output_truncated(out_flags: *mut u32, output: *const boxlite_output_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out_flags, "out_flags")?;
        // SAFETY: NULL or live (caller's contract).
        let output = &unsafe { handle(output, "output") }?.output;
        let flags = if output.stdout_truncated { BOXLITE_OUTPUT_STDOUT_TRUNCATED } else { 0 }
            | if output.stderr_truncated { BOXLITE_OUTPUT_STDERR_TRUNCATED } else { 0 };
        // SAFETY: checked non-NULL above.
        unsafe { *out_flags = flags };
        Ok(())
    })
}

/// Frees a run result. NULL does nothing.
///
/// # Safety
/// `output` is NULL or live, and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn boxlite_output_free(output: *mut boxlite_output_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(output) })
}
