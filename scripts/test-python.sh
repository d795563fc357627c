#!/usr/bin/env bash
# The Python binding's tests (bindings/python/tests/, scenarios of bindings/SCENARIOS.md):
# makes a venv under target/pyvenv with pytest (from PyPI, once), then runs the suite with
# real VMs against target/debug/libboxlite.so (BOXLITE_LIBRARY overrides it) and the busybox
# test root disk. Prints pytest's summary and a line "N passed, M failed".
# Needs target/debug/libboxlite.so and its helpers (cargo build -p boxlite), the guest
# (scripts/build-guest.sh) and target/guest/busybox-rootfs.ext4 (scripts/build-test-rootfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pyenv.sh
pyenv_ensure_venv
pyenv_require_library test-python
export BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$PWD/target/guest/busybox-rootfs.ext4}"
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
(cd bindings/python && "../../$venv/bin/python" -m pytest -p no:cacheprovider -q -rfE "$@") 2>&1 | tee "$log" || status=$?
# pytest's last line: "N passed, M failed, ... in Xs" (either count may be missing)
tail -n 1 "$log" | awk '{ for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p = $i; if ($(i+1) ~ /^(failed|errors?)/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }'
exit "$status"
