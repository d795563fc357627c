#!/usr/bin/env bash
# The benchmarks: boot (benches/boot.rs), exec (benches/exec.rs), images
# (benches/images.rs: needs the Python image, built here once) and network
# (benches/network.rs: the gateway, a forward and connect latency) and files
# (benches/files.rs: copy in/out and virtio-fs), in release builds.
# BOXLITE_BENCH_RUNS sets the runs per engine (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guest.sh
cargo build --release --quiet -p boxlite-shim -p boxlite-netgw
scripts/build-test-rootfs.sh >/dev/null
cargo bench --quiet --bench boot
cargo bench --quiet --bench exec
scripts/build-python-image.sh >/dev/null
cargo bench --quiet --bench images
scripts/build-test-images.sh >/dev/null
cargo bench --quiet --bench files
exec cargo bench --quiet --bench network
