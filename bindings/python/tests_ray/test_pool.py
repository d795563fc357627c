"""boxlite.ray.BoxPool on a local multi-node Ray cluster (conftest): real VMs on every node.

Each test makes its own pool (its own name) and shuts it down; the cluster is shared. The
node-death test adds a node of its own and kills it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
from conftest import ENGINE, LocalCluster, settle
from ray.util.placement_group import PlacementGroup, placement_group_table

import boxlite
from boxlite import ProgramNotFound
from boxlite.ray import AsyncBoxPool, BoxDied, LeaseExpired, NodeDied, PoolError, box_processes


def live_groups(pool_name: str) -> list:
    return [
        pg for pg, e in placement_group_table().items() if e.get("name", "").startswith(f"boxlite-{pool_name}-") and e.get("state") != "REMOVED"
    ]


def test_lease_runs_where_ray_placed_it_and_keeps_its_files(cluster: LocalCluster, make_pool, image: str, tmp_path: Path) -> None:
    pool = make_pool(image, name="t-lease")
    with pool.lease() as box:
        # Ray placed the box's bundle; the box runs in that node's home, no other.
        assert placement_group_table(PlacementGroup(ray.PlacementGroupID.from_hex(box.group_id)))["bundles_to_node_id"][0] == box.node_id
        assert box.node_id in cluster.homes
        for node_id, home in cluster.homes.items():
            assert Path(home, "boxes", box.box_id).is_dir() == (node_id == box.node_id)
        assert pool.nodes()[box.node_id]["leases"] == 1

        # State persists across calls (each a Ray call to the node's agent).
        box.exec("sh", "-c", "echo one > /srv/state", check=True)
        assert box.exec("cat", "/srv/state").stdout == b"one\n"
        assert box.exec("sh", "-c", "echo err >&2; exit 3").exit_code == 3
        with pytest.raises(ProgramNotFound):
            box.exec("no-such-program")

        # Files both ways.
        src = tmp_path / "tree"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "a.txt").write_text("alpha")
        box.copy_in(src, "/srv/")
        assert box.exec("cat", "/srv/tree/sub/a.txt").stdout == b"alpha"
        box.copy_out("/srv/tree", tmp_path / "back")
        assert (tmp_path / "back" / "sub" / "a.txt").read_text() == "alpha"

        # Streaming in bounded batches, in order per stream; stdin.
        chunks = list(box.stream("sh", "-c", "echo a; echo b >&2; head -c 3000000 /dev/zero"))
        stdout = b"".join(c.data for c in chunks if c.stream == "stdout")
        assert stdout[:2] == b"a\n" and len(stdout) == 2 + 3000000
        assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"b\n"
        ex = box.start_exec("cat")
        ex.stdin.write(b"ping ")
        ex.stdin.write("pong")
        ex.stdin.close()
        assert ex.wait().stdout == b"ping pong"
        lease_id = box.lease_id
    with pytest.raises(LeaseExpired):
        box.exec("true")
    assert settle(lambda: pool.nodes()[box.node_id]["boxes"] == 0), "the released box (no warm target) was not removed"
    assert not Path(cluster.homes[box.node_id], "boxes", box.box_id).exists()
    assert lease_id not in str(pool.nodes())


def test_map_spreads_forty_jobs_over_the_nodes_in_order(cluster: LocalCluster, make_pool, image: str) -> None:
    pool = make_pool(image, name="t-map")

    def job(box, i):
        return box.node_id, box.exec("sh", "-c", f"echo $(({i} * 3))", check=True).stdout

    results = pool.map(job, range(40))
    assert [int(out) for _, out in results] == [i * 3 for i in range(40)]
    assert {node for node, _ in results} == set(cluster.worker_ids)
    # A command: the item is $1; an ExecResult per item, in order.
    assert [r.stdout for r in pool.map("echo item-$1", ["x", "y", "z"])] == [b"item-x\n", b"item-y\n", b"item-z\n"]
    assert sum(n["boots"] for n in pool.nodes().values()) >= 43  # a fresh box per item


def test_second_lease_prefers_the_node_with_the_base_disk(cluster: LocalCluster, make_pool, variant) -> None:
    image = variant("affinity")  # a base disk no node has built yet
    pool = make_pool(image, name="t-aff", best_of=len(cluster.homes))
    with pool.lease() as first:
        home = first.node_id
    disks = {nid: image in info["base_disks"] for nid, info in pool.nodes().items()}
    assert disks == {nid: nid == home for nid in cluster.homes}
    # Every node has a free slot; without the affinity bonus each lease would pick at random.
    for _ in range(3):
        with pool.lease() as box:
            assert box.node_id == home
            assert not box.warm


def test_a_dead_vm_is_reported_and_replaced(cluster: LocalCluster, make_pool, image: str) -> None:
    pool = make_pool(image, name="t-vm", warm=1)
    homes = list(cluster.homes.values())

    def kill_vm(box_id: str) -> None:
        """SIGKILLs the box's qemu and waits until its shim has ended too."""
        shims = []
        for pid, comm in box_processes(homes):
            try:
                if comm.startswith("qemu") and box_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    shims.append(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]))
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        assert shims, f"no qemu found for box {box_id}"
        assert settle(lambda: not any(Path(f"/proc/{s}").exists() for s in shims))

    with pool.lease() as box:
        assert box.warm
        kill_vm(box.box_id)
        with pytest.raises(BoxDied, match="died"):
            box.exec("true")
    # Once the released box is back as a warm one, kill every warm box: the next lease finds
    # them dead, counts them, and boots anew.
    assert settle(lambda: all(n["warm"] == {image: 1} and n["boxes"] == 1 for n in pool.nodes().values()))
    warm_ids = [p.name for h in homes for p in Path(h, "boxes").iterdir() if not p.name.startswith(".")]
    assert len(warm_ids) == len(homes)
    for bid in warm_ids:
        kill_vm(bid)
    with pool.lease() as fresh:
        assert fresh.box_id not in warm_ids
        assert fresh.exec("echo", "alive").stdout == b"alive\n"
    assert sum(n["vm_deaths"] for n in pool.nodes().values()) >= 2


