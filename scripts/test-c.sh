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
# A real registry on loopback for tests/c/pull.c: docker-registry, the busybox test image
# pushed with skopeo. Stopped when this script exits.
: "${BOXLITE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}"
registry_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$registry_dir" "$port" > "$registry_dir/registry.yml"
docker-registry serve "$registry_dir/registry.yml" > "$registry_dir/registry.log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null; rm -rf "$registry_dir"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$registry_dir/registry.log" >&2; echo "test-c: docker-registry exited" >&2; exit 1; }
  sleep 0.1
done
skopeo copy --quiet --dest-tls-verify=false "oci:$BOXLITE_CACHE/test-images/busybox:latest" \
  "docker://127.0.0.1:$port/boxlite/busybox:latest"
export BOXLITE_TEST_REGISTRY="127.0.0.1:$port"

cmake -S . -B target/cmake -DCMAKE_BUILD_TYPE=Release -DBOXLITE_C_TESTS=ON -DBOXLITE_SANITIZE=ON >/dev/null
cmake --build target/cmake
ctest --test-dir target/cmake --output-on-failure
