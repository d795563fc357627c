#!/usr/bin/env bash
# Builds the wheel (scripts/build-wheel.sh), installs it into a fresh venv outside the source
# tree and runs the README's opening example there with no BOXLITE_* helper variables and no
# pkg-config: the bundled library must find its bundled helpers. Needs a host qemu.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
"$here/scripts/build-wheel.sh" "$@"
work=$(mktemp -d /tmp/bxwheel-XXXXXX); trap 'rm -rf "$work"' EXIT
# The jailed helpers (netgw) run as an unprivileged user: the venv must be traversable.
chmod 0755 "$work"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$repo"/target/python-wheel/boxlite-*-py3-none-linux_x86_64.whl
awk '/^```python$/{on=1; next} /^```$/{if (on) exit} on' "$here/README.md" > "$work/example.py"
mkdir "$work/home"
cd "$work"
env -u BOXLITE_LIBRARY -u BOXLITE_SHIM -u BOXLITE_NETGW -u BOXLITE_KERNEL -u BOXLITE_INITRAMFS \
  PKG_CONFIG_PATH=/nonexistent PKG_CONFIG_LIBDIR=/nonexistent BOXLITE_HOME="$work/home" \
  BOXLITE_ENGINE="${BOXLITE_TEST_ENGINE:-qemu}" \
  BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$repo/target/guest/busybox-rootfs.ext4}" \
  "$work/venv/bin/python" -c 'import boxlite._ffi as f; print("loaded", f.lib_path())' 
env -u BOXLITE_LIBRARY -u BOXLITE_SHIM -u BOXLITE_NETGW -u BOXLITE_KERNEL -u BOXLITE_INITRAMFS \
  PKG_CONFIG_PATH=/nonexistent PKG_CONFIG_LIBDIR=/nonexistent BOXLITE_HOME="$work/home" \
  BOXLITE_ENGINE="${BOXLITE_TEST_ENGINE:-qemu}" \
  BOXLITE_TEST_ROOTFS="${BOXLITE_TEST_ROOTFS:-$repo/target/guest/busybox-rootfs.ext4}" \
  "$work/venv/bin/python" example.py | tee "$work/out"
grep -qx '0 hello from a box' "$work/out"
echo "test-wheel: ok"
