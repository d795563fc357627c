"""BoxPool: boxes across a Ray cluster, one NodeAgent actor per node (see _agent).

Admission: a box exists only inside a placement-group bundle `{slot: 1, "CPU": cpus,
"memory": memory_mib MiB}`, so Ray's scheduler (and autoscaler) sees every box, and a box's
VM gets exactly the vCPUs and memory its bundle reserved. The pool suggests a node (best of
K among nodes with free slots, with a bonus for a node that already built the image's base
disk, and a back-off from nodes whose boots failed) as the group's soft target; Ray decides,
and the box boots on the node the bundle landed on. Placement groups are detached and named
`boxlite-<pool>-...`: the agent that holds the box removes its group with it, so a driver
that dies does not free a slot whose box still runs (the lease TTL reclaims both)."""

from __future__ import annotations

import asyncio
import io
import os
import random
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import boxlite
from boxlite import Chunk, ExecResult

from ._agent import BoxDied, LeaseGone, NodeAgent

NAMESPACE = "boxlite"
AGENT_PREFIX = "boxlite-agent-"
CALL_SLICE_S = 1.0  # how often a waiting call checks that its node is alive


class PoolError(RuntimeError):
    """The pool cannot do what was asked; the message says why and what to change."""


class NodeDied(PoolError):
    """The node holding a lease died: the box is gone with it. The pool goes on with the
    other nodes; lease again."""


class LeaseExpired(PoolError):
    """The lease is gone: released, or its TTL ran out while unused."""


def _agent_name(pool: str, node_id: str) -> str:
    return f"{AGENT_PREFIX}{pool}-{node_id[:12]}"


def _agent_names(pool: str) -> List[str]:
    """The names of the live agents of pool `pool` (not of a pool whose name it prefixes)."""
    prefix = f"{AGENT_PREFIX}{pool}-"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NAMESPACE]
    return [n for n in names if n.startswith(prefix) and len(n) == len(prefix) + 12 and "-" not in n[len(prefix) :]]


def _is_group_of(pool: str, group_name: str) -> bool:
    """Whether a placement group's name is one of pool `pool`'s: boxlite-<pool>-<12 hex>."""
    prefix = f"boxlite-{pool}-"
    return group_name.startswith(prefix) and len(group_name) == len(prefix) + 12 and "-" not in group_name[len(prefix) :]


def _is_actor_death(e: BaseException) -> bool:
    return isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.NodeDiedError))


@dataclass
class _Node:
    node_id: str
    agent: Any  # the NodeAgent actor handle
    slots: int
    home: str = ""
    pid: int = 0
    dead: Optional[str] = None  # why, once the node or its agent died
    boot_failures: int = 0  # consecutive, seen by this driver
    backoff_until: float = 0.0


class RemoteExecution:
    """A process in a leased box, driven from here: iterate it for Chunk(stream, data)
    (streamed in bounded batches), `stdin.write()`/`stdin.close()`, `wait()`, `kill()`."""

    def __init__(self, box: "LeasedBox", xid: str, output_limit: int) -> None:
        self._box = box
        self.id = xid
        self._limit = output_limit
        self._result: Optional[ExecResult] = None
        self._pending: List[Chunk] = []
        self.stdin = _RemoteStdin(self)

    def _read(self) -> None:
        out = self._box._call("stream_read", self.id)
        self._pending.extend(Chunk(s, d) for s, d in out["chunks"])
        if out["done"] is not None:
            self._result = out["done"]

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self._result is not None:
                return
            self._read()

    def wait(self) -> ExecResult:
        """Reads the rest (keeping at most output_limit bytes per stream) and returns the
        result with what was not already iterated."""
        out = {"stdout": bytearray(), "stderr": bytearray()}
        trunc = {"stdout": False, "stderr": False}
        for chunk in self:
            buf = out[chunk.stream]
            room = self._limit - len(buf)
            buf += chunk.data[: max(room, 0)]
            trunc[chunk.stream] |= len(chunk.data) > room
        assert self._result is not None
        r = self._result
        r.stdout, r.stderr = bytes(out["stdout"]), bytes(out["stderr"])
        r.stdout_truncated |= trunc["stdout"]
        r.stderr_truncated |= trunc["stderr"]
        return r

    def kill(self) -> None:
        self._box._call("stream_signal", self.id, None)

    def signal(self, signum: int) -> None:
        self._box._call("stream_signal", self.id, signum)

    def close(self) -> None:
        if self._result is None:
            try:
                self._box._call("stream_close", self.id)
            except (LeaseExpired, NodeDied):
                pass

    def __enter__(self) -> "RemoteExecution":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _RemoteStdin:
    def __init__(self, ex: RemoteExecution) -> None:
        self._ex = ex

    def write(self, data: Union[bytes, str]) -> int:
        if isinstance(data, str):
            data = data.encode()
        return self._ex._box._call("stream_write", self._ex.id, bytes(data))

    def close(self) -> None:
        self._ex._box._call("stream_close_stdin", self._ex.id)


