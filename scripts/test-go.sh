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
GO=${GO:-$(command -v go || echo /usr/lib/go-1.23/bin/go)}
[ -x "$GO" ] || { echo "test-go: no go (install golang-1.23 from bookworm-backports: scripts/setup.sh)" >&2; exit 1; }
lib=$repo/target/debug/libboxlite.so
[ -f "$lib" ] || { echo "test-go: no $lib; run cargo build -p boxlite" >&2; exit 1; }
# The package links through `#cgo pkg-config: boxlite`. For the source tree, a boxlite.pc
# that points at include/ and target/debug (rpath included; the library there finds its
# helpers beside itself), and the link its SONAME (libboxlite.so.0) asks the loader for.
ln -sfn libboxlite.so "$repo/target/debug/libboxlite.so.0"
pc=$repo/target/go-pkgconfig
mkdir -p "$pc"
cat >"$pc/boxlite.pc" <<PC
Name: boxlite
Description: boxlite in the source tree (target/debug), for the Go binding's tests
Version: 0.2.0
Libs: -L$repo/target/debug -lboxlite -Wl,-rpath,$repo/target/debug
Cflags: -I$repo/include
PC
export PKG_CONFIG_PATH="$pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$repo/target/guest/busybox-rootfs.ext4}"
export GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN=local GOPROXY=off
# cgo's pointer checks on (the default, said out loud); GOEXPERIMENT=cgocheck2 for the
# stricter ones also passes, at the price of rebuilding the standard library.
export GODEBUG="${GODEBUG:+$GODEBUG,}cgocheck=1"
# Two shared cores: keep the build narrow.
export GOMAXPROCS="${GOMAXPROCS:-2}"
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
cd bindings/go
"$GO" vet ./... || status=$?
# -count=1: never a cached result (the tests boot VMs against whatever library is built).
"$GO" test -race -count=1 -p 1 -timeout 300s -v ./... "$@" 2>&1 | tee "$log" || status=$?
awk '/^ *--- PASS/ { p++ } /^ *--- FAIL/ { f++ } END { printf "%d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || exit "$status"
