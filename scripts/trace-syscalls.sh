#!/usr/bin/env bash
# Traces every syscall of the processes of running VMs (the shim, qemu-system-x86_64,
# vhost-device-vsock) while integration tests boot and use real VMs, then lists per process
# kind what was seen and what its seccomp policy (src/shim/seccomp/*.json) lacks or allows
# unused. This is how the policies were derived; rerun it after changing the shim, qemu or
# the backend (docs/seccomp.md).
#
#   scripts/trace-syscalls.sh [TEST...]     default tests: exec boot exec_flow boxes
#
# Needs strace (>= 5.19 for --decode-pids) and root (strace attaches to the shim). The shim
# runs with its filters on: a syscall a policy lacks kills its process, which the summary
# reports as "KILLED BY SIGSYS" (and the test fails). The shim clears its environment and
# closes inherited fds before spawning qemu and the backend, so the wrapper uses absolute
# paths and strace follows the children from the shim itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(exec boot exec_flow boxes)
strace=$(command -v strace) || { echo "strace is not installed (apt-get install strace)" >&2; exit 1; }

cargo build -p boxlite-shim --quiet
work=$(mktemp -d /tmp/boxlite-trace.XXXXXX)
mkdir -p "$work/out"
# A copy: a rebuild during the run must not change the traced binary.
cp target/debug/boxlite-shim "$work/boxlite-shim"
# strace attaches to the wrapper, which then execs the shim: the library's pid for the shim
# stays the shim's own (it kills it with SIGKILL on drop), and the trace covers its end.
cat > "$work/shim" <<WRAPPER
#!/bin/sh
$strace -ff -ttt -qq --decode-pids=pidns -o $work/out/shim.\$\$ -p \$\$ &
while ! grep -q "TracerPid:[[:space:]]*[1-9]" /proc/\$\$/status; do :; done
exec $work/boxlite-shim "\$@"
WRAPPER
chmod +x "$work/shim"

status=0
for t in "${tests[@]}"; do
    echo "== cargo test --test $t (traced)"
    BOXLITE_SHIM="$work/shim" cargo test --quiet --test "$t" -- --test-threads=1 || status=$?
done
python3 "$root/scripts/lib/classify-syscalls.py" "$work/out" "$root/src/shim/seccomp"
echo "traces: $work/out"
exit "$status"
