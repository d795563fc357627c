#!/usr/bin/env bash
# The Go binding's tests (bindings/go, scenarios of bindings/SCENARIOS.md): `go vet`, then
# `go test -race -v` (cgocheck on, the default) with real VMs against target/debug/libboxlite.so
# and the busybox test root disk. Prints a line "N passed, M failed" (the --- PASS and
# --- FAIL lines of go test -v, subtests included).
# Needs Go 1.22 or newer (Debian: golang-1.23 from bookworm-backports, scripts/setup.sh),
# pkg-config, target/debug/libboxlite.so and its helpers (cargo build -p boxlite), the guest
# (scripts/build-guest.sh) and target/guest/busybox-rootfs.ext4 (scripts/build-test-rootfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
. scripts/lib/goenv.sh
goenv_require_go test-go
lib=$repo/target/debug/libboxlite.so
[ -f "$lib" ] || { echo "test-go: no $lib; run cargo build -p boxlite" >&2; exit 1; }
# The package links through `#cgo pkg-config: boxlite` (scripts/lib/goenv.sh).
goenv_setup
export BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$repo/target/guest/busybox-rootfs.ext4}"
# cgo's pointer checks on (the default, said out loud); GOEXPERIMENT=cgocheck2 for the
# stricter ones also passes, at the price of rebuilding the standard library.
export GODEBUG="${GODEBUG:+$GODEBUG,}cgocheck=1"
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
cd bindings/go
"$GO" vet ./... || status=$?
# -count=1: never a cached result (the tests boot VMs against whatever library is built).
"$GO" test -race -count=1 -p 1 -timeout 300s -v ./... "$@" 2>&1 | tee "$log" || status=$?
awk '/^ *--- PASS/ { p++ } /^ *--- FAIL/ { f++ } END { printf "%d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || exit "$status"
