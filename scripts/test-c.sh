#!/usr/bin/env bash
# The C API's tests: builds and installs boxlite with CMake into target/c-prefix, then
# builds tests/c/ against that prefix twice (find_package and pkg-config), with
# AddressSanitizer/LeakSanitizer, and runs each with CTest. Also checks that
# include/boxlite.h is what cbindgen generates and that docs/c-api.md shows tests/c/example.c.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/gen-header.sh --check
if ! awk '/^```c$/{on=1; next} /^```$/{on=0} on' docs/c-api.md | diff -u tests/c/example.c - >/dev/null; then
  echo "test-c: the example in docs/c-api.md differs from tests/c/example.c" >&2; exit 1
fi
BOXLITE_TEST_ROOTFS=$(scripts/build-test-rootfs.sh | tail -n1)
export BOXLITE_TEST_ROOTFS

prefix="$PWD/target/c-prefix"
rm -rf "$prefix"
cmake -S . -B target/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build target/cmake
cmake --install target/cmake >/dev/null

for find in CONFIG PKGCONFIG; do
  build="target/c-tests-$(echo "$find" | tr 'A-Z' 'a-z')"
  rm -rf "$build"
  PKG_CONFIG_PATH="$prefix/lib/pkgconfig" cmake -S tests/c -B "$build" -DBOXLITE_FIND="$find" \
    -DCMAKE_PREFIX_PATH="$prefix" -DBOXLITE_SANITIZE=ON >/dev/null
  cmake --build "$build" -- --quiet
  echo "== C API tests, boxlite found through $find"
  ctest --test-dir "$build" --output-on-failure
done
