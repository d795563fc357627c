#!/usr/bin/env bash
# The main job: sets everything up (each piece cached), then runs a short Python program in
# a box created from the locally built Python image, stops the box, starts it again and shows
# that the file the program wrote is still there, with boot and exec times.
# Extra arguments go to boxlite (e.g. --engine qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-guest.sh
python_image=$(scripts/build-python-image.sh | tail -n1)
cargo build --workspace --quiet
boxlite=(target/debug/boxlite --home "$PWD/target/quickstart-home" "$@")
"${boxlite[@]}" rm --force quickstart >/dev/null 2>&1 || true

echo "== 1. A new box from the Python image runs a program, then stops"
"${boxlite[@]}" import "$python_image" localhost/boxlite/python:3 >/dev/null
"${boxlite[@]}" run --name quickstart --timings localhost/boxlite/python:3 \
  python3 -c '
import platform, statistics
primes = [n for n in range(2, 200) if all(n % d for d in range(2, int(n ** 0.5) + 1))]
report = f"{len(primes)} primes below 200, mean {statistics.mean(primes):.1f}; Python {platform.python_version()} on {platform.machine()}"
print(report)
with open("/root/report.txt", "w") as f:
    f.write(report + "\n")
'

echo "== 2. The same box, started again: the file it wrote is still there"
"${boxlite[@]}" start quickstart >/dev/null
"${boxlite[@]}" exec quickstart cat /root/report.txt
"${boxlite[@]}" stop quickstart >/dev/null
"${boxlite[@]}" ps -a
