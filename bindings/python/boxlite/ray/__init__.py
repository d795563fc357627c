"""boxlite.ray: boxes across a Ray cluster (the `ray` extra: pip install 'boxlite[ray]').

    import ray, boxlite.ray
    ray.init()
    pool = boxlite.ray.BoxPool(image="oci-layout:/images/busybox", cpus=1, memory_mib=256, warm=1)
    with pool.lease() as box:
        print(box.exec("echo", "hi").stdout)
    print(pool.map("echo $(($1 * 2))", range(10)))
    pool.shutdown()

One NodeAgent actor per node owns that node's runtime home; each box holds one
placement-group bundle of the slot resource (docs/ray.md)."""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("boxlite.ray needs Ray: pip install 'boxlite[ray]' (or pip install ray)") from e

from ._agent import BoxDied, NodeAgent
from ._pool import AsyncBoxPool, AsyncLeasedBox, BoxPool, LeasedBox, LeaseExpired, NodeDied, PoolError, RemoteExecution
from ._procs import box_processes

__all__ = [
    "AsyncBoxPool",
    "AsyncLeasedBox",
    "BoxDied",
    "BoxPool",
    "LeaseExpired",
    "LeasedBox",
    "NodeAgent",
    "NodeDied",
    "PoolError",
    "RemoteExecution",
    "box_processes",
]
