#!/usr/bin/env bash
# Runs every test: checks formatting (cargo fmt) and lints (clippy with warnings as errors,
# and the workspace lints of Cargo.toml), builds the guest (agent + initramfs, kernel from
# the cache), the test root disk and the test images (busybox; Python by debootstrap, about a minute the first
# time), the workspace (library, CLI, shim with libkrun, benchmarks), runs
# `cargo test` over the workspace, then the C API's tests (scripts/test-c.sh: CMake
# install, pkg-config and find_package consumers, AddressSanitizer), the Python binding's
# tests (scripts/test-python.sh: pytest) and its wheel (installed in a fresh venv), the Ray box
# pool on a local multi-node cluster (scripts/test-ray.sh), the Go binding's tests (scripts/test-go.sh: go vet,
# go test -race), the Node binding's tests (scripts/test-node.sh: node --test), and prints one summary
# line of all results. It first runs scripts/setup.sh (idempotent: a fraction of a second
# when everything is installed and cached), so it works as the first command on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check || { echo "test: run cargo fmt --all" >&2; exit 1; }
scripts/build-guest.sh
scripts/build-test-rootfs.sh >/dev/null
scripts/build-test-images.sh >/dev/null
scripts/build-python-image.sh >/dev/null
# All targets in the dev profile: the benchmarks are compiled (not run) with the test deps.
cargo build --workspace --all-targets --quiet
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
scripts/test-c.sh 2>&1 | tee -a "$log" || status=$?
# The Python binding's scenarios (bindings/python, pytest in a venv under target/).
scripts/test-python.sh 2>&1 | tee -a "$log" || status=$?
# The wheel, built from this commit's release build (test-c.sh made it), installed in a fresh
# venv outside the tree, runs the README example with nothing but a host qemu.
bindings/python/scripts/test-wheel.sh 2>&1 | tee -a "$log" || status=$?
# The Ray box pool (bindings/python/tests_ray: a local multi-node Ray cluster on this machine;
# installs Ray from PyPI into target/pyvenv once).
scripts/test-ray.sh 2>&1 | tee -a "$log" || status=$?
# The Go binding's scenarios (bindings/go, go vet + go test -race).
scripts/test-go.sh 2>&1 | tee -a "$log" || status=$?
# The Node binding's scenarios (bindings/node, node --test; koffi from npm via npm ci).
scripts/test-node.sh 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /tests passed, [0-9]+ tests failed out of/ { f += $4; p += $NF - $4 }
     /^(=+ )?[0-9]+ (passed|failed|errors?)(,.*)? in [0-9.]+s/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^(failed|errors?)/) f += $i } }
     /^ *--- PASS: / { p++ }  /^ *--- FAIL: / { f++ }
     /^# pass [0-9]+$/ { p += $3 }  /^# fail [0-9]+$/ { f += $3 }
     /^test-wheel: ok$/ { p++ }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
