"""The ctypes declarations against include/boxlite.h: a header change without a binding
change fails here (and the checker is shown to catch each kind of change)."""

from __future__ import annotations

import ctypes
import re

import pytest

from boxlite import _ffi

from conftest import REPO
from header_check import Header, problems

HEADER = (REPO / "include" / "boxlite.h").read_text()


def test_the_binding_declares_the_header() -> None:
    header = Header(HEADER)
    # The parser saw the header (a parse that finds nothing would pass vacuously).
    assert len(header.functions) >= 90 and "boxlite_box_exec" in header.functions
    assert len(header.structs) >= 7 and len(header.defines) >= 40 and len(header.inits) >= 6
    assert problems(HEADER) == []


def test_the_loaded_library_has_every_declared_function() -> None:
    lib = _ffi.lib()
    missing = [name for name in _ffi.FUNCTIONS if not hasattr(lib, name)]
    assert missing == []
    assert lib.boxlite_version_number() == _ffi.BOXLITE_VERSION_NUMBER


@pytest.mark.parametrize(
    "change, expected",
    [
        (("uint32_t cpus);", "uint32_t cpus, uint32_t extra);"), "boxlite_box_options_set_cpus: 3 arguments"),
        (("uint32_t cpus);", "uint64_t cpus);"), "boxlite_box_options_set_cpus: argument 2"),
        (("  bool cancelled;\n", "  bool cancelled;\n  uint32_t extra;\n"), "struct boxlite_exit_status_t"),
        (("  int32_t signal;\n", "  int64_t signal;\n"), "struct boxlite_exit_status_t.signal"),
        (("#define BOXLITE_ERROR_INTERNAL 99", "#define BOXLITE_ERROR_INTERNAL 98"), "BOXLITE_ERROR_INTERNAL"),
        (("#define BOXLITE_PROTOCOL_UDP 1", "#define BOXLITE_PROTOCOL_UDP 1\n#define BOXLITE_PROTOCOL_SCTP 2"), "BOXLITE_PROTOCOL_SCTP"),
        (("void boxlite_string_free(char *text);", "void boxlite_string_free(char *text);\nvoid boxlite_new_thing(void);"), "boxlite_new_thing"),
        (("typedef void (*boxlite_user_data_free_cb)(void *user_data);", "typedef void (*boxlite_user_data_free_cb)(void *user_data, int x);"), "boxlite_user_data_free_cb"),
    ],
)
def test_the_check_catches_a_changed_header(change: tuple, expected: str) -> None:
    old, new = change
    assert old in HEADER
    found = problems(HEADER.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_struct_sizes_are_the_c_layout() -> None:
    # x86_64 System V sizes of the sized structs (as sizeof in C gives them).
    assert ctypes.sizeof(_ffi.ExitStatus) == 16
    assert ctypes.sizeof(_ffi.BoxMetrics) == 56
    assert ctypes.sizeof(_ffi.PortForward) == 24
    assert ctypes.sizeof(_ffi.ExecCallbacks) == 48
    assert re.search(r"BOXLITE_EXEC_CALLBACKS_VERSION 1\b", HEADER)
