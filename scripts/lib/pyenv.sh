# Sourced by the scripts that run Python against the source tree's library (test-python.sh,
# test-ray.sh, bench-ray.sh), from the repository root. One place for the venv and the
# library they share.

# The venv of the Python tests (target/pyvenv), made with pytest from PyPI if missing.
venv=target/pyvenv
pyenv_ensure_venv() {
  if [ ! -x "$venv/bin/pytest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pytest
  fi
}

# Exports BOXLITE_LIBRARY (default target/debug/libboxlite.so); fails, naming the fix, if it
# is missing. $1: the calling script's name, for the message.
pyenv_require_library() {
  export BOXLITE_LIBRARY="${BOXLITE_LIBRARY:-$PWD/target/debug/libboxlite.so}"
  [ -f "$BOXLITE_LIBRARY" ] || { echo "$1: no $BOXLITE_LIBRARY; run cargo build -p boxlite" >&2; exit 1; }
}

# Sets `layout` to the busybox test image's OCI layout, building it if missing; and lets Ray's
# workers import boxlite from the source tree, as the driver does, with no usage reporting.
pyenv_for_ray() {
  layout="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}/test-images/busybox"
  [ -f "$layout/index.json" ] || scripts/build-test-images.sh >/dev/null
  export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
  export RAY_USAGE_STATS_ENABLED=0
}
