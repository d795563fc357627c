#!/usr/bin/env bash
# Builds the boxlite guest kernel (ELF vmlinux) from Debian's linux-source-6.12 with
# tinyconfig + config.fragment + the patches below, and caches it by a hash of
# (source package version, fragment, this script) under $BOXLITE_CACHE/kernel/<hash>/.
# Prints the path of the cached vmlinux on its last line. Built once per machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"

version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) || {
  echo "build-kernel: linux-source-6.12 is not installed; run scripts/setup.sh (it installs it from bookworm-backports)" >&2
  exit 1
}
hash=$( { echo "$version"; cat "$here/config.fragment" "$here/build-kernel.sh"; } | sha256sum | cut -c1-16)
out="$BOXLITE_CACHE/kernel/$hash"
if [ -f "$out/vmlinux" ]; then
  echo "$out/vmlinux"; exit 0
fi

tarball=$(ls /usr/src/linux-source-6.12*.tar.xz | head -n1)
work="$BOXLITE_CACHE/kernel/build-$hash"
rm -rf "$work"; mkdir -p "$work"
echo "build-kernel: extracting $tarball (package $version)" >&2
tar -xf "$tarball" -C "$work" --strip-components=1

cd "$work"
# Patch 1 (boot time): do not poison freed __init memory. Under TCG the poisoned pages are
# re-translated code; skipping the memset saves ~400 ms of boot. Nothing reads that memory.
# (The call spans two lines in 6.12: `free_reserved_area(..., end,\n POISON_FREE_INITMEM, what)`.)
sed -i 's/^\(\s*\)POISON_FREE_INITMEM, what);/\1-1, what);/' arch/x86/mm/init.c
grep -q 'POISON_FREE_INITMEM' arch/x86/mm/init.c \
  && { echo "build-kernel: the init-memory patch no longer applies to arch/x86/mm/init.c" >&2; exit 1; }

make -s ARCH=x86_64 tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/config.fragment" >/dev/null
make -s ARCH=x86_64 olddefconfig >/dev/null
# Every option the fragment asks for must have stuck (a dependency we missed shows up here).
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=n) opt=${line%%=*}; grep -q "^$opt=" .config && { echo "build-kernel: $opt still set" >&2; missing=1; } ;;
                  CONFIG_*=*) grep -qx "$line" .config || { echo "build-kernel: $line did not stick" >&2; missing=1; } ;; esac
done < "$here/config.fragment"
[ "$missing" = 0 ] || exit 1

echo "build-kernel: make vmlinux with $(nproc) jobs (about 10 min on 2 cores)" >&2
make -s ARCH=x86_64 -j"$(nproc)" vmlinux >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"; cp .config "$out.tmp/config"
echo "$version" > "$out.tmp/source-version"
rm -rf "$out"; mv "$out.tmp" "$out"
cd /; rm -rf "$work"
echo "$out/vmlinux"
