#!/usr/bin/env bash
# The Node binding's tests (bindings/node/test/, scenarios of bindings/SCENARIOS.md): installs
# its dependencies (koffi, from npm, as package-lock.json pins them) once, then runs the
# suite with `node --test` and real VMs against target/debug/libboxlite.so (BOXLITE_LIBRARY
# overrides it) and the busybox test root disk. Prints node's TAP summary and a line
# "N passed, M failed".
# Needs Node >= 20 and npm, target/debug/libboxlite.so and its helpers (cargo build -p boxlite),
# the guest (scripts/build-guest.sh) and target/guest/busybox-rootfs.ext4
# (scripts/build-test-rootfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d bindings/node/node_modules/koffi ]; then
  (cd bindings/node && npm ci --no-audit --no-fund --loglevel=error)
fi
export BOXLITE_LIBRARY="${BOXLITE_LIBRARY:-$PWD/target/debug/libboxlite.so}"
[ -f "$BOXLITE_LIBRARY" ] || { echo "test-node: no $BOXLITE_LIBRARY; run cargo build -p boxlite" >&2; exit 1; }
export BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$PWD/target/guest/busybox-rootfs.ext4}"
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
# One test file at a time (the VMs share two cores); a hung test fails after 120 s.
(cd bindings/node && node --test --test-concurrency=1 --test-timeout=120000 "$@" test/*.test.js) 2>&1 | tee "$log" || status=$?
# node's TAP summary: "# pass N" and "# fail M"
awk '/^# pass /{ p = $3 } /^# fail /{ f = $3 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
