"""Binding overhead benchmark, Python (scripts/bench-bindings.sh): the same as exec_c.c
through bindings/python. Prints one JSON line.
Usage: python3 bench.py HOME ROOTFS [N]"""
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import boxlite  # noqa: E402

STREAM_BYTES = 64 * 1024 * 1024


def percentile(sorted_samples, p):
    """Nearest rank (the same rule as exec_c.c)."""
    rank = min(max(math.ceil(p / 100.0 * len(sorted_samples) - 1e-6), 1), len(sorted_samples))
    return sorted_samples[rank - 1]


def main():
    home, rootfs = sys.argv[1], sys.argv[2]
    n = max(int(sys.argv[3]) if len(sys.argv) > 3 else 100, 1)
    with boxlite.Runtime(home=home, engine="qemu") as runtime:
        with runtime.create_box(root_disk=rootfs, root_disk_read_only=True, auto_remove=True) as box:
            for _ in range(5):  # warm up: boots the box
                box.exec("true", check=True)
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                result = box.exec("true")
                samples.append((time.perf_counter() - t0) * 1e3)
                if result.exit_code != 0:
                    sys.exit(f"bench.py: true exited {result.exit_code}")
            samples.sort()
            streamed = 0
            t0 = time.perf_counter()
            execution = box.stream("head", "-c", str(STREAM_BYTES), "/dev/zero")
            for chunk in execution:
                if chunk.stream == "stdout":
                    streamed += len(chunk.data)
            stream_s = time.perf_counter() - t0
            result = execution.wait()
            execution.close()
            if result.exit_code != 0 or streamed != STREAM_BYTES:
                sys.exit(f"bench.py: stream exited {result.exit_code} with {streamed} bytes")
            box.stop()
    print(json.dumps({
        "lang": "python", "n": n,
        "true_p50_ms": round(percentile(samples, 50), 3),
        "true_p99_ms": round(percentile(samples, 99), 3),
        "stream_mb_s": round(streamed / 1e6 / stream_s, 2),
    }, separators=(",", ":")))


if __name__ == "__main__":
    main()
