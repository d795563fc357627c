#!/usr/bin/env python3
"""Host memory and CPU of N idle boxes (issue 15, part 3).

Starts N bare VMs one after another with `boxlite boot --hold` (each prints its shim, VMM
and helper pids as JSON and holds the VM until its stdin closes), lets them settle, then
reads for every box: PSS of shim + VMM + helpers (/proc/PID/smaps_rollup), the part of
the VMM's PSS that is guest RAM (the mapping of memory_mib in /proc/PID/smaps) and the
rest split into anon and file, and the CPU all of them use over an idle window
(/proc/PID/stat utime + stime). Prints one table and a JSON line; a measuring tool,
not a test.

    scripts/measure-idle.py [-n 10] [--memory 256] [--settle 20] [--window 15]
"""
import argparse
import json
import os
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rollup(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def guest_ram_pss(pid, memory_mib):
    """PSS (kB) of the mapping of exactly memory_mib: the guest RAM memfd."""
    size_kb = memory_mib * 1024
    total = 0
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "Size:":
                current = int(parts[1]) == size_kb
            elif parts and parts[0] == "Pss:" and current:
                total += int(parts[1])
    return total


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="boxes (default 10)")
    parser.add_argument("--memory", type=int, default=256, help="MiB per box (default 256)")
    parser.add_argument("--settle", type=float, default=20, help="seconds idle before measuring (default 20)")
    parser.add_argument("--window", type=float, default=15, help="CPU window in seconds (default 15)")
    parser.add_argument("--boxlite", default="target/release/boxlite", help="the CLI binary")
    args = parser.parse_args()

    env = dict(os.environ, BOXLITE_ENGINE=os.environ.get("BOXLITE_ENGINE", "qemu"))
    boxes = []
    started = time.monotonic()
    try:
        for i in range(args.n):
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [args.boxlite, "boot", "--hold", "--memory", str(args.memory)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                sys.exit(f"measure-idle: box {i} failed to boot (boxlite exited {proc.returncode})")
            info = json.loads(line)
            boxes.append((proc, info))
            print(f"box {i}: booted in {time.monotonic() - t0:.2f} s, pids {info['pids']}", file=sys.stderr)
        print(f"measure-idle: {args.n} boxes up after {time.monotonic() - started:.1f} s; settling {args.settle} s", file=sys.stderr)
        time.sleep(args.settle)

        pids = [p for _, info in boxes for p in info["pids"]]
        before = {p: cpu_ticks(p) for p in pids}
        t0 = time.monotonic()
        time.sleep(args.window)
        elapsed = time.monotonic() - t0
        after = {p: cpu_ticks(p) for p in pids}
        cpu_total = sum(after[p] - before[p] for p in pids) / CLK_TCK / elapsed

        pss = anon = guest = vmm = 0
        for _, info in boxes:
            for pid in info["pids"]:
                r = rollup(pid)
                pss += r.get("Pss", 0)
                anon += r.get("Pss_Anon", 0)
                guest += guest_ram_pss(pid, args.memory)
                if pid == info["vmm_pid"]:
                    vmm += r.get("Pss", 0)
        n = args.n
        result = {
            "boxes": n,
            "memory_mib": args.memory,
            "pss_per_box_mib": pss / n / 1024,
            "guest_ram_pss_per_box_mib": guest / n / 1024,
            "rest_per_box_mib": (pss - guest) / n / 1024,
            "anon_pss_per_box_mib": anon / n / 1024,
            "vmm_pss_per_box_mib": vmm / n / 1024,
            "idle_cpu_per_box_pct": 100 * cpu_total / n,
        }
        print(f"boxes {n} x {args.memory} MiB, idle window {elapsed:.1f} s")
        print(f"  PSS per box (shim + VMM + helpers)  {result['pss_per_box_mib']:7.1f} MiB")
        print(f"    guest RAM touched                 {result['guest_ram_pss_per_box_mib']:7.1f} MiB")
        print(f"    the rest                          {result['rest_per_box_mib']:7.1f} MiB")
        print(f"    of which anon (heap, TCG cache)   {result['anon_pss_per_box_mib']:7.1f} MiB")
        print(f"  VMM PSS per box                     {result['vmm_pss_per_box_mib']:7.1f} MiB")
        print(f"  idle CPU per box                    {result['idle_cpu_per_box_pct']:7.2f} % of a core")
        print(json.dumps(result))
    finally:
        for proc, _ in boxes:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc, _ in boxes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
