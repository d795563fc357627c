"""Exceptions: one class per BOXLITE_ERROR_* code, all subclasses of BoxliteError."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

from . import _ffi

if TYPE_CHECKING:
    from ._core import ExecResult


class BoxliteError(Exception):
    """An error the library returned: `code` (a BOXLITE_ERROR_* value) and its message."""

    code: int = 0

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} (boxlite error {self.code})"


class InvalidArgument(BoxliteError, ValueError):
    code = _ffi.BOXLITE_ERROR_INVALID_ARGUMENT


class NotFound(BoxliteError, LookupError):
    code = _ffi.BOXLITE_ERROR_NOT_FOUND


class InvalidState(BoxliteError):
    code = _ffi.BOXLITE_ERROR_INVALID_STATE


class EngineUnavailable(BoxliteError):
    code = _ffi.BOXLITE_ERROR_ENGINE_UNAVAILABLE


class HelperNotFound(BoxliteError):
    code = _ffi.BOXLITE_ERROR_HELPER_NOT_FOUND


class BootFailed(BoxliteError):
    code = _ffi.BOXLITE_ERROR_BOOT_FAILED


class VmExited(BoxliteError):
    code = _ffi.BOXLITE_ERROR_VM_EXITED


class AgentError(BoxliteError):
    code = _ffi.BOXLITE_ERROR_AGENT


class ProgramNotFound(BoxliteError):
    code = _ffi.BOXLITE_ERROR_PROGRAM_NOT_FOUND


class NotExecutable(BoxliteError):
    code = _ffi.BOXLITE_ERROR_NOT_EXECUTABLE


class WorkingDirNotFound(BoxliteError):
    code = _ffi.BOXLITE_ERROR_WORKING_DIR_NOT_FOUND


class UserNotFound(BoxliteError):
    code = _ffi.BOXLITE_ERROR_USER_NOT_FOUND


class ExecFailed(BoxliteError):
    code = _ffi.BOXLITE_ERROR_EXEC_FAILED


class HomeLocked(BoxliteError):
    code = _ffi.BOXLITE_ERROR_HOME_LOCKED


class IOError_(BoxliteError, OSError):
    """BOXLITE_ERROR_IO (named with a trailing underscore: IOError is a builtin)."""

    code = _ffi.BOXLITE_ERROR_IO


class ImageError(BoxliteError):
    code = _ffi.BOXLITE_ERROR_IMAGE


class Unauthorized(BoxliteError):
    code = _ffi.BOXLITE_ERROR_UNAUTHORIZED


class PullFailed(BoxliteError):
    code = _ffi.BOXLITE_ERROR_PULL


class Cancelled(BoxliteError):
    code = _ffi.BOXLITE_ERROR_CANCELLED


class StillRunning(BoxliteError):
    code = _ffi.BOXLITE_ERROR_STILL_RUNNING


class InternalError(BoxliteError):
    code = _ffi.BOXLITE_ERROR_INTERNAL


# BOXLITE_ERROR_* name (without the prefix) -> class; the header test checks it covers
# every BOXLITE_ERROR_* constant of the header.
BY_NAME: Dict[str, Type[BoxliteError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "INVALID_STATE": InvalidState,
    "ENGINE_UNAVAILABLE": EngineUnavailable,
    "HELPER_NOT_FOUND": HelperNotFound,
    "BOOT_FAILED": BootFailed,
    "VM_EXITED": VmExited,
    "AGENT": AgentError,
    "PROGRAM_NOT_FOUND": ProgramNotFound,
    "NOT_EXECUTABLE": NotExecutable,
    "WORKING_DIR_NOT_FOUND": WorkingDirNotFound,
    "USER_NOT_FOUND": UserNotFound,
    "EXEC_FAILED": ExecFailed,
    "HOME_LOCKED": HomeLocked,
    "IO": IOError_,
    "IMAGE": ImageError,
    "UNAUTHORIZED": Unauthorized,
    "PULL": PullFailed,
    "CANCELLED": Cancelled,
    "STILL_RUNNING": StillRunning,
    "INTERNAL": InternalError,
}
BY_CODE: Dict[int, Type[BoxliteError]] = {cls.code: cls for cls in BY_NAME.values()}


def from_code(code: int, message: str) -> BoxliteError:
    cls = BY_CODE.get(code)
    return cls(message) if cls else BoxliteError(message, code)


def take(error: Optional[int]) -> Optional[BoxliteError]:
    """Turns an owned boxlite_error_t * into an exception (freeing it); None for NULL."""
    if not error:
        return None
    lib = _ffi.lib()
    try:
        code = int(lib.boxlite_error_code(error))
        raw = lib.boxlite_error_message(error)
        message = raw.decode("utf-8", "replace") if raw else ""
    finally:
        lib.boxlite_error_free(error)
    return from_code(code, message)


def check(error: Optional[int]) -> None:
    exc = take(error)
    if exc is not None:
        raise exc


class ExecTimeout(TimeoutError):
    """An execution outlived its timeout. `stdout`/`stderr` hold the output so far.

    From `exec(..., timeout=, check=True)`: the library killed the process group and
    `result` is the finished ExecResult (`timed_out` set). From `Execution.wait(timeout=)`:
    the process may still be running (`result` is None); kill it or wait again."""

    def __init__(self, message: str, stdout: bytes, stderr: bytes, result: "Optional[ExecResult]" = None) -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.result = result


class ProcessExitError(Exception):
    """`exec(..., check=True)` of a process that exited non-zero (or by a signal)."""

    def __init__(self, result: "ExecResult") -> None:
        super().__init__(f"the process exited with code {result.exit_code}" + (f" (signal {result.signal})" if result.signal else ""))
        self.result = result
        self.stdout = result.stdout
        self.stderr = result.stderr
