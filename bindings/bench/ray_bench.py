"""Ray box pool benchmark (scripts/bench-ray.sh): a harness that prints figures, not a test.

On a local Ray cluster on this machine (a head with no slots, WORKERS nodes with SLOTS box
slots each, a runtime home each), with boxes of the busybox test image (1 vCPU, 256 MiB):

1. jobs/s: N jobs, each a fresh box running `echo i`, through `pool.map` (every box recycled:
   removed and recreated on the image's base disk), beside the same N jobs run directly on
   one runtime without Ray (create, start, exec, remove; WORKERS*SLOTS threads); ratio
   pool / direct (Ray's overhead, the pool's box bookkeeping included).
2. exec round trip: `true` in a leased box through its node agent (a Ray call) beside the
   same on a box of a local runtime (p50, ms); ratio.
3. lease latency: lease() of a warm box (booted ahead) beside a cold one (booted for it):
   median of R each, ms.

Prints a table, then one JSON line. Usage: python3 ray_bench.py IMAGE_LAYOUT [N] [R]"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import boxlite  # noqa: E402
from boxlite.ray import BoxPool  # noqa: E402

WORKERS, SLOTS = 2, 2
MiB = 1 << 20
BOX = dict(cpus=1, memory_mib=256)


def direct_jobs(home: str, layout: str, n: int) -> float:
    """Seconds for n fresh-box jobs on one runtime, WORKERS*SLOTS at a time."""
    with boxlite.Runtime(home=home, engine="qemu") as rt:
        rt.import_image(layout, "bench/busybox:latest")
        warmup = rt.create_box(image="bench/busybox:latest", **BOX)  # builds the base disk
        warmup.exec("true", check=True)
        warmup.remove()
        warmup.close()

        def job(i: int) -> bytes:
            with rt.create_box(image="bench/busybox:latest", **BOX) as box:
                try:
                    return box.exec("echo", str(i), check=True).stdout
                finally:
                    box.remove()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(WORKERS * SLOTS) as ex:
            out = list(ex.map(job, range(n)))
        took = time.perf_counter() - t0
        assert out == [f"{i}\n".encode() for i in range(n)]
        return took


def direct_exec_ms(home: str, r: int) -> float:
    with boxlite.Runtime(home=home, engine="qemu") as rt, rt.create_box(image="bench/busybox:latest", **BOX) as box:
        for _ in range(5):
            box.exec("true", check=True)
        samples = []
        for _ in range(r):
            t0 = time.perf_counter()
            box.exec("true", check=True)
            samples.append((time.perf_counter() - t0) * 1e3)
        box.remove()
    return statistics.median(samples)


def main() -> None:
    layout = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    r = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    image = "oci-layout:" + layout
    base = tempfile.mkdtemp(prefix="bxrb-", dir="/tmp")
    os.chmod(base, 0o755)
    figures = {"jobs": n, "workers": WORKERS, "slots_per_worker": SLOTS}
    try:
        took = direct_jobs(os.path.join(base, "direct"), layout, n)
        figures["direct_jobs_per_s"] = n / took
        figures["direct_exec_p50_ms"] = direct_exec_ms(os.path.join(base, "direct"), 50)

        t0 = time.perf_counter()
        cluster = Cluster(
            initialize_head=True,
            head_node_args=dict(num_cpus=0, include_dashboard=False, object_store_memory=80 * MiB),
        )
        for i in range(WORKERS):
            cluster.add_node(
                num_cpus=SLOTS,
                resources={"boxlite_slot": SLOTS},
                object_store_memory=80 * MiB,
                env_vars={"BOXLITE_HOME": os.path.join(base, f"n{i}")},
            )
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        figures["cluster_start_s"] = time.perf_counter() - t0
        try:
            pool = BoxPool(image, engine="qemu", name="bench", **BOX)
            pool.map("true", range(WORKERS * SLOTS))  # every node imports the image, builds its base disk
            t0 = time.perf_counter()
            out = pool.map("echo $1", range(n))
            took = time.perf_counter() - t0
            assert [o.stdout for o in out] == [f"{i}\n".encode() for i in range(n)]
            figures["pool_jobs_per_s"] = n / took
            figures["pool_over_direct_jobs"] = figures["pool_jobs_per_s"] / figures["direct_jobs_per_s"]

            with pool.lease() as box:
                for _ in range(5):
                    box.exec("true", check=True)
                samples = []
                for _ in range(50):
                    t0 = time.perf_counter()
                    box.exec("true", check=True)
                    samples.append((time.perf_counter() - t0) * 1e3)
            figures["pool_exec_p50_ms"] = statistics.median(samples)
            figures["pool_over_direct_exec"] = figures["pool_exec_p50_ms"] / figures["direct_exec_p50_ms"]
            pool.shutdown()

            # Lease latency: cold (nothing warm: boot in a new slot) vs warm (one per node).
            pool = BoxPool(image, engine="qemu", name="bench-lease", warm=1, **BOX)
            cold, warm = [], []
            for _ in range(r):
                box = pool.lease()
                assert box.warm
                warm.append(box.lease_s * 1e3)
                box.release(keep_warm=True)
                # back to warm on its node before the next one (not timed)
                while sum(i["warm"].get(image, 0) for i in pool.nodes().values()) < WORKERS:
                    time.sleep(0.1)
            held = [pool.lease() for _ in range(WORKERS)]  # take the warm ones out of the way
            for _ in range(r):
                box = pool.lease()
                assert not box.warm
                cold.append(box.lease_s * 1e3)
                box.release(keep_warm=False)
            for box in held:
                box.release(keep_warm=False)
            figures["lease_warm_ms"] = statistics.median(warm)
            figures["lease_cold_ms"] = statistics.median(cold)
            figures["lease_cold_over_warm"] = figures["lease_cold_ms"] / figures["lease_warm_ms"]
            report = pool.shutdown()
            figures["left_after_shutdown"] = sum(len(v.get("left", [])) for v in report.values())
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"{'figure':<34}{'value':>12}")
    for key, value in figures.items():
        print(f"{key:<34}{value:>12.3f}" if isinstance(value, float) else f"{key:<34}{value:>12}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
