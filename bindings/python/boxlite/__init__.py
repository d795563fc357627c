"""boxlite: isolated micro-VM "boxes", over libboxlite's C API (ctypes; no compiler).

    with boxlite.Runtime() as runtime, runtime.create_box(image="alpine") as box:
        print(box.exec("echo", "hi").stdout)

The asyncio API with the same surface is `boxlite.aio`."""

from __future__ import annotations

from ._core import (
    DEFAULT_OUTPUT_LIMIT,
    Box,
    Chunk,
    ExecResult,
    Execution,
    Port,
    PortForwardInfo,
    Runtime,
    Stdin,
    Volume,
    version,
)
from ._loader import LibraryNotFound
from .errors import *  # noqa: F401,F403  (one exception class per error code)
from .errors import BoxliteError, ExecTimeout, ProcessExitError

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "Box",
    "BoxliteError",
    "Chunk",
    "ExecResult",
    "ExecTimeout",
    "Execution",
    "LibraryNotFound",
    "Port",
    "PortForwardInfo",
    "ProcessExitError",
    "Runtime",
    "Stdin",
    "Volume",
    "version",
]
__version__ = "0.2.0"
