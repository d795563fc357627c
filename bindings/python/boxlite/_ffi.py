"""ctypes declarations of include/boxlite.h (checked against the header by
tests/test_header.py: names, argument counts and types, struct layouts, constants).

Every function of the header is declared here; none is left out. Opaque handles are
`c_void_p`; a function returning `boxlite_error_t *` is declared with ERROR (c_void_p:
an int address or None)."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_bool, c_char_p, c_double, c_int32, c_size_t, c_uint16, c_uint32, c_uint64, c_void_p
from typing import Any, Dict, List, Tuple

from . import _loader

# --- #defines of the header (integers) -------------------------------------------------
BOXLITE_VERSION_MAJOR = 0
BOXLITE_VERSION_MINOR = 2
BOXLITE_VERSION_PATCH = 0
BOXLITE_REMOVE_FORCE = 1
BOXLITE_DISK_READ_ONLY = 1
BOXLITE_VOLUME_READ_ONLY = 1
BOXLITE_EXEC_CALLBACKS_VERSION = 1
BOXLITE_OUTPUT_STDOUT_TRUNCATED = 1
BOXLITE_OUTPUT_STDERR_TRUNCATED = 2
BOXLITE_BOX_CONFIGURED = 0
BOXLITE_BOX_RUNNING = 1
BOXLITE_BOX_STOPPED = 2
BOXLITE_BOX_REMOVED = 3
BOXLITE_ERROR_INVALID_ARGUMENT = 1
BOXLITE_ERROR_NOT_FOUND = 2
BOXLITE_ERROR_INVALID_STATE = 3
BOXLITE_ERROR_ENGINE_UNAVAILABLE = 4
BOXLITE_ERROR_HELPER_NOT_FOUND = 5
BOXLITE_ERROR_BOOT_FAILED = 6
BOXLITE_ERROR_VM_EXITED = 7
BOXLITE_ERROR_AGENT = 8
BOXLITE_ERROR_PROGRAM_NOT_FOUND = 9
BOXLITE_ERROR_NOT_EXECUTABLE = 10
BOXLITE_ERROR_WORKING_DIR_NOT_FOUND = 11
BOXLITE_ERROR_USER_NOT_FOUND = 12
BOXLITE_ERROR_EXEC_FAILED = 13
BOXLITE_ERROR_HOME_LOCKED = 14
BOXLITE_ERROR_IO = 15
BOXLITE_ERROR_IMAGE = 16
BOXLITE_ERROR_UNAUTHORIZED = 17
BOXLITE_ERROR_PULL = 18
BOXLITE_ERROR_CANCELLED = 19
BOXLITE_ERROR_STILL_RUNNING = 20
BOXLITE_ERROR_INTERNAL = 99
BOXLITE_LOG_ERROR = 1
BOXLITE_LOG_WARN = 2
BOXLITE_LOG_INFO = 3
BOXLITE_LOG_DEBUG = 4
BOXLITE_LOG_TRACE = 5
BOXLITE_NETWORK_NONE = 0
BOXLITE_NETWORK_OUTBOUND = 1
BOXLITE_NETWORK_ALLOW_LIST = 2
BOXLITE_PROTOCOL_TCP = 0
BOXLITE_PROTOCOL_UDP = 1
BOXLITE_ENGINE_AUTO = 0
BOXLITE_ENGINE_KRUN = 1
BOXLITE_ENGINE_QEMU = 2
BOXLITE_VERSION_NUMBER = BOXLITE_VERSION_MAJOR * 1000000 + BOXLITE_VERSION_MINOR * 1000 + BOXLITE_VERSION_PATCH

ERROR = c_void_p  # boxlite_error_t *: NULL on success


# --- structs ---------------------------------------------------------------------------
class ExitStatus(ctypes.Structure):
    """boxlite_exit_status_t (sized: `size` first)."""

    _fields_ = [("size", c_uint32), ("exit_code", c_int32), ("signal", c_int32), ("timed_out", c_bool), ("cancelled", c_bool)]


class BoxMetrics(ctypes.Structure):
    """boxlite_box_metrics_t (sized)."""

    _fields_ = [
        ("size", c_uint32),
        ("boots", c_uint64),
        ("last_boot_ms", c_double),
        ("executions_started", c_uint64),
        ("executions_failed", c_uint64),
        ("bytes_out", c_uint64),
        ("bytes_in", c_uint64),
    ]


class GuestStats(ctypes.Structure):
    """boxlite_guest_stats_t (sized)."""

    _fields_ = [
        ("size", c_uint32),
        ("cpu_busy_ms", c_uint64),
        ("memory_total_kib", c_uint64),
        ("memory_available_kib", c_uint64),
        ("uptime_us", c_uint64),
    ]


class PortForward(ctypes.Structure):
    """boxlite_port_forward_t (sized)."""

    _fields_ = [("size", c_uint32), ("protocol", c_uint32), ("host_addr", c_char_p), ("host_port", c_uint16), ("guest_port", c_uint16)]


class NetworkStats(ctypes.Structure):
    """boxlite_network_stats_t (sized)."""

    _fields_ = [
        ("size", c_uint32),
        ("bytes_out", c_uint64),
        ("bytes_in", c_uint64),
        ("tcp_connections", c_uint64),
        ("forwarded_connections", c_uint64),
        ("udp_flows", c_uint64),
        ("denied", c_uint64),
        ("dns_queries", c_uint64),
        ("dns_denied", c_uint64),
    ]


class RuntimeMetrics(ctypes.Structure):
    """boxlite_runtime_metrics_t (sized)."""

    _fields_ = [
        ("size", c_uint32),
        ("boxes_created", c_uint64),
        ("boxes_running", c_uint64),
        ("boots", c_uint64),
        ("boot_failures", c_uint64),
        ("executions", c_uint64),
    ]


# Callback types (called on library threads; ctypes takes the GIL).
OUTPUT_CB = ctypes.CFUNCTYPE(c_int32, c_void_p, c_size_t, c_void_p)
EXIT_CB = ctypes.CFUNCTYPE(None, POINTER(ExitStatus), c_void_p, c_void_p)
FREE_CB = ctypes.CFUNCTYPE(None, c_void_p)
PULL_PROGRESS_CB = ctypes.CFUNCTYPE(c_int32, c_char_p, c_uint64, c_uint64, c_void_p)
LOG_CB = ctypes.CFUNCTYPE(None, c_uint32, c_char_p, c_char_p, c_void_p)


class ExecCallbacks(ctypes.Structure):
    """boxlite_exec_callbacks_t (versioned: BOXLITE_EXEC_CALLBACKS_VERSION)."""

    _fields_ = [
        ("version", c_uint32),
        ("on_stdout", OUTPUT_CB),
        ("on_stderr", OUTPUT_CB),
        ("on_exit", EXIT_CB),
        ("user_data", c_void_p),
        ("user_data_free", FREE_CB),
    ]


# Struct name in the header -> ctypes class (the header test compares their fields).
STRUCTS: Dict[str, Any] = {
    "boxlite_exit_status_t": ExitStatus,
    "boxlite_box_metrics_t": BoxMetrics,
    "boxlite_guest_stats_t": GuestStats,
    "boxlite_port_forward_t": PortForward,
    "boxlite_network_stats_t": NetworkStats,
    "boxlite_runtime_metrics_t": RuntimeMetrics,
    "boxlite_exec_callbacks_t": ExecCallbacks,
}
CALLBACKS: Dict[str, Any] = {
    "boxlite_output_cb": OUTPUT_CB,
    "boxlite_exit_cb": EXIT_CB,
    "boxlite_user_data_free_cb": FREE_CB,
    "boxlite_pull_progress_cb": PULL_PROGRESS_CB,
    "boxlite_log_cb": LOG_CB,
}

# --- functions: name -> (restype, argtypes) ---------------------------------------------
FUNCTIONS: Dict[str, Tuple[Any, List[Any]]] = {
    "boxlite_version": (c_char_p, []),
    "boxlite_version_number": (c_uint32, []),
    "boxlite_string_free": (None, [c_void_p]),
    "boxlite_box_options_new": (ERROR, [POINTER(c_void_p)]),
    "boxlite_box_options_set_name": (ERROR, [c_void_p, c_char_p]),
    "boxlite_box_options_set_cpus": (ERROR, [c_void_p, c_uint32]),
    "boxlite_box_options_set_memory_mib": (ERROR, [c_void_p, c_uint32]),
    "boxlite_box_options_set_image": (ERROR, [c_void_p, c_char_p]),
    "boxlite_box_options_set_detached": (ERROR, [c_void_p, c_bool]),
    "boxlite_box_options_set_disk_size_gib": (ERROR, [c_void_p, c_uint32]),
    "boxlite_box_options_set_root_disk": (ERROR, [c_void_p, c_char_p, c_uint32]),
    "boxlite_box_options_add_volume": (ERROR, [c_void_p, c_char_p, c_char_p, c_uint32]),
    "boxlite_box_options_free": (None, [c_void_p]),
    "boxlite_box_create": (ERROR, [POINTER(c_void_p), c_void_p, c_void_p]),
    "boxlite_runtime_get_box": (ERROR, [POINTER(c_void_p), c_void_p, c_char_p]),
    "boxlite_runtime_list_boxes": (ERROR, [POINTER(c_void_p), c_void_p]),
    "boxlite_box_list_len": (ERROR, [POINTER(c_size_t), c_void_p]),
    "boxlite_box_list_get": (ERROR, [POINTER(c_void_p), c_void_p, c_size_t]),
    "boxlite_box_list_invalid_len": (ERROR, [POINTER(c_size_t), c_void_p]),
    "boxlite_box_list_invalid_get": (ERROR, [POINTER(c_char_p), POINTER(c_char_p), POINTER(c_char_p), c_void_p, c_size_t]),
    "boxlite_box_list_free": (None, [c_void_p]),
    "boxlite_box_id": (c_char_p, [c_void_p]),
    "boxlite_box_name": (c_char_p, [c_void_p]),
    "boxlite_box_image": (c_char_p, [c_void_p]),
    "boxlite_box_created_at": (ERROR, [POINTER(c_uint64), c_void_p]),
    "boxlite_box_stop_reason": (ERROR, [POINTER(c_void_p), c_void_p]),
    "boxlite_box_start": (ERROR, [c_void_p]),
    "boxlite_box_stop": (ERROR, [c_void_p]),
    "boxlite_box_restart": (ERROR, [c_void_p]),
    "boxlite_box_remove": (ERROR, [c_void_p, c_uint32]),
    "boxlite_box_free": (None, [c_void_p]),
    "boxlite_box_status": (ERROR, [POINTER(c_uint32), c_void_p]),
    "boxlite_box_metrics": (ERROR, [POINTER(BoxMetrics), c_void_p]),
    "boxlite_box_guest_stats": (ERROR, [POINTER(GuestStats), c_void_p]),
    "boxlite_error_code": (c_int32, [c_void_p]),
    "boxlite_error_message": (c_char_p, [c_void_p]),
    "boxlite_error_free": (None, [c_void_p]),
    "boxlite_command_new": (ERROR, [POINTER(c_void_p), c_char_p]),
    "boxlite_command_add_arg": (ERROR, [c_void_p, c_char_p]),
    "boxlite_command_set_env": (ERROR, [c_void_p, c_char_p, c_char_p]),
    "boxlite_command_set_working_dir": (ERROR, [c_void_p, c_char_p]),
    "boxlite_command_set_user": (ERROR, [c_void_p, c_char_p]),
    "boxlite_command_set_timeout_ms": (ERROR, [c_void_p, c_uint64]),
    "boxlite_command_set_tty": (ERROR, [c_void_p, c_uint16, c_uint16]),
    "boxlite_command_set_output_limit": (ERROR, [c_void_p, c_uint64]),
    "boxlite_command_set_no_stdin": (ERROR, [c_void_p]),
    "boxlite_command_free": (None, [c_void_p]),
    "boxlite_box_exec": (ERROR, [POINTER(c_void_p), c_void_p, c_void_p, POINTER(ExecCallbacks)]),
    "boxlite_execution_write_stdin": (ERROR, [c_void_p, c_char_p, c_size_t]),
    "boxlite_execution_close_stdin": (ERROR, [c_void_p]),
    "boxlite_execution_wait": (ERROR, [POINTER(ExitStatus), c_void_p]),
    "boxlite_execution_wait_timeout": (ERROR, [POINTER(ExitStatus), c_void_p, c_uint64]),
    "boxlite_execution_resize": (ERROR, [c_void_p, c_uint16, c_uint16]),
    "boxlite_execution_id": (c_char_p, [c_void_p]),
    "boxlite_execution_pid": (ERROR, [POINTER(c_uint32), c_void_p]),
    "boxlite_execution_signal": (ERROR, [c_void_p, c_int32]),
    "boxlite_execution_kill": (ERROR, [c_void_p]),
    "boxlite_execution_pause_output": (ERROR, [c_void_p]),
    "boxlite_execution_resume_output": (ERROR, [c_void_p]),
    "boxlite_execution_free": (None, [c_void_p]),
    "boxlite_box_run": (ERROR, [POINTER(c_void_p), c_void_p, c_void_p]),
    "boxlite_output_stdout": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "boxlite_output_stderr": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "boxlite_output_status": (ERROR, [POINTER(ExitStatus), c_void_p]),
    "boxlite_output_truncated": (ERROR, [POINTER(c_uint32), c_void_p]),
    "boxlite_output_free": (None, [c_void_p]),
    "boxlite_box_copy_in": (ERROR, [c_void_p, c_char_p, c_char_p, c_uint32]),
    "boxlite_box_copy_out": (ERROR, [c_void_p, c_char_p, c_char_p, c_uint32]),
    "boxlite_runtime_pull_image": (ERROR, [POINTER(c_void_p), c_void_p, c_char_p, PULL_PROGRESS_CB, c_void_p]),
    "boxlite_runtime_import_image": (ERROR, [POINTER(c_void_p), c_void_p, c_char_p, c_char_p, c_char_p]),
    "boxlite_runtime_import_image_archive": (ERROR, [POINTER(c_void_p), c_void_p, c_char_p, c_char_p, c_char_p]),
    "boxlite_runtime_remove_image": (ERROR, [c_void_p, c_char_p, c_uint32]),
    "boxlite_runtime_list_images": (ERROR, [POINTER(c_void_p), c_void_p]),
    "boxlite_image_list_len": (ERROR, [POINTER(c_size_t), c_void_p]),
    "boxlite_image_list_get": (ERROR, [POINTER(c_char_p), POINTER(c_char_p), POINTER(c_uint64), c_void_p, c_size_t]),
    "boxlite_image_list_free": (None, [c_void_p]),
    "boxlite_log_set_callback": (ERROR, [LOG_CB, c_uint32, c_void_p, FREE_CB]),
    "boxlite_box_options_set_network": (ERROR, [c_void_p, c_uint32]),
    "boxlite_box_options_add_network_allow": (ERROR, [c_void_p, c_char_p]),
    "boxlite_box_options_set_allow_host_loopback": (ERROR, [c_void_p, c_bool]),
    "boxlite_box_options_add_port_forward": (ERROR, [c_void_p, c_uint32, c_char_p, c_uint16, c_uint16]),
    "boxlite_box_options_add_dns_server": (ERROR, [c_void_p, c_char_p]),
    "boxlite_box_forwarded_port": (ERROR, [POINTER(c_uint16), c_void_p, c_uint32, c_uint16]),
    "boxlite_box_port_forwards": (ERROR, [POINTER(c_void_p), c_void_p]),
    "boxlite_port_forward_list_len": (ERROR, [POINTER(c_size_t), c_void_p]),
    "boxlite_port_forward_list_get": (ERROR, [POINTER(PortForward), c_void_p, c_size_t]),
    "boxlite_port_forward_list_free": (None, [c_void_p]),
    "boxlite_box_network_stats": (ERROR, [POINTER(NetworkStats), c_void_p]),
    "boxlite_runtime_options_new": (ERROR, [POINTER(c_void_p)]),
    "boxlite_runtime_options_set_home": (ERROR, [c_void_p, c_char_p]),
    "boxlite_runtime_options_set_engine": (ERROR, [c_void_p, c_uint32]),
    "boxlite_runtime_options_add_insecure_registry": (ERROR, [c_void_p, c_char_p]),
    "boxlite_runtime_options_set_registry_credentials": (ERROR, [c_void_p, c_char_p, c_char_p, c_char_p]),
    "boxlite_runtime_options_set_log_to_home": (ERROR, [c_void_p, c_bool]),
    "boxlite_runtime_options_free": (None, [c_void_p]),
    "boxlite_runtime_new": (ERROR, [POINTER(c_void_p), c_void_p]),
    "boxlite_runtime_free": (None, [c_void_p]),
    "boxlite_runtime_home": (c_char_p, [c_void_p]),
    "boxlite_runtime_metrics": (ERROR, [POINTER(RuntimeMetrics), c_void_p]),
}

# Entry points that a library may lack (it may be older than the header): declared when
# present; the wrappers say which C function is missing otherwise.
OPTIONAL = {"boxlite_box_copy_in", "boxlite_box_copy_out", "boxlite_box_options_add_volume", "boxlite_box_options_add_dns_server"}


def declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in FUNCTIONS.items():
        if not hasattr(lib, name):
            if name in OPTIONAL:
                continue
            raise OSError(f"{lib._name} lacks {name}: it is older than this binding (header {BOXLITE_VERSION_MAJOR}.{BOXLITE_VERSION_MINOR}.{BOXLITE_VERSION_PATCH})")
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None


def lib() -> ctypes.CDLL:
    """The loaded library (loaded and declared on first use)."""
    global _lib, _lib_path
    if _lib is None:
        loaded, path = _loader.load()
        declare(loaded)
        _lib, _lib_path = loaded, path
    return _lib


def lib_path() -> str:
    lib()
    assert _lib_path is not None
    return _lib_path
