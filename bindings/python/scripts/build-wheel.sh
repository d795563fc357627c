#!/usr/bin/env bash
# Builds the boxlite wheel, py3-none-linux_x86_64, carrying libboxlite.so and its helpers in
# the install-prefix layout inside the package (boxlite/_lib/, boxlite/libexec/boxlite/,
# boxlite/share/boxlite/), so the bundled library finds them with no environment:
#   bindings/python/scripts/build-wheel.sh [release|debug]   (default: release, else debug)
# Output: target/python-wheel/boxlite-<version>-py3-none-linux_x86_64.whl
# Needs the library and helpers built (cargo build [--release] -p boxlite plus the shim and
# netgw binaries, scripts/build-guest.sh) and vhost-device-vsock / virtiofsd where
# scripts/setup.sh puts them. Uses the venv target/pyvenv (setuptools and wheel from PyPI).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
profile="${1:-}"
if [ -z "$profile" ]; then
  profile=release; [ -f "$repo/target/release/libboxlite.so" ] || profile=debug
fi
bin="$repo/target/$profile"
cache="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
find_tool() { # first existing file among the arguments
  for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done
  echo "build-wheel: none of $* exists" >&2; exit 1
}
lib=$(find_tool "$bin/libboxlite.so")
shim=$(find_tool "$bin/boxlite-shim")
netgw=$(find_tool "$bin/boxlite-netgw")
vsock=$(find_tool "$cache/tools/bin/vhost-device-vsock" "$(command -v vhost-device-vsock || true)")
virtiofsd=$(find_tool "$cache/tools/bin/virtiofsd" "$(command -v virtiofsd || true)" /usr/libexec/virtiofsd)
kernel=$(find_tool "$repo/target/guest/vmlinux")
initramfs=$(find_tool "$repo/target/guest/initramfs.cpio")

out="$repo/target/python-wheel"
stage="$out/stage"
rm -rf "$stage"; mkdir -p "$stage"
cp -r "$here/boxlite" "$here/pyproject.toml" "$here/README.md" "$stage/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$stage/boxlite/_lib" "$stage/boxlite/libexec/boxlite" "$stage/boxlite/share/boxlite"
install -m 0755 "$lib" "$stage/boxlite/_lib/libboxlite.so"
install -m 0755 "$shim" "$netgw" "$vsock" "$virtiofsd" "$stage/boxlite/libexec/boxlite/"
install -m 0644 "$(readlink -f "$kernel")" "$stage/boxlite/share/boxlite/vmlinux"
install -m 0644 "$initramfs" "$stage/boxlite/share/boxlite/initramfs.cpio"

venv="$repo/target/pyvenv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet setuptools wheel
rm -f "$out"/boxlite-*.whl
"$venv/bin/pip" wheel --quiet --no-deps --no-build-isolation -w "$out" "$stage"
built=$(ls "$out"/boxlite-*-py3-none-any.whl)
# The package is pure Python but carries x86_64 Linux binaries: one platform tag.
"$venv/bin/python" -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag linux_x86_64 "$built" >/dev/null
ls -l "$out"/boxlite-*-py3-none-linux_x86_64.whl
