#!/usr/bin/env bash
# Runs every test: builds the guest (agent + initramfs, kernel from the cache), the
# workspace (library, CLI, shim with libkrun), type-checks the benchmarks, then runs
# `cargo test` over the workspace and prints one summary line of all its results.
# Needs what scripts/setup.sh installs; run that first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guest.sh
scripts/build-test-rootfs.sh >/dev/null
cargo build --workspace --quiet
cargo check --benches --quiet
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
