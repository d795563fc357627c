#!/usr/bin/env bash
# The Ray box pool benchmark (issue 16; bindings/bench/ray_bench.py): jobs/s of a short
# command through BoxPool.map on a local two-worker Ray cluster beside the same jobs on one
# runtime without Ray (the ratio is Ray's and the pool's overhead), the exec round trip
# through a node agent beside a local one, and lease latency of a warm box vs a cold one.
# A harness that prints figures (a table, then one JSON line), not a test.
# Usage: scripts/bench-ray.sh [N_JOBS (24)] [LEASES (5)]
# Needs what scripts/test-ray.sh needs (it installs Ray into target/pyvenv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyvenv
"$venv/bin/python" -c 'import ray' 2>/dev/null || { echo "bench-ray: no Ray in $venv; run scripts/test-ray.sh once" >&2; exit 1; }
export BOXLITE_LIBRARY="${BOXLITE_LIBRARY:-$PWD/target/debug/libboxlite.so}"
[ -f "$BOXLITE_LIBRARY" ] || { echo "bench-ray: no $BOXLITE_LIBRARY; run cargo build -p boxlite" >&2; exit 1; }
layout="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}/test-images/busybox"
[ -f "$layout/index.json" ] || scripts/build-test-images.sh >/dev/null
export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0
exec "$venv/bin/python" bindings/bench/ray_bench.py "$layout" "$@"
