"""Counting the processes a runtime home's boxes run on this machine (shim, qemu, vsock
backend, network gateway, virtiofsd), from /proc.

A box's qemu and vhost-device-vsock name files under `<home>/boxes/` on their command
lines; the shim and the gateway do not (the shim clears its environment), so they are found
as the parent and the siblings of those, and as children of the given owner pids (an agent's
own shims before their VM started)."""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Set, Tuple

# /proc/<pid>/comm is cut to 15 characters.
BOXLITE_COMMS = frozenset(
    {"boxlite-shim", "boxlite-netgw", "qemu-system-x86", "vhost-device-vs", "virtiofsd"}
)


def _read_procs() -> Dict[int, Tuple[int, str, bytes]]:
    """pid -> (ppid, comm, cmdline) for every process readable now."""
    procs: Dict[int, Tuple[int, str, bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read(64 * 1024)
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields and fields[0] == "Z":
            continue  # a zombie runs nothing
        procs[int(entry)] = (int(fields[1]), comm, cmdline)
    return procs


def box_processes(homes: Iterable[str], owners: Iterable[int] = ()) -> List[Tuple[int, str]]:
    """(pid, comm) of every live boxlite helper process that belongs to a box of one of
    `homes`, or that is a child of one of `owners` (and its children)."""
    marks = [os.path.join(os.path.realpath(h), "boxes", "").encode() for h in homes]
    marks += [os.path.join(os.path.abspath(h), "boxes", "").encode() for h in homes]
    owner_set: Set[int] = set(owners)
    procs = _read_procs()
    found: Set[int] = set()
    for pid, (ppid, comm, cmdline) in procs.items():
        if comm not in BOXLITE_COMMS:
            continue
        if ppid in owner_set or any(m in cmdline for m in marks):
            found.add(pid)
    # The shims of those, then everything under the shims.
    shims = {procs[p][0] for p in found if procs.get(procs[p][0], (0, "", b""))[1] == "boxlite-shim"}
    shims |= {p for p in found if procs[p][1] == "boxlite-shim"}
    found |= shims
    changed = True
    while changed:
        changed = False
        for pid, (ppid, comm, _) in procs.items():
            if pid not in found and ppid in found and comm in BOXLITE_COMMS:
                found.add(pid)
                changed = True
    return sorted((p, procs[p][1]) for p in found)


def alive(pid: int, comm: Optional[str] = None) -> bool:
    """Whether `pid` runs (and, given `comm`, still runs that program)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
        return False
    return comm is None or stat[stat.index("(") + 1 : stat.rindex(")")] == comm
