"""The node agent: one async Ray actor per node, pinned there, that owns the node's runtime
home (its boxes and image cache) and runs every box operation of the pool on that node.

Slots: a box holds one placement-group bundle (`{slot: 1, "CPU": cpus, "memory": ...}`)
for as long as it exists, warm or leased; the agent removes the group when the box goes.
Blocking library calls run on the agent's own thread pool, never on its event loop."""

from __future__ import annotations

import asyncio
import io
import os
import queue
import shutil
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

import boxlite
from boxlite import _core

from . import _procs

T = TypeVar("T")

BOX_PREFIX = "ray-"  # every pool box's name starts so: what a new agent reaps as orphans
STREAM_READ_MAX = 1 << 20  # bytes of output one stream_read hands back at most


@dataclass
class _Held:
    box: boxlite.Box
    image: str
    pg_id: Optional[str]
    state: str  # "warm" | "taking" | "leased" | "recycling"
    lease_id: Optional[str] = None
    expires: float = 0.0
    ttl: float = 0.0
    busy: int = 0  # calls in progress: the TTL does not run out under them
    executions: Dict[str, boxlite.Execution] = field(default_factory=dict)


class LeaseGone(Exception):
    """Raised to the driver: the lease is unknown here (released, or its TTL ran out)."""


class BoxDied(Exception):
    """Raised to the driver: the box's VM died; the box is replaced on the next lease."""


def _remove_pg(pg_id: Optional[str]) -> None:
    if not pg_id:
        return
    try:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
    except Exception:
        pass  # already removed (its creator's job ended, or shutdown raced us)


