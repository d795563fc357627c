"""The blocking API: Runtime -> Box -> Execution over the C handles.

Handles: each Python object owns one C handle and frees it in close() (also on `with`
exit, and from __del__ as a safety net). The C library keeps a child's parent alive, so
objects may be closed in any order. A handle in use by another thread is freed when that
call returns (never under it).

Callbacks: the library calls them on its own threads. The ctypes callback objects are
module-level (they live as long as the interpreter); each execution's Python state is
found through an integer key passed as `user_data`, and stays registered until the
library calls `user_data_free` (after its last callback)."""

from __future__ import annotations

import atexit
import ctypes
import itertools
import math
import os
import queue
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _ffi
from . import errors
from .errors import BoxliteError, ExecTimeout, ProcessExitError

DEFAULT_OUTPUT_LIMIT = 64 * 1024 * 1024
_WAIT_SLICE_MS = 200  # longest single blocking C wait, so Ctrl-C and shutdown are seen


def _lib() -> ctypes.CDLL:
    return _ffi.lib()


def _cstr(text: Union[str, bytes, os.PathLike]) -> bytes:
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, bytes):
        return text
    raise TypeError(f"expected str, bytes or a path, not {type(text).__name__}")


def _opt_str(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8", "replace")


def version() -> str:
    """The loaded library's version ("MAJOR.MINOR.PATCH")."""
    return _lib().boxlite_version().decode()


def _require(name: str) -> Any:
    lib = _lib()
    if not hasattr(lib, name):
        raise NotImplementedError(
            f"the loaded libboxlite ({_ffi.lib_path()}) has no {name}: it predates this feature; use a newer library"
        )
    return getattr(lib, name)


class _Handle:
    """An owned C pointer, freed once: by close(), or by the last call still using it."""

    def __init__(self, ptr: int, free_name: str, what: str) -> None:
        self._ptr: Optional[int] = ptr
        self._free_name = free_name
        self._what = what
        self._lock = threading.RLock()  # re-entrant: __del__ of another object may run under it
        self._users = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def use(self) -> Iterator[int]:
        with self._lock:
            if self._closed or self._ptr is None:
                raise errors.InvalidState(f"the {self._what} is closed")
            self._users += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._lock:
                self._users -= 1
                last = self._closed and self._users == 0
                ptr_to_free = self._ptr if last else None
                if last:
                    self._ptr = None
            if ptr_to_free:
                self._free(ptr_to_free)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._users:
                return  # freed by the last user
            ptr, self._ptr = self._ptr, None
        if ptr:
            self._free(ptr)

    def _free(self, ptr: int) -> None:
        try:
            getattr(_lib(), self._free_name)(ptr)
        except Exception:  # interpreter shutdown: the module may be half gone
            pass


def _new(fn: Any, *args: Any) -> int:
    """Calls a constructor `fn(&out, ...)` and returns the new pointer."""
    out = ctypes.c_void_p()
    errors.check(fn(ctypes.byref(out), *args))
    assert out.value
    return out.value


# --- results ----------------------------------------------------------------------------
@dataclass
class ExecResult:
    """How a process ended and what it wrote (each stream kept up to the output limit)."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    signal: int = 0
    timed_out: bool = False
    cancelled: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def check(self) -> "ExecResult":
        """Raises ExecTimeout if the process timed out, ProcessExitError if it failed."""
        if self.timed_out:
            raise ExecTimeout("the process timed out (its process group was killed)", self.stdout, self.stderr, self)
        if self.exit_code != 0:
            raise ProcessExitError(self)
        return self


@dataclass(frozen=True)
class Chunk:
    """A piece of output: `stream` is "stdout" or "stderr"."""

    stream: str
    data: bytes


@dataclass(frozen=True)
class Port:
    """A port forward: host `host_addr`:`host` (0: the host picks) to `guest` in the box."""

    guest: int
    host: int = 0
    protocol: str = "tcp"
    host_addr: Optional[str] = None


@dataclass(frozen=True)
class Volume:
    """A host directory shared into the box at `guest` (docs/volumes.md)."""

    host: str
    guest: str
    read_only: bool = False


@dataclass(frozen=True)
class PortForwardInfo:
    protocol: str
    host_addr: str
    host_port: int
    guest_port: int


_PROTOCOLS = {"tcp": _ffi.BOXLITE_PROTOCOL_TCP, "udp": _ffi.BOXLITE_PROTOCOL_UDP}
_NETWORKS = {
    "none": _ffi.BOXLITE_NETWORK_NONE,
    "outbound": _ffi.BOXLITE_NETWORK_OUTBOUND,
    "allow_list": _ffi.BOXLITE_NETWORK_ALLOW_LIST,
    "allow-list": _ffi.BOXLITE_NETWORK_ALLOW_LIST,
}
_ENGINES = {"auto": _ffi.BOXLITE_ENGINE_AUTO, "krun": _ffi.BOXLITE_ENGINE_KRUN, "qemu": _ffi.BOXLITE_ENGINE_QEMU}
_STATUSES = {
    _ffi.BOXLITE_BOX_CONFIGURED: "configured",
    _ffi.BOXLITE_BOX_RUNNING: "running",
    _ffi.BOXLITE_BOX_STOPPED: "stopped",
    _ffi.BOXLITE_BOX_REMOVED: "removed",
}


def _protocol(name: Union[str, int]) -> int:
    if isinstance(name, int):
        return name
    try:
        return _PROTOCOLS[name.lower()]
    except KeyError:
        raise errors.InvalidArgument(f"unknown protocol {name!r}: use 'tcp' or 'udp'") from None


def _port(spec: Union[Port, int, str, Tuple[Any, ...], Mapping[str, Any]]) -> Port:
    if isinstance(spec, Port):
        return spec
    if isinstance(spec, int):
        return Port(guest=spec)
    if isinstance(spec, Mapping):
        return Port(**spec)
    if isinstance(spec, tuple):
        # (host, guest) or (host, guest, protocol)
        if len(spec) == 2:
            return Port(host=int(spec[0]), guest=int(spec[1]))
        if len(spec) == 3:
            return Port(host=int(spec[0]), guest=int(spec[1]), protocol=str(spec[2]))
        raise errors.InvalidArgument(f"port {spec!r}: use (host, guest) or (host, guest, protocol)")
    if isinstance(spec, str):
        # [host_addr:]host:guest[/protocol], as docker -p
        text, _, proto = spec.partition("/")
        parts = text.rsplit(":", 2)
        try:
            if len(parts) == 2:
                return Port(host=int(parts[0]), guest=int(parts[1]), protocol=proto or "tcp")
            if len(parts) == 3:
                return Port(host_addr=parts[0].strip("[]"), host=int(parts[1]), guest=int(parts[2]), protocol=proto or "tcp")
        except ValueError:
            pass
        raise errors.InvalidArgument(f"port {spec!r}: use 'HOST:GUEST[/udp]' or 'ADDR:HOST:GUEST[/udp]'")
    raise TypeError(f"a port is a Port, an int, a tuple or a string, not {type(spec).__name__}")


def _volume(spec: Union[Volume, Tuple[Any, ...]]) -> Volume:
    if isinstance(spec, Volume):
        return spec
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        read_only = len(spec) == 3 and spec[2] in ("ro", True)
        return Volume(os.fspath(spec[0]), os.fspath(spec[1]), read_only)
    raise TypeError("a volume is a Volume or a tuple (host, guest[, 'ro'])")


# --- executions ---------------------------------------------------------------------------
_END = object()


class _ExecState:
    """What the callbacks of one execution feed: buffers (collect) or a queue (stream)."""

    def __init__(self, streaming: bool, output_limit: int) -> None:
        self.streaming = streaming
        self.limit = output_limit
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = {"stdout": False, "stderr": False}
        self.chunks: "queue.Queue[Any]" = queue.Queue(maxsize=64)
        self.abandoned = threading.Event()  # nobody reads any more: cancel, never block
        self.done = threading.Event()
        self.exit_error: Optional[Tuple[int, str]] = None

    def output(self, stream: str, data: bytes) -> int:
        if self.abandoned.is_set() or _shutting_down:
            return 1
        if self.streaming:
            while True:
                try:
                    self.chunks.put(Chunk(stream, data), timeout=0.1)
                    return 0
                except queue.Full:
                    if self.abandoned.is_set() or _shutting_down:
                        return 1
        buf = self.stdout if stream == "stdout" else self.stderr
        room = self.limit - len(buf)
        if len(data) > room:
            buf += data[: max(room, 0)]
            self.truncated[stream] = True
            return 1  # the library kills the process group (status.cancelled)
        buf += data
        return 0

    def exited(self, error: Optional[Tuple[int, str]]) -> None:
        self.exit_error = error
        self.done.set()
        if self.streaming:
            while not (self.abandoned.is_set() or _shutting_down):
                try:
                    self.chunks.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue


_states: Dict[int, _ExecState] = {}
_states_lock = threading.Lock()
_keys = itertools.count(1)
_shutting_down = False


def _state(user_data: Optional[int]) -> Optional[_ExecState]:
    with _states_lock:
        return _states.get(user_data or 0)


def _output(stream: str, data: Optional[int], length: int, user_data: Optional[int]) -> int:
    try:
        state = _state(user_data)
        if state is None:
            return 1
        return state.output(stream, ctypes.string_at(data, length) if length else b"")
    except BaseException:  # never let an exception unwind into the library
        return 1


@_ffi.OUTPUT_CB
def _on_stdout(data: Optional[int], length: int, user_data: Optional[int]) -> int:
    return _output("stdout", data, length, user_data)


@_ffi.OUTPUT_CB
def _on_stderr(data: Optional[int], length: int, user_data: Optional[int]) -> int:
    return _output("stderr", data, length, user_data)


@_ffi.EXIT_CB
def _on_exit(status: Any, error: Optional[int], user_data: Optional[int]) -> None:
    try:
        state = _state(user_data)
        if state is None:
            return
        failure = None
        if error:
            lib = _lib()
            message = lib.boxlite_error_message(error)
            failure = (int(lib.boxlite_error_code(error)), message.decode("utf-8", "replace") if message else "")
        state.exited(failure)
    except BaseException:
        pass


@_ffi.FREE_CB
def _on_free(user_data: Optional[int]) -> None:
    try:
        with _states_lock:
            _states.pop(user_data or 0, None)
    except BaseException:
        pass


# id(execution) -> execution, for shutdown; weak, so that the garbage collector may take them
_live_executions: "weakref.WeakValueDictionary[int, Execution]" = weakref.WeakValueDictionary()


@atexit.register
def _shutdown() -> None:
    """Kills what still runs and waits (briefly) for the library's callbacks to end, so that
    no library thread calls into a finalising interpreter."""
    global _shutting_down
    _shutting_down = True
    for execution in list(_live_executions.values()):
        try:
            execution.kill()
        except Exception:
            pass
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        with _states_lock:
            if not _states:
                break
        time.sleep(0.01)


def _command(
    cmd: Union[str, Sequence[str]],
    args: Sequence[str],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    user: Optional[str],
    timeout: Optional[float],
    tty: Optional[Tuple[int, int]],
    output_limit: Optional[int] = None,
    stdin: bool = True,
) -> _Handle:
    lib = _lib()
    if isinstance(cmd, (list, tuple)):
        if not cmd:
            raise errors.InvalidArgument("an empty command")
        argv = [*cmd, *args]
    else:
        argv = [cmd, *args]
    handle = _Handle(_new(lib.boxlite_command_new, _cstr(argv[0])), "boxlite_command_free", "command")
    try:
        with handle.use() as ptr:
            for arg in argv[1:]:
                errors.check(lib.boxlite_command_add_arg(ptr, _cstr(arg)))
            for name, value in (env or {}).items():
                errors.check(lib.boxlite_command_set_env(ptr, _cstr(name), _cstr(value)))
            if cwd is not None:
                errors.check(lib.boxlite_command_set_working_dir(ptr, _cstr(cwd)))
            if user is not None:
                errors.check(lib.boxlite_command_set_user(ptr, _cstr(str(user))))
            if timeout is not None:
                if timeout <= 0:
                    raise errors.InvalidArgument(f"timeout {timeout!r}: a number of seconds above 0")
                errors.check(lib.boxlite_command_set_timeout_ms(ptr, max(1, math.ceil(timeout * 1000))))
            if tty is not None:
                errors.check(lib.boxlite_command_set_tty(ptr, tty[0], tty[1]))
            if output_limit is not None:
                errors.check(lib.boxlite_command_set_output_limit(ptr, output_limit))
            if not stdin:
                errors.check(lib.boxlite_command_set_no_stdin(ptr))
    except BaseException:
        handle.close()
        raise
    return handle


class Stdin:
    """The process's stdin, a writable: write() blocks until the box took the bytes."""

    def __init__(self, execution: "Execution") -> None:
        self._execution = execution
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Union[bytes, bytearray, memoryview, str]) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        if self.closed:
            raise ValueError("write to a closed stdin")
        with self._execution._handle.use() as ptr:
            errors.check(_lib().boxlite_execution_write_stdin(ptr, data, len(data)))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._execution._handle.use() as ptr:
            errors.check(_lib().boxlite_execution_close_stdin(ptr))

    def __enter__(self) -> "Stdin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Execution:
    """A process started in a box (`Box.start_exec`, `Box.stream`).

    Iterate over it for its output as Chunks (started with streaming); `wait()` for its
    ExecResult; `stdin` to feed it; `kill()`, `signal(n)`. close() (or `with` exit) kills it
    if it still runs, then frees the handle."""

    def __init__(self, ptr: int, state: _ExecState, key: int) -> None:
        self._handle = _Handle(ptr, "boxlite_execution_free", "execution")
        self._state = state
        self._key = key
        self._result: Optional[ExecResult] = None
        self.stdin = Stdin(self)
        lib = _lib()
        self.id: str = _opt_str(lib.boxlite_execution_id(ptr)) or ""
        pid = ctypes.c_uint32()
        errors.check(lib.boxlite_execution_pid(ctypes.byref(pid), ptr))
        self.pid: int = pid.value
        _live_executions[id(self)] = self

    # output ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        if not self._state.streaming:
            raise errors.InvalidState("this execution collects its output (start it with stream=True to iterate)")
        while True:
            try:
                item = self._state.chunks.get(timeout=0.2)
            except queue.Empty:
                if self._handle.closed:
                    return
                continue
            if item is _END:
                break
            yield item
        self.wait()

    @property
    def running(self) -> bool:
        return self._result is None and not self._state.done.is_set()

    def _make_result(self, status: _ffi.ExitStatus) -> ExecResult:
        s = self._state
        return ExecResult(
            exit_code=status.exit_code,
            stdout=bytes(s.stdout),
            stderr=bytes(s.stderr),
            signal=status.signal,
            timed_out=bool(status.timed_out),
            cancelled=bool(status.cancelled) and not any(s.truncated.values()),
            stdout_truncated=s.truncated["stdout"],
            stderr_truncated=s.truncated["stderr"],
        )

    def poll(self, wait_ms: int = 0) -> Optional[ExecResult]:
        """The result if the process has ended within `wait_ms`, else None (a bounded wait)."""
        if self._result is not None:
            return self._result
        status = _ffi.ExitStatus(size=ctypes.sizeof(_ffi.ExitStatus))
        with self._handle.use() as ptr:
            exc = errors.take(_lib().boxlite_execution_wait_timeout(ctypes.byref(status), ptr, wait_ms))
        if isinstance(exc, errors.StillRunning):
            return None
        if exc is not None:
            exc.stdout = bytes(self._state.stdout)  # type: ignore[attr-defined]
            exc.stderr = bytes(self._state.stderr)  # type: ignore[attr-defined]
            raise exc
        self._result = self._make_result(status)
        _live_executions.pop(id(self), None)
        return self._result

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Waits for the end. After `timeout` seconds raises ExecTimeout with the output so
        far (the process goes on: kill() it or wait again). Errors that ended the execution
        (VmExited...) are raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ms = _WAIT_SLICE_MS
            if deadline is not None:
                slice_ms = max(0, min(slice_ms, int((deadline - time.monotonic()) * 1000)))
            result = self.poll(slice_ms)
            if result is not None:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise ExecTimeout(
                    f"the process was still running after {timeout} s", bytes(self._state.stdout), bytes(self._state.stderr)
                )

    # control --------------------------------------------------------------------------
    def kill(self) -> None:
        """Kills the process and its process group (SIGKILL)."""
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_execution_kill(ptr))

    def signal(self, signum: int) -> None:
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_execution_signal(ptr, int(signum)))

    def resize(self, rows: int, cols: int) -> None:
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_execution_resize(ptr, rows, cols))

    def close(self) -> None:
        """Kills the process if it still runs, then frees the handle. Idempotent."""
        if self._handle.closed:
            return
        self._state.abandoned.set()
        if self.running:
            try:
                self.kill()
            except Exception:
                pass
        _live_executions.pop(id(self), None)
        self._handle.close()

    def __enter__(self) -> "Execution":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# --- boxes -----------------------------------------------------------------------------------
