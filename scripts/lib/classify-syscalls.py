#!/usr/bin/env python3
"""Sorts the syscalls of traced boxlite-shim runs by process kind and compares them with the
seccomp policies. Input: the files of `strace -ff -ttt -o DIR/shim.<run>` (one per thread).

Kinds: qemu and vhost_vsock (from their execve on, with all their threads), supervisor (the
shim's threads after its seccomp(TSYNC) call, or after qemu's fork if the trace has none), pre_exec (a shim child between fork and execve:
the filter goes on at its end, so only execve there must pass). The shim before the spawn
runs unfiltered and is not reported.

Usage: classify-syscalls.py TRACE_DIR POLICY_DIR
"""
import collections
import json
import os
import re
import sys

CALL = re.compile(r'^(\d+\.\d+) (\w+)\(')
# With --decode-pids=pidns a pid from inside a pid namespace is followed by its host pid.
CLONE = re.compile(r"^(\d+\.\d+) (?:clone3?|fork|vfork)\(.*= (\d+)(?: /\* (\d+) in strace's PID NS \*/)?$")
CLONE_RESUMED = re.compile(r"^(\d+\.\d+) <\.\.\. (?:clone3?|fork|vfork) resumed>.*= (\d+)(?: /\* (\d+) in strace's PID NS \*/)?$")
EXECVE = re.compile(r'^\d+\.\d+ execve\("([^"]*)"')


def kind_of_exec(line):
    """The kind of program a successful execve line starts (by its path, not its arguments)."""
    program = os.path.basename(EXECVE.match(line).group(1))
    for name, kind in (('qemu-system', 'qemu'), ('vhost-device-vsock', 'vhost_vsock'), ('virtiofsd', 'virtiofsd'), ('boxlite-shim', 'shim')):
        if program.startswith(name):
            return kind
    return 'other'


def classify(trace_dir):
    runs = collections.defaultdict(dict)
    for name in os.listdir(trace_dir):
        parts = name.split('.')
        if len(parts) == 3 and parts[2].isdigit():
            with open(os.path.join(trace_dir, name), errors='replace') as f:
                runs[parts[1]][int(parts[2])] = f.read().splitlines()
    counts = collections.defaultdict(collections.Counter)
    killed = []
    for run, files in runs.items():
        parent, is_thread, execs = {}, {}, {}
        for tid, lines in files.items():
            pending_thread = False
            for line in lines:
                if ' clone' in line and 'unfinished' in line:
                    pending_thread = 'CLONE_THREAD' in line
                m = CLONE.match(line) or CLONE_RESUMED.match(line)
                if m:
                    child = int(m.group(3) or m.group(2))
                    parent[child] = (tid, float(m.group(1)))
                    is_thread[child] = 'CLONE_THREAD' in line or ('resumed' in line and pending_thread)
                if EXECVE.match(line) and line.rstrip().endswith('= 0'):
                    execs[tid] = (float(line.split(' ', 1)[0]), kind_of_exec(line))

        def image_at(tid, t):
            if tid in execs and execs[tid][0] <= t:
                return execs[tid][1]
            if tid in parent:
                p, pt = parent[tid]
                img = image_at(p, pt)
                if is_thread.get(tid):
                    return img
                return 'pre_exec' if img in ('shim', 'supervisor') else img
            # The shim is the run's first process (the wrapper execs it); any other root is a
            # thread whose clone strace could not link (a pid namespace without --decode-pids).
            return 'shim' if tid == int(run) else 'unlinked'

        # The supervisor policy starts at the shim's own seccomp(TSYNC) call; in a trace of a
        # shim without it, at the fork of qemu.
        start = min((float(l.split(' ', 1)[0]) for tid, lines in files.items() if image_at(tid, 0) == 'shim'
                     for l in lines if 'SECCOMP_FILTER_FLAG_TSYNC' in l and CALL.match(l)), default=None)
        if start is None:
            start = min((parent[t][1] for t, (_, k) in execs.items() if k == 'qemu' and t in parent), default=None)
        for tid, lines in files.items():
            for line in lines:
                m = CALL.match(line)
                if m:
                    t, name = float(m.group(1)), m.group(2)
                    kind = image_at(tid, t)
                    if kind == 'shim':
                        kind = 'supervisor' if start is not None and t > start else 'shim_unfiltered'
                    counts[kind][name] += 1
                elif 'killed by SIGSYS' in line:
                    last = [l for l in lines if CALL.match(l)][-1:]
                    killed.append((image_at(tid, float(line.split(' ', 1)[0])), last[0][:160] if last else '?'))
    return counts, killed


def main():
    trace_dir, policy_dir = sys.argv[1], sys.argv[2]
    counts, killed = classify(trace_dir)
    for kind in ('qemu', 'vhost_vsock', 'virtiofsd', 'supervisor', 'pre_exec'):
        seen = counts.get(kind, collections.Counter())
        print(f'== {kind}: {len(seen)} syscalls seen')
        print('   ' + ' '.join(f'{k}:{v}' for k, v in sorted(seen.items())))
        policy = 'qemu' if kind == 'pre_exec' else kind
        with open(os.path.join(policy_dir, f'{policy}.json')) as f:
            allowed = {r['syscall'] for r in json.load(f)[policy]['filter']}
        missing = sorted(set(seen) - allowed)
        if kind == 'pre_exec':
            missing = ['(only execve needs to pass after the filter)']
        else:
            print(f'   not seen but allowed ({len(allowed - set(seen))}): ' + ' '.join(sorted(allowed - set(seen))))
        print(f'   seen but NOT allowed: {" ".join(missing) or "none"}')
    for kind, line in killed:
        print(f'KILLED BY SIGSYS ({kind}): last call {line}')


if __name__ == '__main__':
    main()
