#!/usr/bin/env python3
"""Benchmark conc against its peers (CPython, bash, raw Rust) on the same work.

    python3 bench/run.py                 # language core: fib, loop, startup
    python3 bench/run.py --peers         # concurrency baselines (raw Rust, Python, bash)
    python3 bench/run.py --all           # both
    python3 bench/run.py --conc PATH     # use this conc binary instead of building one
    python3 bench/run.py --runs 9        # best of 9 instead of 5

Every number is wall-clock. Each row prints conc's time, the peer's time, the ratio
conc/peer, the target and PASS/FAIL. A conc workload whose file is missing, or whose
run fails, shows "n/a". See bench/README.md for what each workload measures.

To add a conc workload to a comparison, add (or fill in) one dict in CORE or PEERS
below: name, conc file, peer commands, target ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "workloads"
BASELINES = BENCH / "baselines"
BASELINES_TARGET = BASELINES / "target"
BASELINES_BIN = BASELINES_TARGET / "release" / "conc-baselines"

# Placeholders in commands, filled in at run time.
PY = "{python}"  # the real CPython binary (not the pyenv shim)
BASE = "{baselines}"  # the raw-Rust baselines binary
BASH = "{bash}"  # bash, resolved on PATH

# ---------------------------------------------------------------------------
# The workloads. Each dict is one table entry:
#   name      what is measured
#   conc      file under bench/workloads/ run as `conc FILE ARGS...` (None: no conc side)
#   conc_cmd  instead of a file: argv after `conc` (used for startup)
#   args      ARGS given to the conc file (and appended to peers that take "{n}")
#   metric    "wall": whole-process wall time, best of --runs
#             "median": whole-process wall time, median of --startup-runs
#             "per_op": per-operation cost, best of --runs; a program reports it by
#                       printing `per_op=<float>us` (else wall time / n is used)
#   n         operations per run (for "per_op")
#   peers     [{label, cmd, target?}]: target is the max allowed ratio conc/peer
#   abs_target  optional max seconds for conc itself (startup)
#   check_output  compare conc's stdout with the first peer's
# ---------------------------------------------------------------------------

CORE = [
    {
        "name": "fib(30)",
        "conc": "fib.conc",
        "metric": "wall",
        "check_output": True,
        "peers": [
            {"label": "python3 -S", "cmd": [PY, "-S", WORK / "fib.py"], "target": 1.0},
        ],
    },
    {
        "name": "while-loop sum 1..1e7",
        "conc": "loop.conc",
        "metric": "wall",
        "check_output": True,
        "peers": [
            {"label": "python3 -S (module level)", "cmd": [PY, "-S", WORK / "loop.py"], "target": 1.0},
            # CPython's fastest form of the same loop: function locals instead of globals.
            {"label": "python3 -S (function locals)", "cmd": [PY, "-S", WORK / "loop_fn.py"], "target": 1.0},
        ],
    },
    {
        "name": "startup print(1)",
        "conc_cmd": ["-e", "print(1)"],
        "metric": "median",
        "check_output": True,
        "abs_target": 0.002,
        "peers": [
            {"label": "bash -c 'echo 1'", "cmd": [BASH, "-c", "echo 1"]},
            {"label": "python3 -S -c 'print(1)'", "cmd": [PY, "-S", "-c", "print(1)"]},
            # exec of a do-nothing binary: the floor under every startup number here
            {"label": "/bin/true (floor)", "cmd": ["/bin/true"]},
        ],
    },
]

PEERS = [
    {
        "name": "thread spawn+join",
        "conc": "thread_spawn.conc",
        "metric": "per_op",
        "n": 10000,
        "peers": [
            {"label": "rust thread::spawn+join", "cmd": [BASE, "thread-spawn", "{n}"], "target": 1.3},
            {"label": "python threading.Thread", "cmd": [PY, "-S", WORK / "thread_spawn.py", "{n}"]},
        ],
    },
    {
        "name": "channel send+recv (i64)",
        "conc": "channel.conc",
        "metric": "per_op",
        "n": 1_000_000,
        "peers": [
            {"label": "rust crossbeam unbounded", "cmd": [BASE, "channel", "{n}"]},
            # ">= 10x faster than queue.Queue" == ratio conc/queue <= 0.1
            {"label": "python queue.Queue", "cmd": [PY, "-S", WORK / "channel.py", "{n}"], "target": 0.1},
        ],
    },
    {
        "name": "fork+wait",
        "conc": "fork.conc",
        "metric": "per_op",
        "n": 1000,
        "peers": [
            {"label": "rust nix fork+waitpid", "cmd": [BASE, "fork", "{n}"], "target": 2.0},
            {"label": "python os.fork+waitpid", "cmd": [PY, "-S", WORK / "fork.py", "{n}"]},
        ],
    },
    {
        "name": 'run("true")',
        "conc": "command.conc",
        "metric": "per_op",
        "n": 1000,
        "peers": [
            {"label": "rust Command.status()", "cmd": [BASE, "command", "{n}"], "target": 1.1},
            {"label": "python subprocess.run", "cmd": [PY, "-S", WORK / "command.py", "{n}"]},
            {"label": "bash loop /bin/true", "cmd": [BASH, WORK / "command.sh", "{n}"]},
        ],
    },
    {
        "name": "ints through a process pipe",
        "conc": "pipe_ints.conc",
        "metric": "per_op",
        "n": 100_000,
        "peers": [
            {"label": "rust fork+pipe, batched", "cmd": [BASE, "pipe-ints", "{n}"]},
            {"label": "python multiprocessing.Queue", "cmd": [PY, "-S", WORK / "pipe_ints.py", "{n}"]},
        ],
    },
    {
        "name": "pipeline head -c 2G | wc -c",
        "conc": "pipeline.conc",
        "metric": "wall",
        "check_output": True,
        "peers": [
            {"label": "bash pipeline", "cmd": [BASH, WORK / "pipeline.sh"], "target": 1.1},
        ],
    },
]

PER_OP_RE = re.compile(r"per_op=([0-9.eE+-]+)us")


# ---------------------------------------------------------------------------
# Running and timing
# ---------------------------------------------------------------------------


class RunError(Exception):
    pass


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


signal.signal(signal.SIGALRM, _on_alarm)


def run_once(argv: list[str], timeout: float) -> tuple[float, str]:
    """Run argv once; return (wall seconds from spawn to reap, stdout).

    posix_spawn + waitpid keeps the harness's own overhead far below a millisecond,
    which matters for the startup rows. stdout/stderr go to temp files, not pipes,
    so a chatty program never blocks on a full pipe.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        # A timeout is a SIGALRM (armed outside the timed region) whose handler raises;
        # waitpid blocks, so the reap is seen at once.
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            try:
                t0 = time.perf_counter()
                pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
            except OSError as e:
                raise RunError(f"cannot start {argv[0]}: {e}") from e
            try:
                _, status = os.waitpid(pid, 0)
                dt = time.perf_counter() - t0
            except _Timeout:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                raise RunError(f"timed out after {timeout:.0f}s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RunError(f"exit {code}" + (f": {' | '.join(tail)}" if tail else ""))
        return dt, stdout


def measure(argv: list[str], metric: str, n: int, runs: int, startup_runs: int, timeout: float):
    """Return (value, stdout): seconds (wall/median) or seconds per op (per_op)."""
    if metric == "median":
        run_once(argv, timeout)  # warm the page cache
        samples = []
        stdout = ""
        for _ in range(startup_runs):
            dt, stdout = run_once(argv, timeout)
            samples.append(dt)
        return statistics.median(samples), stdout
    best = None
    first_out = None
    for _ in range(runs):
        dt, stdout = run_once(argv, timeout)
        if first_out is None:
            first_out = stdout
        if metric == "per_op":
            m = PER_OP_RE.search(stdout)
            v = float(m.group(1)) * 1e-6 if m else dt / n
        else:
            v = dt
        best = v if best is None else min(best, v)
    return best, first_out


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def fmt_time(sec: float | None) -> str:
    if sec is None:
        return "n/a"
    if sec >= 1:
        return f"{sec:.3f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.2f} ms"
    if sec >= 1e-6:
        return f"{sec * 1e6:.2f} us"
    return f"{sec * 1e9:.1f} ns"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print()
    print(title)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(line)


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def real_python() -> str:
    """The real CPython binary: `python3` may be a pyenv shim that adds ~100 ms a start."""
    try:
        out = subprocess.run(
            ["python3", "-c", "import sys; print(sys.executable)"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
        if out and os.access(out, os.X_OK):
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return sys.executable


def cargo_build(args: list[str], what: str) -> bool:
    print(f"building {what}: cargo {' '.join(args)}", file=sys.stderr, flush=True)
    r = subprocess.run(["cargo", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"warning: building {what} failed:\n" + "\n".join(r.stderr.splitlines()[-15:]), file=sys.stderr)
        return False
    return True


def expand(cmd: list, subst: dict) -> list[str]:
    return [str(c).format(**subst) if isinstance(c, str) else str(c) for c in cmd]


# ---------------------------------------------------------------------------
# One table
# ---------------------------------------------------------------------------


def run_suite(title: str, entries: list[dict], conc: str | None, subst: dict, opts) -> int:
    """Run entries, print one table; return the number of FAIL rows."""
    header = ["workload", "conc", "peer", "peer time", "conc/peer", "target", "result"]
    rows: list[list[str]] = []
    fails = 0
    for e in entries:
        if opts.only and opts.only.lower() not in e["name"].lower():
            continue
        metric = e["metric"]
        n = e.get("n", 1)
        sub = dict(subst, n=n)
        unit = " /op" if metric == "per_op" else ""
        print(f"  {e['name']} ...", file=sys.stderr, flush=True)

        # conc side
        conc_val, conc_out, conc_note = None, None, ""
        if conc is None:
            conc_note = "conc not built"
        elif e.get("conc_cmd"):
            argv = [conc, *expand(e["conc_cmd"], sub)]
        else:
            path = WORK / e["conc"]
            if not path.exists():
                conc_note = f"{e['conc']} missing"
            argv = [conc, str(path), *([str(n)] if metric == "per_op" else [])]
        if conc is not None and not conc_note:
            try:
                conc_val, conc_out = measure(argv, metric, n, opts.runs, opts.startup_runs, opts.timeout)
            except RunError as err:
                conc_note = f"conc failed: {err}"
        if conc_note:
            print(f"    conc: n/a ({conc_note})", file=sys.stderr)

        # peers
        first = True
        for p in e["peers"]:
            label = p["label"]
            try:
                peer_val, peer_out = measure(
                    expand(p["cmd"], sub), metric, n, opts.runs, opts.startup_runs, opts.timeout
                )
            except RunError as err:
                print(f"    {label}: failed: {err}", file=sys.stderr)
                peer_val, peer_out = None, None

            target = p.get("target")
            target_s = f"<= {target:g}x" if target is not None else "-"
            ratio_s, result = "n/a", ("n/a" if target is not None else "-")
            if conc_val is not None and peer_val:
                ratio = conc_val / peer_val
                ratio_s = f"{ratio:.2f}x"
                if target is not None:
                    result = "PASS" if ratio <= target else "FAIL"
            if (
                first and e.get("check_output") and conc_out is not None and peer_out is not None
                and conc_out.split() != peer_out.split()
            ):
                result = "WRONG"
                print(f"    conc printed {conc_out.strip()[:60]!r}, {label} printed {peer_out.strip()[:60]!r}",
                      file=sys.stderr)
            fails += result in ("FAIL", "WRONG")
            rows.append([
                e["name"] if first else "",
                (fmt_time(conc_val) + unit) if first and conc_val is not None else ("n/a" if first else ""),
                label,
                fmt_time(peer_val) + (unit if peer_val is not None else ""),
                ratio_s,
                target_s,
                result,
            ])
            first = False

        if e.get("abs_target") is not None:
            t = e["abs_target"]
            result = "n/a" if conc_val is None else ("PASS" if conc_val < t else "FAIL")
            fails += result == "FAIL"
            rows.append(["", "", "(absolute)", "", "", f"conc < {fmt_time(t)}", result])

    print_table(title, header, rows)
    return fails


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conc", help="conc binary to time (default: cargo build --release, target/release/conc)")
    ap.add_argument("--runs", type=int, default=5, help="best-of-N runs for each timing (default 5)")
    ap.add_argument("--startup-runs", type=int, default=50, help="runs for startup medians (default 50)")
    ap.add_argument("--peers", action="store_true", help="run the concurrency baselines instead of the core")
    ap.add_argument("--all", action="store_true", help="run the core and the concurrency baselines")
    ap.add_argument("--only", help="run only workloads whose name contains this text")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before one run is killed (default 300)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row is FAIL or WRONG")
    opts = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr in order
    if opts.runs < 1 or opts.startup_runs < 1:
        ap.error("--runs and --startup-runs must be >= 1")

    do_core = opts.all or not opts.peers
    do_peers = opts.all or opts.peers

    # conc
    if opts.conc:
        conc = shutil.which(opts.conc) or opts.conc
        conc = str(Path(conc).resolve())
        if not os.access(conc, os.X_OK):
            print(f"error: --conc {opts.conc}: not an executable", file=sys.stderr)
            return 2
    else:
        ok = cargo_build(["build", "--release", "--manifest-path", str(ROOT / "Cargo.toml")], "conc")
        conc = str(ROOT / "target" / "release" / "conc") if ok else None

    # posix_spawn does no PATH search: every command starts with an absolute path.
    bash = shutil.which("bash") or "/bin/bash"
    subst = {"python": real_python(), "baselines": str(BASELINES_BIN), "bash": bash}
    if do_peers:
        ok = cargo_build(
            ["build", "--release", "--manifest-path", str(BASELINES / "Cargo.toml"),
             "--target-dir", str(BASELINES_TARGET)],
            "raw-Rust baselines",
        )
        if not ok:
            print("warning: raw-Rust baseline rows will show n/a", file=sys.stderr)

    print(f"conc:   {conc or 'n/a (build failed)'}")
    print(f"python: {subst['python']} (-S)")
    print(f"bash:   {bash}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus: {os.cpu_count()}  load(1m): {load:.2f}  runs: best of {opts.runs}, "
          f"startup: median of {opts.startup_runs}")
    if load > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; times are noisy (best-of-N helps, medians less so)")

    fails = 0
    if do_core:
        fails += run_suite("language core (time; ratio = conc / peer)", CORE, conc, subst, opts)
    if do_peers:
        fails += run_suite("concurrency baselines (per-op cost unless noted; ratio = conc / peer)",
                           PEERS, conc, subst, opts)
    return 1 if (opts.strict and fails) else 0


if __name__ == "__main__":
    sys.exit(main())
