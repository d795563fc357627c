"""Finds and loads libboxlite.

Order (the first that exists wins):
  1. $BOXLITE_LIBRARY (a path to the library itself);
  2. the copy bundled in this package (boxlite/_lib/libboxlite.so, in wheels);
  3. an installed prefix: `pkg-config --variable=libdir boxlite`;
  4. a source tree this package lies in: target/release, then target/debug.
The library finds its helpers (shim, vsock backend, guest kernel) relative to itself.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Tuple

LIBRARY_NAME = "libboxlite.so"


def _pkg_config_libdir() -> Tuple[str | None, str]:
    exe = shutil.which("pkg-config")
    if exe is None:
        return None, "pkg-config (not installed)"
    try:
        out = subprocess.run(
            [exe, "--variable=libdir", "boxlite"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"pkg-config --variable=libdir boxlite (failed: {e})"
    if out.returncode != 0 or not out.stdout.strip():
        return None, "pkg-config --variable=libdir boxlite (no boxlite.pc on PKG_CONFIG_PATH)"
    libdir = out.stdout.strip()
    return libdir, f"pkg-config --variable=libdir boxlite -> {libdir}"


def candidates() -> List[Tuple[str | None, str]]:
    """(path or None, how it was found) for every place searched, in order."""
    found: List[Tuple[str | None, str]] = []
    env = os.environ.get("BOXLITE_LIBRARY")
    found.append((env or None, f"$BOXLITE_LIBRARY={env}" if env else "$BOXLITE_LIBRARY (unset)"))
    bundled = Path(__file__).resolve().parent / "_lib" / LIBRARY_NAME
    found.append((str(bundled), f"bundled: {bundled}"))
    libdir, how = _pkg_config_libdir()
    found.append((str(Path(libdir) / LIBRARY_NAME) if libdir else None, how))
    here = Path(__file__).resolve().parent
    for parent in here.parents:
        if (parent / "Cargo.toml").is_file() and (parent / "include" / "boxlite.h").is_file():
            for profile in ("release", "debug"):
                path = parent / "target" / profile / LIBRARY_NAME
                found.append((str(path), f"source tree: {path}"))
            break
    else:
        found.append((None, "source tree (this package is not inside one)"))
    return found


def find_library() -> str:
    """The path of the library to load; LibraryNotFound names every place searched."""
    tried = candidates()
    env = os.environ.get("BOXLITE_LIBRARY")
    if env:
        # An explicit choice is not silently replaced by another copy.
        if os.path.isfile(env):
            return env
        raise LibraryNotFound([f"$BOXLITE_LIBRARY={env} (no such file)"])
    for path, _ in tried[1:]:
        if path and os.path.isfile(path):
            return path
    raise LibraryNotFound([how + ("" if path is None else " (missing)") for path, how in tried])


class LibraryNotFound(OSError):
    """libboxlite could not be found; `searched` lists every place looked at."""

    def __init__(self, searched: List[str]) -> None:
        self.searched = searched
        lines = "\n  ".join(searched)
        super().__init__(
            f"libboxlite.so not found. Searched:\n  {lines}\n"
            "Set BOXLITE_LIBRARY to the library's path, install boxlite (cmake --install) with its "
            "boxlite.pc on PKG_CONFIG_PATH, or build it in this source tree (cargo build -p boxlite)."
        )


def load() -> Tuple[ctypes.CDLL, str]:
    path = find_library()
    return ctypes.CDLL(path), path