class LeasedBox:
    """A box leased from the pool: every call travels to the agent of the node holding it
    (and refreshes the lease's TTL). `release()` (or leaving `with`) hands it back."""

    def __init__(self, pool: "BoxPool", node: _Node, lease_id: str, info: Dict[str, Any], image: str, lease_s: float) -> None:
        self._pool = pool
        self._node = node
        self.lease_id = lease_id
        self.node_id: str = info["node_id"]
        self.box_id: str = info["box_id"]
        self.group_id: Optional[str] = info.get("group_id")  # the placement group holding its slot
        self.image = image
        self.warm: bool = info["warm"]  # leased from a warm box (else booted for this lease)
        self.lease_s = lease_s  # how long lease() took
        self._released = False
        self._broken: Optional[BaseException] = None

    def __repr__(self) -> str:
        return f"<boxlite.ray.LeasedBox {self.box_id} on node {self.node_id[:12]} lease={self.lease_id}>"

    def _call(self, method: str, *args: Any, timeout: Optional[float] = None) -> Any:
        if self._released:
            raise LeaseExpired(f"lease {self.lease_id} was released; lease a new box")
        if self._pool._closed:
            raise LeaseExpired(f"lease {self.lease_id} ended with its pool's shutdown; make a new BoxPool")
        try:
            return self._pool._wait(self._node, getattr(self._node.agent, method).remote(self.lease_id, *args), timeout)
        except LeaseGone as e:
            raise LeaseExpired(str(e)) from None

    def exec(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        check: bool = False,
        output_limit: int = boxlite.DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult:
        """As boxlite.Box.exec, on the node holding the box."""
        argv = [cmd, *args] if isinstance(cmd, str) else [*cmd, *args]
        kw = dict(env=env, cwd=cwd, user=user, timeout=timeout, input=input, output_limit=output_limit)
        result: ExecResult = self._call("exec", argv, kw)
        return result.check() if check else result

    def start_exec(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        output_limit: int = boxlite.DEFAULT_OUTPUT_LIMIT,
    ) -> RemoteExecution:
        """Starts a process whose output streams back in bounded batches; `input` (given)
        is written to its stdin, which is then closed; else write and close `stdin`."""
        argv = [cmd, *args] if isinstance(cmd, str) else [*cmd, *args]
        data = input.encode() if isinstance(input, str) else input
        xid = self._call("stream_start", argv, dict(env=env, cwd=cwd, user=user, timeout=timeout), data)
        return RemoteExecution(self, xid, output_limit)

    def stream(self, cmd: Union[str, Sequence[str]], *args: str, **kwargs: Any) -> Iterator[Chunk]:
        """`for chunk in box.stream(...)`: Chunk(stream, data) as the process writes."""
        with self.start_exec(cmd, *args, input=kwargs.pop("input", b""), **kwargs) as ex:
            yield from ex

    def copy_in(self, host_src: Union[str, os.PathLike], guest_dest: str) -> None:
        """Copies a local file or directory into the box (docker cp's rules)."""
        src = os.fspath(host_src)
        name = os.path.basename(src.rstrip("/")) or "src"
        if os.path.isdir(src):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(src, arcname=name)
            payload, is_tar = buf.getvalue(), True
        else:
            with open(src, "rb") as f:
                payload, is_tar = f.read(), False
        if len(payload) > self._pool.copy_limit:
            raise PoolError(f"copy_in of {src}: {len(payload)} bytes, over copy_limit={self._pool.copy_limit}; raise it or copy less")
        self._call("copy_in", payload, is_tar, name, guest_dest)

    def copy_out(self, guest_src: str, host_dest: Union[str, os.PathLike]) -> None:
        """Copies a file or directory out of the box to a local path (docker cp's rules);
        what the box sends is bounded (copy_limit) and unpacked path-safely."""
        dest = os.fspath(host_dest)
        data: bytes = self._call("copy_out", guest_src, self._pool.copy_limit)
        if os.path.isdir(dest):
            dest = os.path.join(dest, os.path.basename(guest_src.rstrip("/")) or "out")
        parent = os.path.dirname(os.path.abspath(dest))
        with tempfile.TemporaryDirectory(prefix=".bxray-", dir=parent) as tmp:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, .., links out, devices
            os.replace(os.path.join(tmp, "out"), dest)

    def touch(self) -> None:
        """Refreshes the lease's TTL without doing anything else."""
        self._call("touch")

    def release(self, keep_warm: Optional[bool] = None) -> None:
        """Hands the box back: it is recycled into a warm box (its disk restored to the
        image's: a fresh overlay on the base disk) or removed with its slot."""
        if self._released:
            return
        self._released = True
        self._pool._release(self, keep_warm)

    def __enter__(self) -> "LeasedBox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class BoxPool:
    """Boxes of one image across the nodes of a Ray cluster that offer box slots.

    `image`: a registry reference, `oci-layout:PATH` or `oci-archive:PATH` (the path must
    exist on every node). `cpus`, `memory_mib`: each box's VM, reserved in its bundle.
    `per_node`: at most this many boxes per node (default: the node's `slot_resource`).
    `warm`: booted idle boxes kept per node. `ttl`: seconds a lease lives unused.
    `home`: each node's runtime home, may hold `{node}`/`{node_id}` (default: the node's
    $BOXLITE_HOME, else ~/.boxlite). Needs `ray.init()` first."""

    def __init__(
        self,
        image: str,
        *,
        cpus: int = 1,
        memory_mib: int = 512,
        per_node: Optional[int] = None,
        warm: int = 0,
        ttl: float = 300.0,
        name: str = "default",
        home: Optional[str] = None,
        engine: Optional[str] = None,
        network: Optional[str] = None,
        slot_resource: str = "boxlite_slot",
        reserve_cpu_memory: bool = True,
        best_of: int = 2,
        affinity_bonus: float = 1.0,
        lease_timeout: float = 120.0,
        copy_limit: int = 256 << 20,
        _connect: bool = False,
    ) -> None:
        if not ray.is_initialized():
            raise PoolError("Ray is not initialised: call ray.init() (or ray.init(address=...)) before BoxPool(...)")
        if not name or not all(c.isalnum() or c == "-" for c in name):
            raise ValueError(f"pool name {name!r}: use letters, digits and '-'")
        if cpus < 1 or memory_mib < 64:
            raise ValueError(f"cpus={cpus}, memory_mib={memory_mib}: a box needs cpus >= 1 and memory_mib >= 64")
        self.image, self.name, self.ttl = image, name, ttl
        self.cpus, self.memory_mib, self.per_node, self.warm = cpus, memory_mib, per_node, warm
        self.slot_resource, self.reserve_cpu_memory = slot_resource, reserve_cpu_memory
        self.best_of, self.affinity_bonus, self.lease_timeout, self.copy_limit = best_of, affinity_bonus, lease_timeout, copy_limit
        self._config = {"home": home, "engine": engine, "network": network, "cpus": cpus, "memory_mib": memory_mib}
        self._nodes: Dict[str, _Node] = {}
        self._lock = threading.Lock()
        self._pending: Dict[str, int] = {}  # node id -> leases being placed there now
        self._waiting = 0  # leases waiting for a box (recycle released boxes meanwhile)
        self._leases: Dict[str, LeasedBox] = {}
        self._alive: set = set()  # node ids Ray reported alive, at _alive_at
        self._alive_at = 0.0
        self._placing: set = set()  # ids of groups this driver is placing (no agent holds them yet)
        self._owner = not _connect
        self._closed = False
        self.shutdown_report: Optional[Dict[str, Any]] = None
        if self._owner:
            if _agent_names(name):  # checked before its groups would be taken for stale ones
                raise PoolError(
                    f"a pool named {name!r} runs on this cluster already: use BoxPool.connect({name!r}), "
                    "shut it down, or give this one another name="
                )
            self._reap_stale_groups()
            self._start_agents()
            self._fill_warm()
        else:
            self._find_agents()

    # --- construction ----------------------------------------------------------------
    @classmethod
    def connect(cls, name: str = "default", **overrides: Any) -> "BoxPool":
        """A handle, from another driver, on the pool `name` that some driver started:
        it leases from the same agents (its leases live by their TTL if it dies)."""
        mine = _agent_names(name)
        if not mine:
            raise PoolError(f"no pool {name!r} runs on this cluster: start one with BoxPool(..., name={name!r})")
        info = ray.get(ray.get_actor(mine[0], namespace=NAMESPACE).info.remote(), timeout=30)
        c = info["config"]
        kw = dict(cpus=c["cpus"], memory_mib=c["memory_mib"], home=c["home"], engine=c["engine"], network=c["network"])
        kw.update(c.get("pool", {}))
        kw.update(overrides)
        return cls(name=name, _connect=True, **kw)

    def _slot_nodes(self) -> List[Tuple[str, int]]:
        out = []
        for n in ray.nodes():
            slots = int(n.get("Resources", {}).get(self.slot_resource, 0))
            if n.get("Alive") and slots > 0:
                out.append((n["NodeID"], slots if self.per_node is None else min(slots, self.per_node)))
        return out

    def _sweep_groups(self) -> None:
        """Removes this pool's groups that no live agent holds: those of boxes that went
        with a dead node (Ray would otherwise move their bundles to other nodes and hold
        slots for boxes that no longer exist). Order matters: the groups first, then those
        being placed, then those held, so a group placed meanwhile is seen in one of them."""
        groups = [
            pg_id
            for pg_id, entry in placement_group_table().items()
            if _is_group_of(self.name, entry.get("name", "")) and entry.get("state") != "REMOVED"
        ]
        with self._lock:
            placing = set(self._placing)
        held: set = set()
        for node in self.alive_nodes():
            try:
                held.update(ray.get(node.agent.groups.remote(), timeout=30))
            except Exception:
                return  # cannot tell what is held: leave them (shutdown removes them)
        for pg_id in groups:
            if pg_id not in held and pg_id not in placing:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))

    def _reap_stale_groups(self) -> None:
        """Removes detached placement groups an earlier pool of this name left behind."""
        for pg_id, entry in placement_group_table().items():
            if _is_group_of(self.name, entry.get("name", "")) and entry.get("state") != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))

    def _start_agents(self) -> None:
        nodes = self._slot_nodes()
        if not nodes:
            raise PoolError(
                f"no alive Ray node offers the {self.slot_resource!r} resource: start worker nodes with "
                f"`ray start --resources '{{\"{self.slot_resource}\": N}}'` (see docs/ray.md)"
            )
        pool_cfg = dict(per_node=self.per_node, warm=self.warm, ttl=self.ttl, slot_resource=self.slot_resource, image=self.image)
        config = {**self._config, "pool": pool_cfg}
        remote_cls = ray.remote(NodeAgent)
        for node_id, slots in nodes:
            agent = remote_cls.options(
                name=_agent_name(self.name, node_id),
                namespace=NAMESPACE,
                num_cpus=0,
                max_restarts=0,
                max_concurrency=256,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(self.name, config)
            self._nodes[node_id] = _Node(node_id, agent, slots)
        refs = {nid: n.agent.start.remote() for nid, n in self._nodes.items()}
        errors = []
        for nid, ref in refs.items():
            try:
                info = ray.get(ref, timeout=120)
                self._nodes[nid].home, self._nodes[nid].pid = info["home"], info["pid"]
            except Exception as e:  # one broken node does not stop the pool
                self._nodes[nid].dead = f"its agent did not start: {e}"
                errors.append(f"node {nid[:12]}: {e}")
        if all(n.dead for n in self._nodes.values()):
            raise PoolError("no node agent started:\n" + "\n".join(errors))

    def _find_agents(self) -> None:
        for node_id, slots in self._slot_nodes():
            try:
                agent = ray.get_actor(_agent_name(self.name, node_id), namespace=NAMESPACE)
            except ValueError:
                continue
            node = _Node(node_id, agent, slots)
            info = ray.get(agent.info.remote(), timeout=30)
            node.home, node.pid = info["home"], info["pid"]
            self._nodes[node_id] = node

    def _fill_warm(self) -> None:
        if self.warm <= 0:
            return
        refs, placing = [], []
        for node in self.alive_nodes():
            for _ in range(min(self.warm, node.slots)):
                pg = self._new_group(node.node_id)
                placing.append(pg.id.hex())
                with self._lock:
                    self._placing.add(pg.id.hex())  # until its agent holds it (see _sweep_groups)
                try:
                    ray.get(pg.ready(), timeout=self.lease_timeout)
                except Exception:
                    remove_placement_group(pg)
                    continue
                landed = self._group_node(pg)
                refs.append(self._nodes[landed].agent.add_warm.remote(self.image, pg.id.hex()))
        for ref in refs:
            try:
                ray.get(ref, timeout=300)
            except Exception:
                pass  # counted by its agent as a boot failure; leases boot cold
        with self._lock:
            self._placing.difference_update(placing)

    # --- calls -----------------------------------------------------------------------
    def _node_alive(self, node_id: str) -> bool:
        # One GCS query per half second however many calls wait.
        with self._lock:
            if time.monotonic() - self._alive_at > 0.5:
                self._alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
                self._alive_at = time.monotonic()
            return node_id in self._alive

    def _mark_dead(self, node: _Node, why: str) -> NodeDied:
        if not node.dead:
            node.dead = why
            threading.Thread(target=self._sweep_groups, name="boxlite-ray-sweep", daemon=True).start()
        return NodeDied(
            f"node {node.node_id[:12]} died ({node.dead}): the boxes it held are gone; "
            "the pool goes on with the other nodes: lease again"
        )

    def _wait(self, node: _Node, ref: Any, timeout: Optional[float] = None) -> Any:
        """ray.get that fails with NodeDied (not a hang) once the node or its agent is dead."""
        if node.dead:
            raise self._mark_dead(node, node.dead)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return ray.get(ref, timeout=CALL_SLICE_S)
            except ray.exceptions.GetTimeoutError:
                if not self._node_alive(node.node_id):
                    raise self._mark_dead(node, "Ray reports the node dead") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.node_id[:12]} did not answer within {timeout} s") from None
            except ray.exceptions.RayTaskError as e:
                if e.cause is not None and not _is_actor_death(e.cause):
                    raise e.cause from None  # what the agent raised, without Ray's wrapping
                raise self._mark_dead(node, f"its agent is gone: {type(e).__name__}") from None
            except Exception as e:
                if _is_actor_death(e):
                    raise self._mark_dead(node, f"its agent is gone: {type(e).__name__}") from None
                raise

    def alive_nodes(self) -> List[_Node]:
        return [n for n in self._nodes.values() if not n.dead]

    def nodes(self) -> Dict[str, Dict[str, Any]]:
        """Each node agent's figures (boxes, leases, warm, base disks, counters); dead
        nodes as {"dead": why}."""
        out: Dict[str, Dict[str, Any]] = {}
        for node in self._nodes.values():
            if node.dead:
                out[node.node_id] = {"dead": node.dead}
                continue
            try:
                out[node.node_id] = self._wait(node, node.agent.info.remote(), timeout=30)
            except NodeDied:
                out[node.node_id] = {"dead": node.dead}
        return out

    # --- placement -------------------------------------------------------------------
    def _bundle(self) -> Dict[str, float]:
        b = {self.slot_resource: 1.0}
        if self.reserve_cpu_memory:
            b["CPU"] = float(self.cpus)
            b["memory"] = float(self.memory_mib << 20)
        return b

    def _new_group(self, target: Optional[str]) -> PlacementGroup:
        return placement_group(
            [self._bundle()],
            strategy="STRICT_PACK",  # the only strategy that takes a soft target
            name=f"boxlite-{self.name}-{uuid.uuid4().hex[:12]}",
            lifetime="detached",
            _soft_target_node_id=target,
        )

    def _group_node(self, pg: PlacementGroup) -> str:
        return placement_group_table(pg)["bundles_to_node_id"][0]

    def _choose(self, infos: Dict[str, Dict[str, Any]], image: str) -> Optional[str]:
        """Best of K among nodes with a free slot: most free slots, plus the affinity bonus
        where the image's base disk is built; nodes backing off after failed boots only if
        there is no other."""
        now = time.monotonic()
        free: List[Tuple[float, str]] = []
        backing: List[Tuple[float, str]] = []
        for nid, info in infos.items():
            node = self._nodes[nid]
            room = node.slots - info["boxes"] - self._pending.get(nid, 0)
            if room <= 0:
                continue
            score = room / node.slots + (self.affinity_bonus if image in info["base_disks"] else 0.0)
            (backing if node.backoff_until > now else free).append((score, nid))
        pool = free or backing
        if not pool:
            return None
        sample = random.sample(pool, min(self.best_of, len(pool)))
        return max(sample)[1]

    def _infos(self) -> Dict[str, Dict[str, Any]]:
        refs = {n.node_id: n.agent.info.remote() for n in self.alive_nodes()}
        out = {}
        for nid, ref in refs.items():
            try:
                out[nid] = self._wait(self._nodes[nid], ref, timeout=30)
            except (NodeDied, TimeoutError):
                pass
        return out

    def _take_warm(self, infos: Dict[str, Dict[str, Any]], lease_id: str, image: str, ttl: float) -> Optional[Tuple[_Node, Dict[str, Any]]]:
        for nid in sorted(infos, key=lambda n: -infos[n]["warm"].get(image, 0)):
            if infos[nid]["warm"].get(image, 0) <= 0:
                break
            node = self._nodes[nid]
            try:
                got = self._wait(node, node.agent.take_warm.remote(lease_id, image, ttl), timeout=60)
            except NodeDied:
                continue
            if got is not None:
                return node, got
        return None

    def lease(self, image: Optional[str] = None, *, ttl: Optional[float] = None, timeout: Optional[float] = None) -> LeasedBox:
        """A box of `image` (default: the pool's) for this caller: a warm one if a node has
        one, else one booted in a new slot. Use as `with pool.lease() as box:`."""
        if self._closed:
            raise PoolError("the pool is shut down; make a new BoxPool")
        image = image or self.image
        ttl = self.ttl if ttl is None else ttl
        timeout = self.lease_timeout if timeout is None else timeout
        start = time.monotonic()
        lease_id = uuid.uuid4().hex[:16]
        with self._lock:
            self._waiting += 1
        try:
            node, info = self._lease(lease_id, image, ttl, start + timeout, timeout)
        finally:
            with self._lock:
                self._waiting -= 1
        box = LeasedBox(self, node, lease_id, info, image, time.monotonic() - start)
        with self._lock:
            self._leases[lease_id] = box
        return box

    def _lease(self, lease_id: str, image: str, ttl: float, deadline: float, timeout: float) -> Tuple[_Node, Dict[str, Any]]:
        attempts = 0
        while True:
            if not self.alive_nodes():
                raise PoolError("every node of the pool is dead: " + "; ".join(f"{n.node_id[:12]}: {n.dead}" for n in self._nodes.values()))
            infos = self._infos()
            warm = self._take_warm(infos, lease_id, image, ttl)
            if warm is not None:
                return warm
            pg: Optional[PlacementGroup] = None
            with self._lock:
                target = self._choose(infos, image)
                if target is not None:
                    self._pending[target] = self._pending.get(target, 0) + 1
            try:
                if target is None:
                    # Every slot is held: free one held by a warm box of another image; the
                    # group below then waits in Ray's queue (demand the autoscaler sees)
                    # until a slot frees or a released box comes back warm.
                    for nid in infos:
                        try:
                            if self._wait(self._nodes[nid], self._nodes[nid].agent.drop_warm.remote(image), timeout=60):
                                break
                        except NodeDied:
                            continue
                pg = self._new_group(target)
                with self._lock:
                    self._placing.add(pg.id.hex())
                try:
                    landed = self._await_group(pg, deadline, timeout)
                except BaseException:
                    remove_placement_group(pg)
                    raise
                if landed is None:
                    continue  # a warm box may have come back meanwhile
                node = self._nodes.get(landed)
                if node is None or node.dead:
                    remove_placement_group(pg)
                    continue
                try:
                    info = self._wait(node, node.agent.boot.remote(lease_id, image, pg.id.hex(), ttl), timeout=600)
                except NodeDied:
                    remove_placement_group(pg)  # else Ray would move it to another node
                    continue
                except boxlite.BoxliteError as e:
                    node.boot_failures += 1
                    node.backoff_until = time.monotonic() + min(60.0, 2.0**node.boot_failures)
                    attempts += 1
                    if attempts >= 3:
                        raise PoolError(f"3 boots failed in a row; the last on node {node.node_id[:12]}: {e}") from e
                    continue
                node.boot_failures = 0
                return node, info
            finally:
                with self._lock:
                    if target is not None:
                        self._pending[target] -= 1
                    if pg is not None:
                        self._placing.discard(pg.id.hex())

    def _await_group(self, pg: PlacementGroup, deadline: float, timeout: float) -> Optional[str]:
        """The node the group's bundle landed on, or None (group removed) after a short wait
        when a warm box may have come back instead."""
        waited = 0.0
        while True:
            ready, _ = ray.wait([pg.ready()], timeout=0.5)
            if ready:
                return self._group_node(pg)
            waited += 0.5
            if time.monotonic() > deadline:
                raise PoolError(
                    f"no box slot became free within {timeout} s ({len(self.alive_nodes())} nodes alive): "
                    "raise per_node, add nodes with the slot resource, or release leases sooner"
                )
            if waited >= 2.0:
                remove_placement_group(pg)
                return None

    def _release(self, box: LeasedBox, keep_warm: Optional[bool]) -> None:
        with self._lock:
            self._leases.pop(box.lease_id, None)
            if keep_warm is None and self._waiting > 0:
                keep_warm = True  # someone waits for a box: recycle this one for them
        if box._node.dead:
            return
        try:
            self._wait(box._node, box._node.agent.release.remote(box.lease_id, keep_warm), timeout=60)
        except (NodeDied, TimeoutError):
            pass  # the box went with its node; or the TTL reclaims it

    # --- batch -----------------------------------------------------------------------
    def map(
        self,
        fn_or_cmd: Union[Callable[[LeasedBox, Any], Any], str, Sequence[str]],
        inputs: Sequence[Any],
        *,
        image: Optional[str] = None,
        concurrency: Optional[int] = None,
        return_exceptions: bool = False,
    ) -> List[Any]:
        """Runs each input in a box of its own; results in input order. `fn_or_cmd`: a
        function fn(box, item), or a command (str: run by `sh -c`, the item as $1; list:
        argv, the item appended) giving an ExecResult. `return_exceptions`: a failed item's
        exception takes its place (else the first one is raised once all are done)."""
        items = list(inputs)
        if callable(fn_or_cmd):
            fn = fn_or_cmd
        else:
            argv = ["sh", "-c", fn_or_cmd, "sh"] if isinstance(fn_or_cmd, str) else list(fn_or_cmd)
            fn = lambda box, item: box.exec(*argv, str(item))  # noqa: E731

        def one(item: Any) -> Any:
            with self.lease(image) as box:
                return fn(box, item)

        width = concurrency or max(1, sum(n.slots for n in self.alive_nodes()))
        results: List[Any] = [None] * len(items)
        first: Optional[BaseException] = None
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="boxlite-map") as ex:
            futures = [ex.submit(one, item) for item in items]
            for i, f in enumerate(futures):
                try:
                    results[i] = f.result()
                except Exception as e:
                    results[i] = e
                    first = first or e
        if first is not None and not return_exceptions:
            raise first
        return results

    # --- end -------------------------------------------------------------------------
    def processes(self) -> Dict[str, List[Tuple[int, str]]]:
        """Per live node: the boxlite processes (pid, name) of its home."""
        out = {}
        for node in self.alive_nodes():
            try:
                out[node.node_id] = self._wait(node, node.agent.processes.remote(), timeout=30)
            except NodeDied:
                pass
        return out

    def close(self) -> None:
        """Releases this handle's leases (a connected handle: the agents go on)."""
        for box in list(self._leases.values()):
            box.release(keep_warm=False)

    def shutdown(self) -> Dict[str, Any]:
        """Removes every box on every node, frees every slot and stops the agents. Returns
        per node what was removed and what was still running after (counted: expected empty)."""
        if self._closed:
            return self.shutdown_report or {}
        self._closed = True
        if not self._owner:
            self.close()
            return {}
        report: Dict[str, Any] = {}
        refs = {n.node_id: n.agent.shutdown.remote() for n in self.alive_nodes()}
        for nid, ref in refs.items():
            try:
                report[nid] = self._wait(self._nodes[nid], ref, timeout=120)
            except (NodeDied, TimeoutError) as e:
                report[nid] = {"dead": str(e)}
        for node in self._nodes.values():
            if not node.dead:
                ray.kill(node.agent)
            report.setdefault(node.node_id, {"dead": node.dead})
        self._reap_stale_groups()
        for _ in range(100):  # the name is free again once Ray has the agents dead
            if not _agent_names(self.name):
                break
            time.sleep(0.1)
        self.shutdown_report = report
        return report

    def __enter__(self) -> "BoxPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class AsyncBoxPool:
    """The asyncio face of a BoxPool: the same calls as coroutines. Blocking waits on Ray
    run in the pool's worker threads, so the event loop is never held."""

    def __init__(self, pool: BoxPool) -> None:
        self.sync = pool
        self._threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="boxlite-ray-aio")

    @classmethod
    async def create(cls, image: str, **kwargs: Any) -> "AsyncBoxPool":
        return cls(await asyncio.to_thread(BoxPool, image, **kwargs))

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, lambda: fn(*args, **kwargs))

    def lease(self, image: Optional[str] = None, **kwargs: Any) -> "_AsyncLeaseCtx":
        return _AsyncLeaseCtx(self, image, kwargs)

    async def map(self, fn_or_cmd: Any, inputs: Sequence[Any], **kwargs: Any) -> List[Any]:
        return await self._run(self.sync.map, fn_or_cmd, inputs, **kwargs)

    async def nodes(self) -> Dict[str, Dict[str, Any]]:
        return await self._run(self.sync.nodes)

    async def shutdown(self) -> Dict[str, Any]:
        try:
            return await self._run(self.sync.shutdown)
        finally:
            self._threads.shutdown(wait=False)

    async def __aenter__(self) -> "AsyncBoxPool":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()


