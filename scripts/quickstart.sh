#!/usr/bin/env bash
# Sets everything up (idempotent, cached) and runs the main job: boot a box, print what its
# agent answers and how long the boot took, shut it down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-guest.sh
cargo build --workspace --quiet
exec target/debug/boxlite boot "$@"
