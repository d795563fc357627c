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
mkdir -p "$work/blobs/sha256"

# Writes stdin as a blob; prints "<digest> <size>".
put_blob() {
  cat > "$work/blob.tmp"
  local hex size
  hex=$(sha256sum "$work/blob.tmp" | cut -d' ' -f1)
  size=$(stat -c %s "$work/blob.tmp")
  mv "$work/blob.tmp" "$work/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
# A reproducible gzip tar of a directory's contents.
tar_gz() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf - . | gzip -n; }

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

read -r l1_digest l1_size < <(tar_gz "$l1" | put_blob)
read -r l2_digest l2_size < <(tar_gz "$l2" | put_blob)
l1_diff=$(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$l1" -cf - . | sha256sum | cut -d' ' -f1)
l2_diff=$(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$l2" -cf - . | sha256sum | cut -d' ' -f1)

read -r config_digest config_size < <(printf '%s' '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","BOXLITE_IMAGE=busybox"],"WorkingDir":"/srv","Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:'"$l1_diff"'","sha256:'"$l2_diff"'"]}}' | put_blob)

layer_media=application/vnd.oci.image.layer.v1.tar+gzip
read -r manifest_digest manifest_size < <(printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'"$config_digest"'","size":'"$config_size"'},"layers":[{"mediaType":"'"$layer_media"'","digest":"'"$l1_digest"'","size":'"$l1_size"'},{"mediaType":"'"$layer_media"'","digest":"'"$l2_digest"'","size":'"$l2_size"'}]}' | put_blob)

printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"
printf '%s' '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'"$manifest_digest"'","size":'"$manifest_size"',"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' > "$work/index.json"
rm -rf "$work/layer1" "$work/layer2"

mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp"; cp -a "$work" "$out.tmp"; rm -rf "$out"; mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "$out"
