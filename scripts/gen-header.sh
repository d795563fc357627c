#!/usr/bin/env bash
# Regenerates include/boxlite.h from src/ffi/ with cbindgen. With --check, fails (and shows
# the diff) if the committed header differs from what cbindgen generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
cbindgen=$(command -v cbindgen || echo "$BOXLITE_CACHE/tools/bin/cbindgen")
[ -x "$cbindgen" ] || { echo "gen-header: cbindgen not found; run scripts/setup.sh" >&2; exit 1; }
if [ "${1:-}" = --check ]; then
  fresh=$(mktemp); trap 'rm -f "$fresh"' EXIT
  "$cbindgen" --quiet --config cbindgen.toml --output "$fresh" src/ffi/mod.rs
  if ! diff -u include/boxlite.h "$fresh"; then
    echo "gen-header: include/boxlite.h is stale: run scripts/gen-header.sh and commit it" >&2; exit 1
  fi
else
  "$cbindgen" --quiet --config cbindgen.toml --output include/boxlite.h src/ffi/mod.rs
fi
