#!/usr/bin/env bash
# Boot benchmark: release builds of the shim and the harness, then benches/boot.rs.
# BOXLITE_BENCH_RUNS sets the runs per engine (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guest.sh
cargo build --release --quiet -p boxlite-shim
scripts/build-test-rootfs.sh >/dev/null
cargo bench --quiet --bench boot
exec cargo bench --quiet --bench exec
