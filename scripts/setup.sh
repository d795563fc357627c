#!/usr/bin/env bash
# Installs everything boxlite needs to build and test on a fresh Debian 12 machine, then
# builds the cached pieces (guest kernel, vsock backend, virtio-fs server). Idempotent: every
# step skips work that is already done, so running it again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
export BOXLITE_CACHE
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

log() { printf '\n== setup: %s\n' "$*"; }

# --- apt packages -----------------------------------------------------------------------
# linux-source-6.12 lives in bookworm-backports (Debian 12) or in trixie's main.
ensure_backports() {
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports (for linux-source-6.12)"
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/boxlite-backports.list >/dev/null
  fi
}

APT_PACKAGES=(
  qemu-system-x86        # the qemu engine (microvm machine, TCG on hosts without hardware KVM)
  qemu-utils             # qemu-img: qcow2 overlays
  e2fsprogs cpio         # ext4 images, the initramfs archive
  build-essential bc flex bison libelf-dev libssl-dev xz-utils  # the guest kernel build
  python3 file           # test helpers; file(1) checks that the agent is static
  busybox-static         # the userland of the test root disk (scripts/build-test-rootfs.sh)
  cmake pkg-config g++   # the C API's build, install and C tests (CTest)
  umoci                  # the reference our layer assembly is compared with
  skopeo docker-registry apache2-utils debootstrap  # image tests: a loopback registry, htpasswd, a Python image
  libcap-ng-dev libseccomp-dev  # building virtiofsd (volumes with the qemu engine)
  strace                 # scripts/trace-syscalls.sh: measuring the seccomp policies
  golang-1.23            # the Go binding's tests (scripts/test-go.sh); bookworm-backports on Debian 12
)

need_apt=()
for p in "${APT_PACKAGES[@]}" linux-source-6.12; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  ensure_backports
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  # On bookworm, take backports first: linux-source-6.12 is only there, and the machine's
  # qemu-utils may already come from there (it Breaks bookworm's own qemu-system 7.2).
  target=()
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then target=(-t bookworm-backports); fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" "${need_apt[@]}" >/dev/null; then
    echo "setup: apt-get install ${need_apt[*]} failed" >&2; exit 1
  fi
fi

# --- host tools from crates.io ---------------------------------------------------------------
TOOLS="$BOXLITE_CACHE/tools"
if [ ! -x "$TOOLS/bin/vhost-device-vsock" ]; then
  log "cargo install vhost-device-vsock -> $TOOLS"
  cargo install --locked --quiet --root "$TOOLS" vhost-device-vsock
fi

# The virtio-fs server for volumes with the qemu engine (docs/volumes.md).
if [ ! -x "$TOOLS/bin/virtiofsd" ]; then
  log "cargo install virtiofsd -> $TOOLS"
  cargo install --locked --quiet --root "$TOOLS" virtiofsd@1.14.0
fi

if [ ! -x "$TOOLS/bin/cbindgen" ]; then
  log "cargo install cbindgen -> $TOOLS"
  cargo install --locked --quiet --root "$TOOLS" cbindgen
fi

# --- guest kernel (cached by content hash) ---------------------------------------------------
log "guest kernel"
guest/kernel/build-kernel.sh