class NodeAgent:
    """See the module doc. Created by BoxPool with node affinity (soft=False), num_cpus=0."""

    def __init__(self, pool: str, config: Dict[str, Any]) -> None:
        self.pool = pool
        self.config = config
        self.node_id = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()
        self.runtime: Optional[boxlite.Runtime] = None
        self.home = ""
        self.boxes: Dict[str, _Held] = {}  # box id -> held
        self.refilling: set = set()  # groups whose box is being removed or replaced: still held
        self.leases: Dict[str, str] = {}  # lease id -> box id
        self.images: Dict[str, str] = {}  # image spec -> cached reference
        self.digests: Dict[str, str] = {}  # image spec -> manifest digest
        self.image_locks: Dict[str, asyncio.Lock] = {}
        self.counters = {"boots": 0, "boot_failures": 0, "reclaimed": 0, "vm_deaths": 0, "recycled": 0, "reaped_orphans": 0}
        self.last_boot_failure = 0.0
        self.closing = False
        self.threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="boxlite-agent")
        self.reaper: Optional[asyncio.Task] = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    # --- start, info, stop -----------------------------------------------------------
    async def start(self) -> Dict[str, Any]:
        home = self.config.get("home")
        if home:
            home = home.format(node_id=self.node_id, node=self.node_id[:12])
        else:
            home = os.environ.get("BOXLITE_HOME") or os.path.expanduser("~/.boxlite")
        os.makedirs(home, exist_ok=True)
        self.home = home
        try:
            self.runtime = await self._run(boxlite.Runtime, home, self.config.get("engine"))
        except boxlite.HomeLocked as e:
            raise RuntimeError(
                f"node {self.node_id[:12]}: the runtime home {home} is held by another process ({e.message}); "
                "shut down the pool that holds it, or give this pool another home (BoxPool(home=...))"
            ) from None
        self.counters["reaped_orphans"] = await self._run(self._reap_orphans)
        self.reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        return await self.info()

    def _reap_orphans(self) -> int:
        """Removes the pool boxes an earlier agent of this home left (it died or was killed):
        the home is locked by us now, so nothing else owns them."""
        n = 0
        assert self.runtime is not None
        for b in self.runtime.list_boxes():
            try:
                if (b.name or "").startswith(BOX_PREFIX):
                    b.remove(force=True)
                    n += 1
            finally:
                b.close()
        return n

    def _base_disk_ready(self, image: str) -> bool:
        digest = self.digests.get(image)
        if not digest:
            return False
        return os.path.isfile(os.path.join(self.home, "images", "disks", digest.split(":", 1)[-1] + ".ext4"))

    async def info(self) -> Dict[str, Any]:
        warm: Dict[str, int] = {}
        for h in self.boxes.values():
            if h.state == "warm":
                warm[h.image] = warm.get(h.image, 0) + 1
        return {
            "node_id": self.node_id,
            "home": self.home,
            "pid": self.pid,
            "boxes": len(self.boxes),
            "leases": len(self.leases),
            "warm": warm,
            "base_disks": [img for img in self.digests if self._base_disk_ready(img)],
            "groups": self._held_groups(),
            "last_boot_failure": self.last_boot_failure,
            "config": self.config,
            **self.counters,
        }

    def _held_groups(self) -> List[str]:
        # A recycled box's group is held between the old box and its replacement too: the
        # driver's sweep removes every group no agent reports.
        return sorted({h.pg_id for h in self.boxes.values() if h.pg_id} | self.refilling)

    async def groups(self) -> List[str]:
        """Ids of the placement groups this agent's boxes hold."""
        return self._held_groups()

    async def processes(self) -> List[Tuple[int, str]]:
        """The boxlite processes of this node's home (and this agent's children)."""
        return await self._run(_procs.box_processes, [self.home] if self.home else [], [self.pid])

    async def shutdown(self) -> Dict[str, Any]:
        """Removes every box and frees its slot; returns what is still running (counted)."""
        self.closing = True
        if self.reaper is not None:
            self.reaper.cancel()
        held = list(self.boxes.values())
        self.boxes.clear()
        self.leases.clear()
        await asyncio.gather(*(self._run(self._destroy, h) for h in held))
        if self.runtime is not None:
            await self._run(self.runtime.close)
        left: List[Tuple[int, str]] = []
        for _ in range(50):  # shims end shortly after their box is removed
            left = await self.processes()
            if not left:
                break
            await asyncio.sleep(0.1)
        return {"node_id": self.node_id, "removed": len(held), "left": left}

    # --- images and boots ------------------------------------------------------------
    def _import(self, image: str) -> Tuple[str, str]:
        assert self.runtime is not None
        for prefix, fn in (("oci-layout:", self.runtime.import_image), ("oci-archive:", self.runtime.import_image_archive)):
            if image.startswith(prefix):
                path = image[len(prefix) :]
                if not os.path.exists(path):
                    raise FileNotFoundError(
                        f"node {self.node_id[:12]}: no image at {path}: put the image at the same path on every node, "
                        "or use a registry reference"
                    )
                name = "ray-import/" + "".join(c if c.isalnum() else "-" for c in os.path.basename(path.rstrip("/"))).lower() + ":latest"
                return name, fn(path, name)
        return image, self.runtime.pull_image(image)

    async def _ensure_image(self, image: str) -> str:
        if image in self.images:
            return self.images[image]
        lock = self.image_locks.setdefault(image, asyncio.Lock())
        async with lock:
            if image not in self.images:
                ref, digest = await self._run(self._import, image)
                self.digests[image] = digest
                self.images[image] = ref
        return self.images[image]

    def _boot_box(self, ref: str) -> boxlite.Box:
        assert self.runtime is not None
        c = self.config
        box = self.runtime.create_box(
            image=ref,
            name=f"{BOX_PREFIX}{self.pool}-{uuid.uuid4().hex[:10]}",
            cpus=c["cpus"],
            memory_mib=c["memory_mib"],
            network=c.get("network"),
        )
        try:
            box.start()
        except BaseException:
            try:
                box.remove(force=True)
            finally:
                box.close()
            raise
        return box

    async def _boot(self, image: str) -> boxlite.Box:
        if self.closing:
            raise boxlite.InvalidState("the pool is shutting down")
        ref = await self._ensure_image(image)
        try:
            box = await self._run(self._boot_box, ref)
        except boxlite.BoxliteError:
            self.counters["boot_failures"] += 1
            self.last_boot_failure = time.time()
            raise
        self.counters["boots"] += 1
        if self.closing:  # shutdown ran meanwhile: this box would outlive it
            await self._run(lambda: (box.remove(force=True), box.close()))
            raise boxlite.InvalidState("the pool is shutting down")
        return box

    def _destroy(self, held: _Held) -> None:
        for ex in list(held.executions.values()):
            ex.close()
        try:
            held.box.remove(force=True)
        except boxlite.BoxliteError:
            pass  # already gone with its VM
        finally:
            held.box.close()
            _remove_pg(held.pg_id)

    async def add_warm(self, image: str, pg_id: str) -> str:
        """Boots a warm box of `image` in the slot of placement group `pg_id`."""
        try:
            box = await self._boot(image)
        except BaseException:
            await self._run(_remove_pg, pg_id)
            raise
        self.boxes[box.id] = _Held(box, image, pg_id, "warm")
        return box.id

    def _lease(self, held: _Held, lease_id: str, ttl: float) -> Dict[str, Any]:
        held.state, held.lease_id, held.ttl = "leased", lease_id, ttl
        held.expires = time.monotonic() + ttl
        self.leases[lease_id] = held.box.id
        return {"box_id": held.box.id, "node_id": self.node_id, "home": self.home, "group_id": held.pg_id}

    async def take_warm(self, lease_id: str, image: str, ttl: float) -> Optional[Dict[str, Any]]:
        """Leases a warm box of `image`, or None when there is none. A warm box whose VM
        died is counted, removed, and its slot given a fresh box."""
        for held in list(self.boxes.values()):
            if held.state != "warm" or held.image != image:
                continue
            held.state = "taking"  # before the await: no concurrent take_warm may pick it too
            try:
                status = await self._run(lambda: held.box.status)
            except boxlite.BoxliteError:
                status = "unknown"  # a box we cannot ask is not handed out
            if status != "running":
                self.counters["vm_deaths"] += 1
                held.state = "recycling"
                asyncio.get_running_loop().create_task(self._recycle(held, keep=True))
                continue
            return {**self._lease(held, lease_id, ttl), "warm": True}
        return None

    async def boot(self, lease_id: str, image: str, pg_id: str, ttl: float) -> Dict[str, Any]:
        """Boots a box of `image` for a lease, in placement group `pg_id`'s slot (freed if
        the boot fails)."""
        start = time.monotonic()
        try:
            box = await self._boot(image)
        except BaseException:
            await self._run(_remove_pg, pg_id)
            raise
        held = _Held(box, image, pg_id, "recycling")
        self.boxes[box.id] = held
        return {**self._lease(held, lease_id, ttl), "warm": False, "boot_s": time.monotonic() - start}

    async def release(self, lease_id: str, keep_warm: Optional[bool]) -> bool:
        """Ends a lease: the box is recycled into a warm one (a fresh overlay on the image's
        base disk, same slot) when `keep_warm`, or (None) while this node has fewer warm
        boxes of its image than the pool's `warm`; else it is removed with its slot."""
        box_id = self.leases.pop(lease_id, None)
        held = self.boxes.get(box_id) if box_id else None
        if held is None:
            return False
        if keep_warm is None:
            warm = sum(1 for h in self.boxes.values() if h.state == "warm" and h.image == held.image)
            keep_warm = warm < int(self.config.get("pool", {}).get("warm", 0))
        held.state, held.lease_id = "recycling", None
        asyncio.get_running_loop().create_task(self._recycle(held, keep=keep_warm and not self.closing))
        return True

    async def _recycle(self, held: _Held, keep: bool) -> None:
        if held.pg_id:
            self.refilling.add(held.pg_id)
        try:
            await self._run(lambda: [ex.close() for ex in list(held.executions.values())])
            held.executions.clear()
            try:
                await self._run(held.box.remove, True)
            except boxlite.BoxliteError:
                pass
            await self._run(held.box.close)
            self.boxes.pop(held.box.id, None)
            if keep and not self.closing:
                try:
                    box = await self._boot(held.image)
                except Exception:
                    keep = False
                else:
                    self.boxes[box.id] = _Held(box, held.image, held.pg_id, "warm")
                    self.counters["recycled"] += 1
                    return
            await self._run(_remove_pg, held.pg_id)
        finally:
            if held.pg_id:
                self.refilling.discard(held.pg_id)

    async def drop_warm(self, image_other_than: Optional[str]) -> bool:
        """Removes one warm box (of another image than the one given) to free its slot."""
        for held in list(self.boxes.values()):
            if held.state == "warm" and held.image != image_other_than:
                held.state = "recycling"
                await self._recycle(held, keep=False)
                return True
        return False

    async def _reap_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for lease_id, box_id in list(self.leases.items()):
                held = self.boxes.get(box_id)
                if held is not None and held.busy == 0 and now > held.expires:
                    self.leases.pop(lease_id, None)
                    self.counters["reclaimed"] += 1
                    held.state, held.lease_id = "recycling", None
                    await self._recycle(held, keep=False)

    # --- calls on a leased box -------------------------------------------------------
    def _held(self, lease_id: str) -> _Held:
        box_id = self.leases.get(lease_id)
        held = self.boxes.get(box_id) if box_id else None
        if held is None:
            raise LeaseGone(
                f"lease {lease_id} is not held on node {self.node_id[:12]}: it was released, or its TTL ran out "
                "(each call on the box refreshes it; lease with a longer ttl=)"
            )
        held.expires = time.monotonic() + held.ttl
        return held

    async def _call(self, lease_id: str, fn: Callable[[_Held], T]) -> T:
        held = self._held(lease_id)
        held.busy += 1
        try:
            # A box whose VM died is reported, not booted again under the caller (an exec on
            # a stopped box would start it, with the running state lost).
            if await self._run(lambda: held.box.status) != "running":
                raise boxlite.VmExited("the box is not running")
            return await self._run(fn, held)
        except boxlite.BoxliteError as e:
            # An exec refused (no such program...) leaves the VM running; a dead VM does not.
            if not isinstance(e, boxlite.VmExited) and await self._run(lambda: held.box.status) == "running":
                raise
            self.counters["vm_deaths"] += 1
            reason = await self._run(lambda: held.box.stop_reason)
            raise BoxDied(
                f"the VM of box {held.box.id} on node {self.node_id[:12]} died ({reason or e.message}); "
                "release the lease: its slot gets a fresh box"
            ) from None
        finally:
            held.busy -= 1
            held.expires = time.monotonic() + held.ttl

    async def touch(self, lease_id: str) -> None:
        self._held(lease_id)

    async def exec(self, lease_id: str, argv: List[str], kwargs: Dict[str, Any]) -> boxlite.ExecResult:
        return await self._call(lease_id, lambda h: h.box.exec(argv[0], *argv[1:], **kwargs))

    async def stream_start(self, lease_id: str, argv: List[str], kwargs: Dict[str, Any], input: Optional[bytes]) -> str:
        def start(h: _Held) -> str:
            ex = h.box.start_exec(argv[0], *argv[1:], stream=True, **kwargs)
            xid = uuid.uuid4().hex[:12]
            h.executions[xid] = ex
            if input is not None:
                _core._feed(ex, input)
            return xid

        return await self._call(lease_id, start)

    def _execution(self, h: _Held, xid: str) -> boxlite.Execution:
        ex = h.executions.get(xid)
        if ex is None:
            raise LeaseGone(f"no execution {xid} in lease {h.lease_id}: it ended and was read to the end, or was closed")
        return ex

    async def stream_read(self, lease_id: str, xid: str, wait_s: float = 0.5) -> Dict[str, Any]:
        """Output chunks so far, at most STREAM_READ_MAX bytes (waits up to `wait_s` for the
        first), and the result once the process ended and all output was read."""

        def read(h: _Held) -> Dict[str, Any]:
            ex = self._execution(h, xid)
            chunks: List[Tuple[str, bytes]] = []
            size = 0
            deadline = time.monotonic() + wait_s
            while size < STREAM_READ_MAX:
                try:
                    item = ex._state.chunks.get(timeout=max(0.0, deadline - time.monotonic()) if not chunks else 0)
                except queue.Empty:
                    return {"chunks": chunks, "done": None}
                if item is _core._END:
                    result = ex.wait()
                    h.executions.pop(xid, None)
                    ex.close()
                    return {"chunks": chunks, "done": result}
                chunks.append((item.stream, item.data))
                size += len(item.data)
            return {"chunks": chunks, "done": None}

        return await self._call(lease_id, read)

    async def stream_write(self, lease_id: str, xid: str, data: bytes) -> int:
        return await self._call(lease_id, lambda h: self._execution(h, xid).stdin.write(data))

    async def stream_close_stdin(self, lease_id: str, xid: str) -> None:
        await self._call(lease_id, lambda h: self._execution(h, xid).stdin.close())

    async def stream_signal(self, lease_id: str, xid: str, signum: Optional[int]) -> None:
        def sig(h: _Held) -> None:
            ex = h.executions.get(xid)
            if ex is not None:
                ex.kill() if signum is None else ex.signal(signum)

        await self._call(lease_id, sig)

    async def stream_close(self, lease_id: str, xid: str) -> None:
        def close(h: _Held) -> None:
            ex = h.executions.pop(xid, None)
            if ex is not None:
                ex.close()

        await self._call(lease_id, close)

    async def copy_in(self, lease_id: str, payload: bytes, is_tar: bool, name: str, guest_dest: str) -> None:
        """`payload`: a file's bytes, or a tar of a directory `name` (made by the driver)."""

        def copy(h: _Held) -> None:
            with tempfile.TemporaryDirectory(prefix="bxray-in-") as tmp:
                if is_tar:
                    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                        tar.extractall(tmp, filter="data")
                else:
                    with open(os.path.join(tmp, name), "wb") as f:
                        f.write(payload)
                h.box.copy_in(os.path.join(tmp, name), guest_dest)

        await self._call(lease_id, copy)

    async def copy_out(self, lease_id: str, guest_src: str, limit: int) -> bytes:
        """A tar of `guest_src` (as entry "out"), refused past `limit` bytes: what comes
        from the guest is bounded here and unpacked path-safely by the driver."""

        def copy(h: _Held) -> bytes:
            with tempfile.TemporaryDirectory(prefix="bxray-out-") as tmp:
                out = os.path.join(tmp, "out")
                h.box.copy_out(guest_src, out)
                size = 0
                for root, _, files in os.walk(out):
                    size += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
                if os.path.isfile(out):
                    size = os.lstat(out).st_size
                if size > limit:
                    raise ValueError(
                        f"copy_out of {guest_src}: {size} bytes, over the limit of {limit}; raise copy_limit= or copy less"
                    )
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w") as tar:
                    tar.add(out, arcname="out")
                shutil.rmtree(out, ignore_errors=True)
                return buf.getvalue()

        return await self._call(lease_id, copy)