class Box:
    """A box (a micro-VM). close() frees the handle (the box stays in its runtime's home;
    with `auto_remove` it is removed). The VM stops once no handle holds it."""

    def __init__(self, ptr: int, runtime: Optional["Runtime"] = None, auto_remove: bool = False) -> None:
        self._handle = _Handle(ptr, "boxlite_box_free", "box")
        self._auto_remove = auto_remove
        lib = _lib()
        self.id: str = _opt_str(lib.boxlite_box_id(ptr)) or ""
        self.name: Optional[str] = _opt_str(lib.boxlite_box_name(ptr))
        self.image: Optional[str] = _opt_str(lib.boxlite_box_image(ptr))
        self.home: Optional[str] = runtime.home if runtime is not None else None

    def __repr__(self) -> str:
        return f"<boxlite.Box id={self.id} name={self.name!r}>"

    @property
    def status(self) -> str:
        """"configured", "running", "stopped" or "removed"."""
        out = ctypes.c_uint32()
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_box_status(ctypes.byref(out), ptr))
        return _STATUSES.get(out.value, str(out.value))

    @property
    def stop_reason(self) -> Optional[str]:
        out = ctypes.c_void_p()
        lib = _lib()
        with self._handle.use() as ptr:
            errors.check(lib.boxlite_box_stop_reason(ctypes.byref(out), ptr))
        if not out.value:
            return None
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            lib.boxlite_string_free(out.value)

    def _call(self, name: str, *args: Any) -> None:
        fn = getattr(_lib(), name)
        with self._handle.use() as ptr:
            errors.check(fn(ptr, *args))

    def start(self) -> None:
        """Boots the VM (no-op if running). Blocks until its agent answers."""
        self._call("boxlite_box_start")

    def stop(self) -> None:
        self._call("boxlite_box_stop")

    def restart(self) -> None:
        self._call("boxlite_box_restart")

    def remove(self, force: bool = True) -> None:
        """Removes the box and its files (`force`: stop it first if running)."""
        self._call("boxlite_box_remove", _ffi.BOXLITE_REMOVE_FORCE if force else 0)

    def metrics(self) -> Dict[str, Any]:
        out = _ffi.BoxMetrics(size=ctypes.sizeof(_ffi.BoxMetrics))
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_box_metrics(ctypes.byref(out), ptr))
        return {name: getattr(out, name) for name, _ in _ffi.BoxMetrics._fields_ if name != "size"}

    # executions -----------------------------------------------------------------------
    def start_exec(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        tty: Optional[Tuple[int, int]] = None,
        stream: bool = False,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        stdin: bool = True,
    ) -> Execution:
        """Starts a process and returns its Execution (stdin open). `timeout` (seconds):
        the library kills its process group then. `stream`: its output is iterated as
        Chunks, else collected (up to `output_limit` bytes per stream; past it the process
        is killed and the result says which stream was truncated). `stdin=False`: the
        process reads end of file at once and there is no stdin to write; the box then
        answers only once the process has finished (at most ~250 ms), so that a quick one
        costs a single round trip."""
        lib = _lib()
        command = _command(cmd, args, env, cwd, user, timeout, tty, stdin=stdin)
        state = _ExecState(stream, output_limit)
        key = next(_keys)
        with _states_lock:
            _states[key] = state
        callbacks = _ffi.ExecCallbacks(
            version=_ffi.BOXLITE_EXEC_CALLBACKS_VERSION,
            on_stdout=_on_stdout,
            on_stderr=_on_stderr,
            on_exit=_on_exit,
            user_data=key,
            user_data_free=_on_free,
        )
        out = ctypes.c_void_p()
        try:
            with self._handle.use() as ptr, command.use() as cmd_ptr:
                # user_data_free runs on every path (success or error): it unregisters `key`.
                errors.check(lib.boxlite_box_exec(ctypes.byref(out), ptr, cmd_ptr, ctypes.byref(callbacks)))
        finally:
            command.close()
        assert out.value
        return Execution(out.value, state, key)

    def exec(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        check: bool = False,
        tty: Optional[Tuple[int, int]] = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Runs a process to the end: its ExecResult (stdout and stderr apart, as bytes).
        `input` is written to its stdin, which is then closed. With `check`, a timeout
        raises ExecTimeout (with the partial output) and a non-zero exit ProcessExitError."""
        stdin = input is not None
        with self.start_exec(
            cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout, tty=tty, output_limit=output_limit, stdin=stdin
        ) as ex:
            if stdin:
                _feed(ex, input)
            result = ex.wait()
        return result.check() if check else result

    def stream(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        tty: Optional[Tuple[int, int]] = None,
    ) -> Execution:
        """Starts a process whose output is iterated: `for chunk in box.stream(...)`.
        `input` is written (from a thread) and stdin closed. The iteration ends with the
        process (raising the error that ended it, if any); `.wait()` then gives the result."""
        ex = self.start_exec(cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout, tty=tty, stream=True)
        if input is None:
            _feed(ex, None)
        else:
            threading.Thread(target=_feed, args=(ex, input), daemon=True, name="boxlite-stdin").start()
        return ex

    # network, files -------------------------------------------------------------------------
    def forwarded_port(self, guest_port: int, protocol: str = "tcp") -> int:
        """The host port bound for the running box's forward of `guest_port`."""
        out = ctypes.c_uint16()
        with self._handle.use() as ptr:
            errors.check(_lib().boxlite_box_forwarded_port(ctypes.byref(out), ptr, _protocol(protocol), guest_port))
        return out.value

    def port_forwards(self) -> List[PortForwardInfo]:
        lib = _lib()
        out = ctypes.c_void_p()
        with self._handle.use() as ptr:
            errors.check(lib.boxlite_box_port_forwards(ctypes.byref(out), ptr))
        try:
            n = ctypes.c_size_t()
            errors.check(lib.boxlite_port_forward_list_len(ctypes.byref(n), out))
            forwards = []
            for i in range(n.value):
                pf = _ffi.PortForward(size=ctypes.sizeof(_ffi.PortForward))
                errors.check(lib.boxlite_port_forward_list_get(ctypes.byref(pf), out, i))
                proto = "udp" if pf.protocol == _ffi.BOXLITE_PROTOCOL_UDP else "tcp"
                forwards.append(PortForwardInfo(proto, _opt_str(pf.host_addr) or "", pf.host_port, pf.guest_port))
            return forwards
        finally:
            lib.boxlite_port_forward_list_free(out)

    def copy_in(self, host_src: Union[str, os.PathLike], guest_dest: str) -> None:
        """Copies a host file or tree into the box (docker cp's rules; boots a stopped box)."""
        fn = _require("boxlite_box_copy_in")
        with self._handle.use() as ptr:
            errors.check(fn(ptr, _cstr(host_src), _cstr(guest_dest), 0))

    def copy_out(self, guest_src: str, host_dest: Union[str, os.PathLike]) -> None:
        """Copies a file or tree out of the box to the host (docker cp's rules)."""
        fn = _require("boxlite_box_copy_out")
        with self._handle.use() as ptr:
            errors.check(fn(ptr, _cstr(guest_src), _cstr(host_dest), 0))

    # lifetime ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        """Frees the handle (removing the box first if it was created with auto_remove)."""
        if self._handle.closed:
            return
        if self._auto_remove:
            self._auto_remove = False
            try:
                self.remove(force=True)
            finally:
                self._handle.close()
        else:
            self._handle.close()

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._auto_remove = False  # no blocking removal from the garbage collector
            self._handle.close()
        except Exception:
            pass


def _feed(ex: Execution, data: Optional[Union[bytes, str]]) -> None:
    try:
        if data:
            ex.stdin.write(data)
        ex.stdin.close()
    except BoxliteError:
        pass  # the process ended (or never read): its result says how


# --- runtime -----------------------------------------------------------------------------------
class Runtime:
    """The boxes of one home directory (default $BOXLITE_HOME or ~/.boxlite).

    `engine`: "auto" (default), "krun" or "qemu". Boxes and executions keep what they need
    alive, so the runtime may be closed before them; the home stays locked until the last
    of them is closed."""

    def __init__(self, home: Optional[Union[str, os.PathLike]] = None, engine: Optional[str] = None) -> None:
        lib = _lib()
        options = _Handle(_new(lib.boxlite_runtime_options_new), "boxlite_runtime_options_free", "runtime options")
        try:
            with options.use() as opt:
                if home is not None:
                    errors.check(lib.boxlite_runtime_options_set_home(opt, _cstr(home)))
                if engine is not None:
                    if engine not in _ENGINES:
                        raise errors.InvalidArgument(f"unknown engine {engine!r}: use one of {', '.join(_ENGINES)}")
                    errors.check(lib.boxlite_runtime_options_set_engine(opt, _ENGINES[engine]))
                ptr = _new(lib.boxlite_runtime_new, opt)
        finally:
            options.close()
        self._handle = _Handle(ptr, "boxlite_runtime_free", "runtime")
        self.home: str = _opt_str(lib.boxlite_runtime_home(ptr)) or ""

    def __repr__(self) -> str:
        return f"<boxlite.Runtime home={self.home!r}>"

    def create_box(
        self,
        image: Optional[str] = None,
        root_disk: Optional[Union[str, os.PathLike]] = None,
        *,
        root_disk_read_only: bool = False,
        name: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_gib: Optional[int] = None,
        detached: bool = False,
        network: Optional[str] = None,
        allow: Sequence[str] = (),
        allow_host_loopback: bool = False,
        ports: Sequence[Union[Port, int, str, Tuple[Any, ...]]] = (),
        dns: Sequence[str] = (),
        volumes: Sequence[Union[Volume, Tuple[Any, ...]]] = (),
        auto_remove: bool = False,
    ) -> Box:
        """Creates a box (nothing boots until start() or the first exec). Every option is
        checked here; a bad one raises its error (InvalidArgument...) with the library's
        message. `network`: "none", "outbound" (default) or "allow_list" (with `allow`
        rules). `ports`: Port(guest, host=0...), 80 (host picks), (8080, 80[, "udp"]) or
        "[ADDR:]8080:80[/udp]". `volumes`: Volume(host, guest, read_only) or (host, guest[, "ro"])."""
        lib = _lib()
        options = _Handle(_new(lib.boxlite_box_options_new), "boxlite_box_options_free", "box options")
        try:
            with options.use() as opt:
                if image is not None:
                    errors.check(lib.boxlite_box_options_set_image(opt, _cstr(image)))
                if root_disk is not None:
                    flags = _ffi.BOXLITE_DISK_READ_ONLY if root_disk_read_only else 0
                    errors.check(lib.boxlite_box_options_set_root_disk(opt, _cstr(root_disk), flags))
                if name is not None:
                    errors.check(lib.boxlite_box_options_set_name(opt, _cstr(name)))
                if cpus is not None:
                    errors.check(lib.boxlite_box_options_set_cpus(opt, cpus))
                if memory_mib is not None:
                    errors.check(lib.boxlite_box_options_set_memory_mib(opt, memory_mib))
                if disk_size_gib is not None:
                    errors.check(lib.boxlite_box_options_set_disk_size_gib(opt, disk_size_gib))
                if detached:
                    errors.check(lib.boxlite_box_options_set_detached(opt, True))
                if network is not None:
                    mode = _NETWORKS.get(network) if isinstance(network, str) else network
                    if mode is None:
                        raise errors.InvalidArgument(f"unknown network mode {network!r}: use 'none', 'outbound' or 'allow_list'")
                    errors.check(lib.boxlite_box_options_set_network(opt, mode))
                for rule in allow:
                    errors.check(lib.boxlite_box_options_add_network_allow(opt, _cstr(rule)))
                if allow_host_loopback:
                    errors.check(lib.boxlite_box_options_set_allow_host_loopback(opt, True))
                for spec in ports:
                    p = _port(spec)
                    addr = _cstr(p.host_addr) if p.host_addr else None
                    errors.check(lib.boxlite_box_options_add_port_forward(opt, _protocol(p.protocol), addr, p.host, p.guest))
                if dns:
                    add_dns = _require("boxlite_box_options_add_dns_server")
                    for server in dns:
                        errors.check(add_dns(opt, _cstr(server)))
                if volumes:
                    add_volume = _require("boxlite_box_options_add_volume")
                    for spec in volumes:
                        v = _volume(spec)
                        flags = _ffi.BOXLITE_VOLUME_READ_ONLY if v.read_only else 0
                        errors.check(add_volume(opt, _cstr(v.host), _cstr(v.guest), flags))
                with self._handle.use() as rt:
                    ptr = _new(lib.boxlite_box_create, rt, opt)
        finally:
            options.close()
        return Box(ptr, self, auto_remove)

    def get_box(self, id_or_name: str) -> Box:
        """A new handle to a box of this home, by id or name (NotFound otherwise)."""
        with self._handle.use() as rt:
            ptr = _new(_lib().boxlite_runtime_get_box, rt, _cstr(id_or_name))
        return Box(ptr, self)

    def list_boxes(self) -> List[Box]:
        """Handles to every box of this home, oldest first (close them)."""
        lib = _lib()
        with self._handle.use() as rt:
            lst = _new(lib.boxlite_runtime_list_boxes, rt)
        try:
            n = ctypes.c_size_t()
            errors.check(lib.boxlite_box_list_len(ctypes.byref(n), lst))
            return [Box(_new(lib.boxlite_box_list_get, lst, i), self) for i in range(n.value)]
        finally:
            lib.boxlite_box_list_free(lst)

    # images -----------------------------------------------------------------------------
    def _digest_call(self, fn: Any, *args: Any) -> str:
        out = ctypes.c_void_p()
        with self._handle.use() as rt:
            errors.check(fn(ctypes.byref(out), rt, *args))
        try:
            return ctypes.string_at(out.value).decode() if out.value else ""
        finally:
            if out.value:
                _lib().boxlite_string_free(out.value)

    def pull_image(self, reference: str) -> str:
        """Pulls `name[:tag][@digest]` into this home's cache; returns the manifest digest."""
        return self._digest_call(_require("boxlite_runtime_pull_image"), _cstr(reference), None, None)

    def import_image(self, layout_dir: Union[str, os.PathLike], name: str, tag: Optional[str] = None) -> str:
        """Imports an OCI image layout directory as `name` (`tag` picks the layout's image;
        None takes its only one); returns the manifest digest."""
        fn = _require("boxlite_runtime_import_image")
        return self._digest_call(fn, _cstr(layout_dir), None if tag is None else _cstr(tag), _cstr(name))

    def import_image_archive(self, archive: Union[str, os.PathLike], name: str, tag: Optional[str] = None) -> str:
        """As import_image, from a tar of an OCI layout or a `docker save` archive."""
        fn = _require("boxlite_runtime_import_image_archive")
        return self._digest_call(fn, _cstr(archive), None if tag is None else _cstr(tag), _cstr(name))

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        """Frees the runtime handle; boxes still open keep working."""
        self._handle.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._handle.close()
        except Exception:
            pass