def test_a_recycled_box_keeps_its_group_while_its_replacement_boots(cluster: LocalCluster, make_pool, image: str) -> None:
    # The sweep after a node death removes every group no live agent reports; a released box
    # kept warm is replaced by a fresh boot in the same slot, and its group must stay reported
    # throughout, or the sweep frees the slot under the new warm box.
    pool = make_pool(image, name="t-refill")
    box = pool.lease()
    group, node = box.group_id, box.node_id
    assert box.exec("true").ok
    box.release(keep_warm=True)
    sweeps = 0
    while pool.nodes()[node]["warm"].get(image, 0) < 1:
        pool._sweep_groups()
        sweeps += 1
        assert sweeps < 2000, "the released box never came back warm"
    assert sweeps > 1, "the replacement booted before the first sweep: nothing was tested"
    assert group in live_groups("t-refill") and group in pool.nodes()[node]["groups"]
    with pool.lease() as again:
        assert again.warm and again.group_id == group


def test_a_driver_that_dies_loses_its_lease_after_the_ttl(cluster: LocalCluster, make_pool, image: str) -> None:
    pool = make_pool(image, name="t-ttl")
    driver = f"""
import sys, time, ray
from boxlite.ray import BoxPool
ray.init(address={cluster.cluster.address!r}, logging_level="ERROR", log_to_driver=False)
pool = BoxPool.connect("t-ttl")
box = pool.lease(ttl=4)
box.exec("touch", "/srv/mine", check=True)
print(box.box_id, box.node_id, flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 2, f"the second driver failed: {proc.stderr.read() if proc.poll() is not None else ''}"
        box_id, node_id = line
        assert pool.nodes()[node_id]["leases"] == 1
        assert len(live_groups("t-ttl")) == 1
    finally:
        proc.send_signal(signal.SIGKILL)  # no release, no goodbye
        proc.wait()
    assert Path(cluster.homes[node_id], "boxes", box_id).is_dir()  # the TTL has not run out yet
    assert settle(lambda: pool.nodes()[node_id]["reclaimed"] == 1, 60), pool.nodes()[node_id]
    assert settle(lambda: not Path(cluster.homes[node_id], "boxes", box_id).exists() and not live_groups("t-ttl"))
    assert pool.nodes()[node_id]["leases"] == 0


def test_shutdown_leaves_nothing_running(cluster: LocalCluster, make_pool, image: str) -> None:
    pool = make_pool(image, name="t-down", warm=1)
    leases = [pool.lease() for _ in range(2)]
    homes = list(cluster.homes.values())
    running = box_processes(homes)
    kinds = {comm for _, comm in running}
    assert {"boxlite-shim", "qemu-system-x86", "vhost-device-vs", "boxlite-netgw"} <= kinds, running
    assert sum(1 for _, c in running if c == "boxlite-shim") == len(cluster.homes) + len(leases) - sum(l.warm for l in leases)
    report = pool.shutdown()
    assert sum(r["removed"] for r in report.values()) == len(cluster.homes) + len(leases) - sum(l.warm for l in leases)
    assert all(r["left"] == [] for r in report.values()), report
    assert box_processes(homes) == []
    assert not live_groups("t-down")
    assert all(not list(Path(h, "boxes").glob("[!.]*")) for h in homes)
    with pytest.raises(PoolError, match="shut down"):
        pool.lease()
    with pytest.raises(LeaseExpired):
        leases[0].exec("true")


def test_a_node_killed_mid_run_fails_only_its_leases(cluster: LocalCluster, make_pool, image: str) -> None:
    victim = cluster.add_worker()  # this test's own node
    pool = make_pool(image, name="t-kill")
    started = threading.Event()

    def job(box, i):
        if box.node_id == victim:
            started.set()
        out = box.exec("sh", "-c", f"sleep 3; echo {i}", check=True).stdout
        return box.node_id, out

    killer = threading.Thread(target=lambda: started.wait(300) and cluster.cluster.remove_node(cluster.nodes[victim], allow_graceful=False))
    killer.start()
    results = pool.map(job, range(16), return_exceptions=True)
    killer.join()
    failed = [r for r in results if isinstance(r, Exception)]
    assert failed, "no lease was on the killed node"
    for r in failed:
        assert isinstance(r, NodeDied) and victim[:12] in str(r), r
    for i, r in enumerate(results):
        if not isinstance(r, Exception):
            assert r == (r[0], f"{i}\n".encode()) and r[0] != victim
    assert len(failed) <= 2  # the victim's two slots: a lease still being placed there moves on
    # The pool goes on with the other nodes, and nothing runs on for the dead one.
    with pool.lease() as box:
        assert box.node_id != victim and box.exec("true").ok
    assert "dead" in pool.nodes()[victim]
    # The groups of the dead node's boxes are removed (Ray would move them to other nodes):
    # what is left is what the live agents hold.
    held = lambda: {g for n in pool.nodes().values() for g in n.get("groups", [])}  # noqa: E731
    assert settle(lambda: set(live_groups("t-kill")) == held()), (live_groups("t-kill"), held())
    assert settle(lambda: box_processes([cluster.homes[victim]]) == []), box_processes([cluster.homes[victim]])
    report = pool.shutdown()
    assert "dead" in report[victim]
    assert not live_groups("t-kill")
    assert box_processes(list(cluster.homes.values())) == []


def test_agents_reap_orphans_and_the_asyncio_api(cluster: LocalCluster, make_pool, image: str) -> None:
    # A pool box left in a node's home by an agent that died: the next agent removes it.
    node_id, home = next(iter(cluster.homes.items()))
    with boxlite.Runtime(home=home, engine=ENGINE) as rt, rt.create_box(image="never-pulled", name="ray-gone-0123456789") as b:
        orphan = b.id
    pool = make_pool(image, name="t-aio")
    assert pool.nodes()[node_id]["reaped_orphans"] == 1
    assert not Path(home, "boxes", orphan).exists()

    async def main() -> None:
        apool = AsyncBoxPool(pool)
        async with apool.lease() as box:
            assert (await box.exec("sh", "-c", "echo $BOXLITE_IMAGE")).stdout == b"busybox\n"
            chunks = [c async for c in box.stream("sh", "-c", "echo x; echo y >&2")]
            assert sorted((c.stream, c.data) for c in chunks) == [("stderr", b"y\n"), ("stdout", b"x\n")]
        results = await apool.map("echo $1", ["p", "q"])
        assert [r.stdout for r in results] == [b"p\n", b"q\n"]

    asyncio.run(main())
