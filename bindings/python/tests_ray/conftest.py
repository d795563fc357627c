"""Fixtures of the Ray pool's tests: one local multi-node Ray cluster for the whole run
(a head with no box slots, three workers with two slots each and a runtime home of their
own), the busybox test image (an OCI layout from scripts/build-test-images.sh) and distinct
variants of it (a base disk of their own), and helpers that show the agents' logs on failure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

ray = pytest.importorskip("ray", reason="the Ray suite needs Ray: scripts/test-ray.sh installs it")
from ray.cluster_utils import Cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
ENGINE = os.environ.get("BOXLITE_TEST_ENGINE", "qemu")
SLOTS = 2
WORKERS = 3
MiB = 1 << 20


@dataclass
class LocalCluster:
    cluster: Any
    base: str
    homes: Dict[str, str] = field(default_factory=dict)  # worker node id -> its BOXLITE_HOME
    nodes: Dict[str, Any] = field(default_factory=dict)  # worker node id -> the Node

    def add_worker(self) -> str:
        home = os.path.join(self.base, f"n{len(self.homes)}")
        node = self.cluster.add_node(
            num_cpus=SLOTS,
            resources={"boxlite_slot": SLOTS},
            object_store_memory=80 * MiB,
            env_vars={"BOXLITE_HOME": home},
        )
        self.homes[node.node_id] = home
        self.nodes[node.node_id] = node
        return node.node_id

    @property
    def worker_ids(self) -> List[str]:
        return list(self.homes)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # Short: the homes hold unix sockets (108-byte path limit).
    base = tempfile.mkdtemp(prefix="bxr-", dir="/tmp")
    os.chmod(base, 0o755)  # the jailed helpers run as other users
    c = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=0,  # no box slots, no work: the driver's node
            include_dashboard=False,
            object_store_memory=80 * MiB,
            # A killed node is declared dead in about 2 s, not 30.
            _system_config={"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0},
        ),
    )
    lc = LocalCluster(c, base)
    for _ in range(WORKERS):
        lc.add_worker()
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield lc
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def image() -> str:
    layout = os.path.join(os.environ.get("BOXLITE_CACHE", os.path.expanduser("~/.cache/boxlite")), "test-images", "busybox")
    if not os.path.isfile(os.path.join(layout, "index.json")):
        pytest.fail(f"no busybox test image at {layout}: run scripts/build-test-images.sh")
    return "oci-layout:" + layout


def _blob(layout: str, data: bytes) -> Dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    Path(layout, "blobs", "sha256", digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


@pytest.fixture(scope="session")
def variant(image: str, cluster: LocalCluster) -> Callable[[str], str]:
    """A copy of the busybox image whose config differs (BOXLITE_VARIANT=tag in its Env),
    so its manifest, and so its base disk, is its own."""

    def make(tag: str) -> str:
        src = image[len("oci-layout:") :]
        dst = os.path.join(cluster.base, f"image-{tag}")
        shutil.copytree(src, dst)
        index = json.loads(Path(dst, "index.json").read_text())
        desc = index["manifests"][0]
        manifest = json.loads(Path(dst, "blobs", "sha256", desc["digest"].split(":")[1]).read_text())
        config = json.loads(Path(dst, "blobs", "sha256", manifest["config"]["digest"].split(":")[1]).read_text())
        config["config"]["Env"].append(f"BOXLITE_VARIANT={tag}")
        manifest["config"].update(_blob(dst, json.dumps(config).encode()))
        desc.update(_blob(dst, json.dumps(manifest).encode()))
        Path(dst, "index.json").write_text(json.dumps(index))
        return "oci-layout:" + dst

    return make


def settle(predicate: Callable[[], bool], seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture
def make_pool(cluster: LocalCluster) -> Iterator[Callable[..., Any]]:
    """BoxPool(image, ...) with small boxes (1 vCPU, 256 MiB); shut down at teardown (after
    a failure's logs were collected)."""
    from boxlite.ray import BoxPool

    pools: List[Any] = []

    def make(image: str, **kwargs: Any) -> Any:
        kwargs.setdefault("cpus", 1)
        kwargs.setdefault("memory_mib", 256)
        kwargs.setdefault("engine", ENGINE)
        pool = BoxPool(image, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()


def logs(cluster: LocalCluster) -> str:
    """The last lines of every box's console and shim log, and of the agents' worker logs."""
    out = []
    for home in cluster.homes.values():
        for log in sorted(Path(home, "boxes").glob("*/**/*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {log}\n" + "\n".join(lines))
    session = Path("/tmp/ray/session_latest/logs")
    for log in sorted(session.glob("worker-*.err"), key=lambda p: p.stat().st_mtime)[-6:]:
        lines = log.read_text(errors="replace").splitlines()[-15:]
        if lines:
            out.append(f"--- {log}\n" + "\n".join(lines))
    return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "cluster" in item.funcargs:
        report.sections.append(("box and agent logs", logs(item.funcargs["cluster"])))
