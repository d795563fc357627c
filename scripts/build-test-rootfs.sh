#!/usr/bin/env bash
# Builds the root disk the exec tests boot: a busybox-static userland with root and one
# unprivileged user (tester, uid 1000), as an ext4 image made by mke2fs -d.
# Output: target/guest/busybox-rootfs.ext4 (rebuilt only when busybox or this script changes).
set -euo pipefail
cd "$(dirname "$0")/.."
busybox=/bin/busybox
file "$busybox" | grep -q 'statically linked' || {
  echo "build-test-rootfs: $busybox is not the static busybox; run scripts/setup.sh (it installs busybox-static)" >&2; exit 1; }
out=target/guest/busybox-rootfs.ext4
stamp=$( { sha256sum "$busybox"; cat "$0"; } | sha256sum | cut -c1-16)
if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$PWD/$out"; exit 0
fi

stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,etc,proc,sys,tmp,root,home/tester,usr/bin,var}
install -m 0755 "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
done
cat > "$stage/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
tester:x:1000:1000:test user:/home/tester:/bin/sh
PASSWD
cat > "$stage/etc/group" <<'GROUP'
root:x:0:
tester:x:1000:
GROUP
# The agent binds the box's resolv.conf over this file when the box has a network (the
# root disk is read-only in the tests, so the file must exist beforehand).
: > "$stage/etc/resolv.conf"
chmod 1777 "$stage/tmp"
chown 1000:1000 "$stage/home/tester"
mkdir -p target/guest
rm -f "$out.tmp"
mke2fs -q -t ext4 -d "$stage" -L boxlite-test "$out.tmp" 64M >/dev/null
mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "$PWD/$out"
