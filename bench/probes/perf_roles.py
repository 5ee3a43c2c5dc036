#!/usr/bin/env python3
"""Split a `perf record -g` profile of a conc run by process role and by what the time was.

    perf record -g -F 9999 -o fork.data target/release/conc bench/workloads/fork.conc 1000
    python3 bench/probes/perf_roles.py fork.data 1000 9999     # DATA OPS SAMPLE_HZ

Roles: the parent process (by thread: conc-main, conc-reactor, ...), the process server (the
`conc` process with the most samples), and its children (every other `conc` process). Each
sample is put in a bucket by its kernel call chain (fork, page fault, send, poll, ...) or
"user" when it was in user space. Numbers are microseconds of CPU per operation, as perf
sampled them (perf's own overhead inflates them; compare shares, or against a baseline
profiled the same way).
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys

# First match wins, so the more specific kernel functions come first.
BUCKETS = [
    ("exit_mmap", "exit: unmap"),
    ("do_exit", "exit: other"),
    ("copy_process", "fork"),
    ("dup_mmap", "fork"),
    ("exc_page_fault", "page fault"),
    ("wait4", "wait4"),
    ("sendmsg", "send"),
    ("sendto", "send"),
    ("recvmsg", "recv"),
    ("recvfrom", "recv"),
    ("poll", "poll"),
    ("futex", "futex"),
    ("schedule", "sched"),
    ("close", "close"),
    ("socketpair", "socketpair"),
    ("execve", "exec"),
    ("clone", "clone"),
]

HEADER = re.compile(r"\s*(\S+)\s+(\d+)/(\d+)")


def samples(data: str) -> list[dict]:
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "pid,tid,comm,ip,sym"], capture_output=True, text=True, check=True
    ).stdout
    result, cur = [], None
    for line in out.splitlines():
        if not line.strip():
            if cur:
                result.append(cur)
            cur = None
        elif not line.startswith((" ", "\t")):
            m = HEADER.match(line)
            cur = {"comm": m.group(1), "pid": int(m.group(2)), "stack": []} if m else None
        elif cur is not None:
            cur["stack"].append(line.strip())
    if cur:
        result.append(cur)
    return result


def bucket(stack: list[str]) -> str:
    if not stack or not stack[0].startswith("ffffffff"):
        return "user"
    names = " ".join(stack)
    for key, label in BUCKETS:
        if key in names:
            return label
    return "kernel other"


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    data, ops, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ss = samples(data)
    threads = [s for s in ss if s["comm"].startswith("conc-")]
    conc_procs = collections.Counter(s["pid"] for s in ss if s["comm"] == "conc")
    parent = min(s["pid"] for s in threads) if threads else None
    server = next((pid for pid, _ in conc_procs.most_common() if pid != parent), None)

    def role(s: dict) -> str:
        if s["pid"] == parent:
            return f"parent ({s['comm']})"
        if s["pid"] == server:
            return "server"
        return "children"

    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for s in ss:
        table[role(s)][bucket(s["stack"])] += 1
    us = 1e6 / hz / ops
    for name, counts in sorted(table.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"{name}: {sum(counts.values()) * us:.0f} us/op")
        for what, n in counts.most_common(8):
            print(f"    {what:14s} {n * us:6.0f} us/op")
    return 0


if __name__ == "__main__":
    sys.exit(main())
