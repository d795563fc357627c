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
. scripts/lib/pyenv.sh
"$venv/bin/python" -c 'import ray' 2>/dev/null || { echo "bench-ray: no Ray in $venv; run scripts/test-ray.sh once" >&2; exit 1; }
pyenv_require_library bench-ray
pyenv_for_ray
exec "$venv/bin/python" bindings/bench/ray_bench.py "$layout" "$@"
