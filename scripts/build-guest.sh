#!/usr/bin/env bash
# Builds the static boxlite-guest agent and packs it as /init of an uncompressed initramfs
# (an uncompressed cpio boots ~300 ms faster under TCG than a gzip one).
# Also links the cached guest kernel as target/guest/vmlinux (building it if needed), so
# that target/guest/ holds everything a VM boots and the library finds it there.
# Output: target/guest/{initramfs.cpio,vmlinux}.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${BOXLITE_GUEST_PROFILE:-release}"
target=x86_64-unknown-linux-gnu
# +crt-static only for the target: the explicit --target keeps build scripts dynamic.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --profile "$profile" \
  --target "$target" -p boxlite-guest --target-dir target/guest-build
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
agent="target/guest-build/$target/$dir/boxlite-guest"
if ! file "$agent" | grep -q 'static'; then
  echo "build-guest: $agent is dynamically linked; the initramfs needs a static binary" >&2; exit 1
fi

stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{dev,proc,sys,tmp,run,rootfs}
install -m 0755 "$agent" "$stage/init"
strip "$stage/init"   # a smaller initramfs is less for the VMM to copy in at boot
mkdir -p target/guest
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > target/guest/initramfs.cpio.tmp
mv target/guest/initramfs.cpio.tmp target/guest/initramfs.cpio
kernel=$(guest/kernel/build-kernel.sh | tail -n1)
ln -sfn "$kernel" target/guest/vmlinux
echo "build-guest: $PWD/target/guest/initramfs.cpio, vmlinux -> $kernel" >&2
