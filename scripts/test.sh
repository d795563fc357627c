#!/usr/bin/env bash
# Runs every test: builds the guest (agent + initramfs, kernel from the cache), the
# workspace (library, CLI, shim with libkrun), then `cargo test` over the workspace.
# Needs what scripts/setup.sh installs; run that first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guest.sh
cargo build --workspace --quiet
cargo test --workspace
