#!/usr/bin/env bash
# The C API's tests: checks that include/boxlite.h is what cbindgen generates, that it
# declares only boxlite_/BOXLITE_ names (scripts/check-header-names.py, which also checks
# that it catches an unprefixed one), and that
# docs/c-api.md shows tests/c/example.c; then builds boxlite with CMake, installs it into a
# staging prefix, builds tests/c/ against that prefix twice (find_package and pkg-config)
# with AddressSanitizer/LeakSanitizer, and runs every scenario with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/gen-header.sh --check
python3 scripts/check-header-names.py --self-test
if ! awk '/^```c$/{on=1; next} /^```$/{on=0} on' docs/c-api.md | diff -u tests/c/example.c - >/dev/null; then
  echo "test-c: the example in docs/c-api.md differs from tests/c/example.c" >&2; exit 1
fi
cmake -S . -B target/cmake -DCMAKE_BUILD_TYPE=Release -DBOXLITE_C_TESTS=ON -DBOXLITE_SANITIZE=ON >/dev/null
cmake --build target/cmake
ctest --test-dir target/cmake --output-on-failure