class AsyncLeasedBox:
    """A LeasedBox with coroutines: exec, stream (async for), copy_in/out, release."""

    def __init__(self, pool: AsyncBoxPool, box: LeasedBox) -> None:
        self._pool, self.sync = pool, box
        self.lease_id, self.node_id, self.box_id, self.warm = box.lease_id, box.node_id, box.box_id, box.warm

    async def exec(self, cmd: Union[str, Sequence[str]], *args: str, **kwargs: Any) -> ExecResult:
        return await self._pool._run(self.sync.exec, cmd, *args, **kwargs)

    async def stream(self, cmd: Union[str, Sequence[str]], *args: str, **kwargs: Any) -> Any:
        ex = await self._pool._run(self.sync.start_exec, cmd, *args, input=kwargs.pop("input", b""), **kwargs)
        try:
            while True:
                while ex._pending:
                    yield ex._pending.pop(0)
                if ex._result is not None:
                    return
                await self._pool._run(ex._read)
        finally:
            await self._pool._run(ex.close)

    async def copy_in(self, host_src: Union[str, os.PathLike], guest_dest: str) -> None:
        await self._pool._run(self.sync.copy_in, host_src, guest_dest)

    async def copy_out(self, guest_src: str, host_dest: Union[str, os.PathLike]) -> None:
        await self._pool._run(self.sync.copy_out, guest_src, host_dest)

    async def release(self) -> None:
        await self._pool._run(self.sync.release)


class _AsyncLeaseCtx:
    def __init__(self, pool: AsyncBoxPool, image: Optional[str], kwargs: Dict[str, Any]) -> None:
        self._pool, self._image, self._kwargs = pool, image, kwargs
        self._box: Optional[AsyncLeasedBox] = None

    def __await__(self) -> Any:
        return self._get().__await__()

    async def _get(self) -> AsyncLeasedBox:
        if self._box is None:
            self._box = AsyncLeasedBox(self._pool, await self._pool._run(self.sync_lease))
        return self._box

    def sync_lease(self) -> LeasedBox:
        return self._pool.sync.lease(self._image, **self._kwargs)

    async def __aenter__(self) -> AsyncLeasedBox:
        return await self._get()

    async def __aexit__(self, *exc: Any) -> None:
        if self._box is not None:
            await self._box.release()


__all__ = ["AsyncBoxPool", "AsyncLeasedBox", "BoxDied", "BoxPool", "LeasedBox", "LeaseExpired", "NodeDied", "PoolError", "RemoteExecution"]
