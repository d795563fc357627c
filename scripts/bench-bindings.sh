#!/usr/bin/env bash
# Binding overhead benchmark (issue 14): per binding (Python, Go, Node), the warm exec round
# trip of `true` (p50/p99 of N, default 100) and 64 MiB streamed through the stdout
# callback, beside the same done from C in the same run, with the ratio binding / C (the
# binding's overhead). One box of the busybox read-only root disk per program, qemu engine,
# each program on its own fresh home. A harness that prints figures, not a test.
# Prints a table, then one JSON document. Usage: scripts/bench-bindings.sh [N]
# Needs target/debug/libboxlite.so and its helpers (cargo build -p boxlite), the guest,
# target/guest/busybox-rootfs.ext4, gcc, python3, node (bindings/node/node_modules) and Go
# (GO, default: go on PATH or /usr/lib/go-1.23/bin/go).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=${1:-100}
lib=$repo/target/debug/libboxlite.so
[ -f "$lib" ] || { echo "bench-bindings: no $lib; run cargo build -p boxlite" >&2; exit 1; }
rootfs=${BOXLITE_TEST_ROOTFS:-$repo/target/guest/busybox-rootfs.ext4}
[ -f "$rootfs" ] || { echo "bench-bindings: no $rootfs; run scripts/build-test-rootfs.sh" >&2; exit 1; }
. scripts/lib/goenv.sh
goenv_require_go bench-bindings
[ -d bindings/node/node_modules/koffi ] || (cd bindings/node && npm ci --no-audit --no-fund --loglevel=error)

tmp=$(mktemp -d /tmp/boxlite-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export BOXLITE_LIBRARY=$lib

# C: against include/ and target/debug, with an rpath (and the SONAME link, from goenv_setup).
goenv_setup
gcc -O2 -Wall -o "$tmp/exec_c" bindings/bench/exec_c.c -I"$repo/include" \
  -L"$repo/target/debug" -lboxlite -Wl,-rpath,"$repo/target/debug"

# Go: through the module's `#cgo pkg-config: boxlite` (goenv_setup above).
(cd bindings/go && "$GO" build -o "$tmp/boxlite-bench" ./cmd/boxlite-bench)

results=$tmp/results.jsonl
: >"$results"
run() { # name command...: one JSON line appended to $results
  echo "bench-bindings: $1..." >&2
  "${@:2}" | tail -n 1 >>"$results"
}
run c      "$tmp/exec_c" "$tmp/home-c" "$rootfs" "$n"
run python python3 bindings/bench/bench.py "$tmp/home-python" "$rootfs" "$n"
run go     "$tmp/boxlite-bench" "$tmp/home-go" "$rootfs" "$n"
run node   node bindings/bench/bench.js "$tmp/home-node" "$rootfs" "$n"

python3 - "$results" "$n" "$(nproc)" <<'PY'
import json, sys
rows = {r["lang"]: r for r in map(json.loads, open(sys.argv[1]))}
c = rows["c"]
metrics = [("true_p50_ms", "true p50 (ms)"), ("true_p99_ms", "true p99 (ms)"), ("stream_mb_s", "64 MiB stream (MB/s)")]
doc = {"n": int(sys.argv[2]), "cores": int(sys.argv[3]), "engine": "qemu", "c": c, "bindings": {}}
print(f"| binding | {' | '.join(f'{label}: binding / C / ratio' for _, label in metrics)} |")
print("|---|" + "---|" * len(metrics))
for lang in ("python", "go", "node"):
    r = rows[lang]
    ratios = {k: round(r[k] / c[k], 3) for k, _ in metrics}
    doc["bindings"][lang] = dict(r, ratio=ratios)
    cells = [f"{r[k]:g} / {c[k]:g} / {ratios[k]:.2f}" for k, _ in metrics]
    print(f"| {lang} | {' | '.join(cells)} |")
print(json.dumps(doc, separators=(",", ":")))
PY
