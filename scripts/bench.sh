#!/usr/bin/env bash
# The benchmarks: boxlite-bench (every figure, src/bin/boxlite-bench), then boot
# (benches/boot.rs), exec (benches/exec.rs), images (benches/images.rs: needs the Python
# image, built here once) and network (benches/network.rs: the gateway, a forward and
# connect latency) and files (benches/files.rs: copy in/out and virtio-fs), in release
# builds.
# BOXLITE_BENCH_RUNS sets the runs per engine (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guest.sh
cargo build --release --quiet -p boxlite-shim -p boxlite-netgw
scripts/build-test-rootfs.sh >/dev/null
# Every figure in one harness (cold start, exec, stream, idle box, image, density): tables
# and one JSON document; its raw vsock figure uses the Python image, so build it first.
cargo build --release --quiet -p boxlite --bin boxlite-bench
scripts/build-test-images.sh >/dev/null
scripts/build-python-image.sh >/dev/null
target/release/boxlite-bench --json target/boxlite-bench.json
cargo bench --quiet --bench boot
cargo bench --quiet --bench exec
scripts/build-python-image.sh >/dev/null
cargo bench --quiet --bench images
scripts/build-test-images.sh >/dev/null
cargo bench --quiet --bench files
exec cargo bench --quiet --bench network
