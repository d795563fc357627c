#!/usr/bin/env bash
# Builds the Python image as an OCI layout from Debian's packages: debootstrap minbase of
# bookworm plus python3, one gzip layer. Config: Cmd [python3], WorkingDir /root,
# Env PATH, LANG. Takes a few minutes the first time (downloads packages from Debian's
# mirror); cached in $BOXLITE_CACHE/test-images/python (tag "3") afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
: "${BOXLITE_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { echo "build-python-image: debootstrap is missing; run scripts/setup.sh" >&2; exit 1; }
out="$BOXLITE_CACHE/test-images/python"
stamp=$( { cat "$0" scripts/lib/oci-layout.sh; echo "$BOXLITE_DEBIAN_MIRROR"; } | sha256sum | cut -c1-16)
if [ -f "$out/index.json" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"; exit 0
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "build-python-image: debootstrap bookworm (minbase + python3) from $BOXLITE_DEBIAN_MIRROR" >&2
debootstrap --variant=minbase --include=python3 bookworm "$work/rootfs" "$BOXLITE_DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# What an image does not need: package caches and lists, logs of the build.
rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/log/*.log

. scripts/lib/oci-layout.sh
oci_begin "$work/layout"
oci_add_layer "$work/rootfs"
oci_finish '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","LANG=C.UTF-8"],"WorkingDir":"/root","Cmd":["python3"]}' 3

mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp"; cp -a "$work/layout" "$out.tmp"; rm -rf "$out"; mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "$out"
