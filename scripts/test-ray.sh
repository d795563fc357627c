#!/usr/bin/env bash
# The Ray box pool's tests (bindings/python/tests_ray/): a local multi-node Ray cluster on
# this machine (ray.cluster_utils.Cluster: a head with no box slots, three workers with two
# slots and a runtime home each) and real VMs on every node. Installs Ray into target/pyvenv
# once (the venv of scripts/test-python.sh; made here if missing), then runs the suite with
# pytest against target/debug/libboxlite.so (BOXLITE_LIBRARY overrides it) and the busybox
# test image (scripts/build-test-images.sh). Prints pytest's summary line last.
# Needs: cargo build -p boxlite, scripts/build-guest.sh, scripts/build-test-images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pyenv.sh
pyenv_ensure_venv
if ! "$venv/bin/python" -c 'import ray' 2>/dev/null; then
  # Ray's core only (no dashboard, no [default] extra): the suite needs no more.
  "$venv/bin/pip" install --quiet 'ray>=2.40'
fi
pyenv_require_library test-ray
pyenv_for_ray
cd bindings/python
exec "../../$venv/bin/python" -m pytest -p no:cacheprovider -q -rfE tests_ray "$@"
