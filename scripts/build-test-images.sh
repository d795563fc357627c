#!/usr/bin/env bash
# Builds the test images as OCI image layouts, from Debian's packages only (no registry):
#   busybox: two gzip layers from busybox-static. The second adds /etc/os-release and /srv,
#            hides /etc/motd with a whiteout and makes /opt/old opaque, so that whiteouts are
#            exercised. Config: Env (PATH, BOXLITE_IMAGE=busybox), WorkingDir /srv, Cmd [sh].
# Output: $BOXLITE_CACHE/test-images/busybox (tag "latest"), rebuilt only when busybox or
# this script changes. Prints the layout's path.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
busybox=/bin/busybox
file "$busybox" | grep -q 'statically linked' || {
  echo "build-test-images: $busybox is not the static busybox; run scripts/setup.sh" >&2; exit 1; }
out="$BOXLITE_CACHE/test-images/busybox"
stamp=$( { sha256sum "$busybox"; cat "$0"; } | sha256sum | cut -c1-16)
if [ -f "$out/index.json" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"; exit 0
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
. scripts/lib/oci-layout.sh
oci_begin "$work/layout"

l1="$work/layer1"
mkdir -p "$l1"/{bin,dev,etc,proc,sys,tmp,root,home/tester,opt/old,usr/bin,var}
install -m 0755 "$busybox" "$l1/bin/busybox"
for applet in $("$busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$l1/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:test user:/home/tester:/bin/sh\n' > "$l1/etc/passwd"
printf 'root:x:0:\ntester:x:1000:\n' > "$l1/etc/group"
echo "hidden by the second layer" > "$l1/etc/motd"
echo "from the first layer" > "$l1/opt/old/a"
chmod 1777 "$l1/tmp"

l2="$work/layer2"
mkdir -p "$l2"/{etc,srv,opt/old}
printf 'NAME="boxlite busybox"\nID=boxlite-busybox\nVERSION_ID=1\n' > "$l2/etc/os-release"
echo "from the second layer" > "$l2/opt/old/b"
: > "$l2/etc/.wh.motd"
: > "$l2/opt/old/.wh..wh..opq"

oci_add_layer "$l1"
oci_add_layer "$l2"
oci_finish '{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","BOXLITE_IMAGE=busybox"],"WorkingDir":"/srv","Cmd":["sh"]}' latest

mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp"; cp -a "$work/layout" "$out.tmp"; rm -rf "$out"; mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "$out"
