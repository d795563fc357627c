# Sourced by the scripts that build the Go binding against the source tree's library
# (test-go.sh, bench-bindings.sh), from the repository root. One place for the Go toolchain,
# the pkg-config file the module's `#cgo pkg-config: boxlite` reads, and the Go settings.

# Sets GO (default: go on PATH or Debian's /usr/lib/go-1.23/bin/go); fails, naming the fix,
# without one. $1: the calling script's name, for the message.
goenv_require_go() {
  GO=${GO:-$(command -v go || echo /usr/lib/go-1.23/bin/go)}
  [ -x "$GO" ] || { echo "$1: no go (install golang-1.23 from bookworm-backports: scripts/setup.sh)" >&2; exit 1; }
}

# Points pkg-config at target/debug's library and include/ (target/go-pkgconfig/boxlite.pc,
# with an rpath and the SONAME link), and exports the settings every Go command here uses:
# modules from the tree only, no toolchain download, two threads as this machine has.
goenv_setup() {
  local repo=$PWD pc=$PWD/target/go-pkgconfig
  ln -sfn libboxlite.so "$repo/target/debug/libboxlite.so.0"
  mkdir -p "$pc"
  cat >"$pc/boxlite.pc" <<PC
Name: boxlite
Description: boxlite in the source tree (target/debug), for the Go binding's tests
Version: 0.2.0
Libs: -L$repo/target/debug -lboxlite -Wl,-rpath,$repo/target/debug
Cflags: -I$repo/include
PC
  export PKG_CONFIG_PATH="$pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN=local GOPROXY=off
  export GOMAXPROCS="${GOMAXPROCS:-2}"
}
