"""Fixtures of the scenario tests (bindings/SCENARIOS.md): a fresh home per test, the
busybox test root disk, the engine (qemu unless BOXLITE_TEST_ENGINE says otherwise, as the
C tests), and counters of this process's open fds and helper processes."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import boxlite

REPO = Path(__file__).resolve().parents[3]
ENGINE = os.environ.get("BOXLITE_TEST_ENGINE", "qemu")


@pytest.fixture(scope="session")
def rootfs() -> str:
    path = os.environ.get("BOXLITE_TEST_ROOTFS") or str(REPO / "target/guest/busybox-rootfs.ext4")
    if not os.path.isfile(path):
        pytest.fail(f"no test root disk at {path}: run scripts/build-test-rootfs.sh (or set BOXLITE_TEST_ROOTFS)")
    return path


@pytest.fixture
def home() -> Iterator[str]:
    # Short: the home holds unix sockets (108-byte path limit).
    path = tempfile.mkdtemp(prefix="bxpy-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime(home: str) -> Iterator[boxlite.Runtime]:
    with boxlite.Runtime(home=home, engine=ENGINE) as rt:
        yield rt


@pytest.fixture
def box(runtime: boxlite.Runtime, rootfs: str) -> Iterator[boxlite.Box]:
    with runtime.create_box(root_disk=rootfs, root_disk_read_only=True) as b:
        yield b


def our_shims() -> list[int]:
    """Pids of boxlite-shim processes that are children of this process."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "boxlite-shim" and ppid == me:
            pids.append(int(entry))
    return pids


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
