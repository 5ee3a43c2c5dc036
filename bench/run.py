#!/usr/bin/env python3
"""Benchmark conc against its peers (CPython, bash, raw Rust) on the same work.

    python3 bench/run.py                 # language core (issue 2): fib, loop, startup
    python3 bench/run.py --peers         # threads, processes, commands (issues 3, 4, 5)
    python3 bench/run.py --all           # everything
    python3 bench/run.py --issue 4       # one issue's table (repeatable)
    python3 bench/run.py --conc PATH     # use this conc binary instead of building one
    python3 bench/run.py --runs 9        # 9 runs of each timing instead of 5
    python3 bench/run.py --json out.json # also write every row as JSON

Every number is wall-clock. Each row prints conc's best and median, the peer's best,
the ratio conc/peer (best/best, and median/median), the target and PASS/FAIL (judged on
the best runs). conc and its peers run in turns (conc, each peer, conc again ...), so
they see the same load. A conc workload whose file is missing, or whose run fails, shows "n/a".
See bench/README.md for what each workload measures.

To add a workload, add one dict to a suite below: name, conc file, peer commands,
target ratio.
"""

from __future__ import annotations

import argparse
import json
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

# Placeholders in commands, filled in at run time.
PY = "{python}"  # the real CPython binary (not the pyenv shim)
BASE = "{baselines}"  # the raw-Rust baselines binary, built as a standalone project builds
BASE_STATIC = "{baselines_static}"  # the same, linked statically as conc is (see .cargo/config.toml)
BASH = "{bash}"  # bash, resolved on PATH

# ---------------------------------------------------------------------------
# The workloads. Each dict is one table entry:
#   name      what is measured
#   conc      file under bench/workloads/ run as `conc FILE [N]` (None: no conc side)
#   conc_cmd  instead of a file: argv after `conc` (used for startup)
#   metric    "wall":    whole-process wall time
#             "median":  whole-process wall time, --startup-runs runs (startup)
#             "per_op":  per-operation cost; a program reports it by printing
#                        `per_op=<float>us` (else wall time / n is used)
#             "self":    a program times its own work and prints `elapsed=<float>s`
#             "speedup": a program times serial and parallel runs of the same work and
#                        prints `serial=<f>s parallel=<f>s speedup=<f>x`; higher is better;
#                        best = best serial / best parallel over all runs
#             "check":   run once; PASS when it exits 0 (its first line is shown)
#   n         operations per run, passed as the program's first argument
#             (per_op, self)
#   peers     [{label, cmd, target?}]: target is the max allowed ratio conc/peer
#   abs_target   optional max seconds for conc itself (startup)
#   min_speedup  for "speedup": the least speedup conc must reach
#   check_output compare conc's stdout with the first peer's
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
    {
        "name": "startup empty program",
        "conc_cmd": ["-e", ""],
        "metric": "median",
        "abs_target": 0.002,
        "peers": [
            {"label": "bash -c ''", "cmd": [BASH, "-c", ""]},
            {"label": "python3 -S -c ''", "cmd": [PY, "-S", "-c", ""]},
        ],
    },
]

THREADS = [
    {
        "name": "thread spawn+join",
        "conc": "thread_spawn.conc",
        "metric": "per_op",
        "n": 10000,
        "peers": [
            {"label": "rust thread::spawn+join", "cmd": [BASE, "thread-spawn", "{n}"], "target": 1.3},
            # "conc is faster than Python threading"
            {"label": "python threading.Thread", "cmd": [PY, "-S", WORK / "thread_spawn.py", "{n}"], "target": 1.0},
        ],
    },
    {
        "name": "no leaked threads (10k spawns)",
        "conc": "thread_leak.conc",
        "metric": "check",
        "peers": [],
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
        "name": "2 x fib(27) on 2 threads",
        "conc": "parallel_fib.conc",
        "metric": "speedup",
        "min_speedup": 1.7,
        "peers": [
            # The same shape of work in raw Rust threads: what the machine gives right now.
            {"label": "rust 2 threads (ceiling)", "cmd": [BASE, "parallel-fib", "2", "34"]},
            {"label": "python threading (GIL)", "cmd": [PY, "-S", WORK / "parallel_fib.py"]},
        ],
    },
]

PROCS = [
    {
        "name": "fork+wait",
        "conc": "fork.conc",
        "metric": "per_op",
        "n": 1000,
        "peers": [
            {"label": "rust nix fork+waitpid", "cmd": [BASE, "fork", "{n}"], "target": 2.0},
            # The same program linked statically, as conc is: a static process forks faster.
            {"label": "rust fork+waitpid, static", "cmd": [BASE_STATIC, "fork", "{n}"]},
            # "and faster than Python os.fork"
            {"label": "python os.fork+waitpid", "cmd": [PY, "-S", WORK / "fork.py", "{n}"], "target": 1.0},
        ],
    },
    {
        "name": "pool map 10k tiny items, 2 procs",
        "conc": "procpool_map.conc",
        "metric": "self",
        "n": 10_000,
        "peers": [
            {"label": "python mp.Pool(2).map", "cmd": [PY, "-S", WORK / "procpool_map.py", "{n}"], "target": 0.5},
            {"label": "python ProcessPoolExecutor(2)", "cmd": [PY, "-S", WORK / "procpool_map_executor.py", "{n}"]},
        ],
    },
    {
        "name": "8 x fib(25) on 2 worker procs",
        "conc": "proc_fib.conc",
        "metric": "speedup",
        "min_speedup": 1.8,
        "peers": [
            {"label": "rust 2 threads (ceiling)", "cmd": [BASE, "parallel-fib", "8", "32"]},
            {"label": "python mp.Pool(2).map", "cmd": [PY, "-S", WORK / "proc_fib.py"]},
        ],
    },
    {
        "name": "100k ints child -> parent",
        "conc": "pipe_ints.conc",
        "metric": "per_op",
        "n": 100_000,
        "peers": [
            {"label": "rust fork+pipe, batched", "cmd": [BASE, "pipe-ints", "{n}"]},
            # ">= 5x faster than multiprocessing.Queue" == ratio <= 0.2
            {"label": "python mp.Queue", "cmd": [PY, "-S", WORK / "pipe_ints.py", "{n}"], "target": 0.2},
            {"label": "python mp.Pipe", "cmd": [PY, "-S", WORK / "pipe_ints_pipe.py", "{n}"]},
        ],
    },
]

COMMANDS = [
    {
        "name": 'run("true")',
        "conc": "command.conc",
        "metric": "per_op",
        "n": 1000,
        "peers": [
            {"label": "rust Command.status()", "cmd": [BASE, "command", "{n}"], "target": 1.1},
            {"label": "rust Command.status(), static", "cmd": [BASE_STATIC, "command", "{n}"]},
            {"label": "python subprocess.run", "cmd": [PY, "-S", WORK / "command.py", "{n}"]},
            {"label": "bash loop /bin/true", "cmd": [BASH, WORK / "command.sh", "{n}"]},
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

# (issue, key, title, entries); --issue N picks by number, --peers takes 3, 4 and 5.
SUITES = [
    (2, "core", "issue 2, language core (time; ratio = conc / peer)", CORE),
    (3, "threads", "issue 3, threads (per-op cost unless noted; ratio = conc / peer)", THREADS),
    (4, "procs", "issue 4, processes (per-op cost unless noted; ratio = conc / peer)", PROCS),
    (5, "commands", "issue 5, subprocesses (per-op cost unless noted; ratio = conc / peer)", COMMANDS),
]

PER_OP_RE = re.compile(r"per_op=([0-9.eE+-]+)us")
ELAPSED_RE = re.compile(r"elapsed=([0-9.eE+-]+)s")
SPEEDUP_RE = re.compile(r"serial=([0-9.eE+-]+)s parallel=([0-9.eE+-]+)s speedup=([0-9.eE+-]+)x")


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


def sample_value(metric: str, dt: float, stdout: str, n: int) -> float:
    """One run's number: seconds (wall, self), seconds per op (per_op) or a speedup."""
    if metric == "per_op":
        m = PER_OP_RE.search(stdout)
        return float(m.group(1)) * 1e-6 if m else dt / n
    if metric == "self":
        m = ELAPSED_RE.search(stdout)
        if not m:
            raise RunError("printed no elapsed=<seconds>s")
        return float(m.group(1))
    if metric == "speedup":
        m = SPEEDUP_RE.search(stdout)
        if not m:
            raise RunError("printed no serial=..s parallel=..s speedup=..x")
        serial, parallel = float(m.group(1)), float(m.group(2))
        return serial / parallel
    return dt


class Result:
    """All runs of one command: the samples, the best one, the median, what it printed."""

    def __init__(self, metric: str, samples: list[float], outputs: list[str]):
        self.metric = metric
        self.samples = samples
        self.outputs = outputs
        self.median = statistics.median(samples)
        if metric == "speedup":
            # The best serial time over the best parallel time, each over every round of
            # every run: picking the run with the biggest ratio would reward a serial round
            # that some other work on the machine happened to slow down.
            times = [tuple(float(x) for x in SPEEDUP_RE.search(o).groups()[:2]) for o in outputs]
            self.serial, self.parallel = min(t[0] for t in times), min(t[1] for t in times)
            self.best = self.serial / self.parallel
            self.best_output = f"best serial={self.serial:.4f}s, best parallel={self.parallel:.4f}s"
        else:
            self.best = min(samples)
            self.best_output = outputs[samples.index(self.best)]


def measure_together(argvs: list[list[str]], metric: str, n: int, opts) -> list:
    """Time several commands round by round (conc, then each peer, then conc again ...),
    so a machine whose speed drifts over seconds slows them all alike instead of whichever
    ran in the slow stretch. One Result per command, or the RunError that stopped it."""
    if metric == "check":
        runs = 1
    else:
        runs = opts.startup_runs if metric == "median" else opts.runs
    samples = [[] for _ in argvs]
    outputs = [[] for _ in argvs]
    failed: list = [None for _ in argvs]
    if metric == "median":
        for argv in argvs:
            try:
                run_once(argv, opts.timeout)  # warm the page cache
            except RunError:
                pass
    for _ in range(runs):
        for i, argv in enumerate(argvs):
            if failed[i] is not None:
                continue
            try:
                dt, stdout = run_once(argv, opts.timeout)
            except RunError as err:
                failed[i] = err
                continue
            samples[i].append(dt if metric == "check" else sample_value(metric, dt, stdout, n))
            outputs[i].append(stdout)
    return [failed[i] or Result(metric, samples[i], outputs[i]) for i in range(len(argvs))]


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


def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if metric == "speedup":
        return f"{v:.2f}x speedup"
    return fmt_time(v) + (" /op" if metric == "per_op" else "")


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


def cargo_build(args: list[str], what: str, cwd: Path = ROOT, env: dict | None = None) -> str | None:
    """Run `cargo build ARGS` and return the path of the executable it made (None on failure).
    The path comes from cargo's own report: it depends on the target cargo builds for."""
    print(f"building {what}: cargo {' '.join(args)}", file=sys.stderr, flush=True)
    r = subprocess.run(["cargo", *args, "--message-format=json-render-diagnostics"], cwd=cwd,
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"warning: building {what} failed:\n" + "\n".join(r.stderr.splitlines()[-15:]), file=sys.stderr)
        return None
    exes = []
    for line in r.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            exes.append(msg["executable"])
    return exes[-1] if exes else None


def build_baselines() -> tuple[str | None, str | None]:
    """The raw-Rust baselines, twice. As their own project builds them: conc's
    .cargo/config.toml (a parent directory's, so cargo would read it) must not make them
    static, so RUSTFLAGS is set, which replaces config flags. And linked statically as conc
    is, for a row that compares like with like."""
    user_flags = os.environ.get("RUSTFLAGS", "")
    plain_env = dict(os.environ, RUSTFLAGS=user_flags)
    static_env = dict(os.environ, RUSTFLAGS=(user_flags + " -C target-feature=+crt-static").strip())
    common = ["build", "--release", "--manifest-path", str(BASELINES / "Cargo.toml")]
    plain = cargo_build(common + ["--target-dir", str(BASELINES_TARGET / "plain")], "raw-Rust baselines",
                        BASELINES, plain_env)
    static = cargo_build(common + ["--target-dir", str(BASELINES_TARGET / "static")],
                         "raw-Rust baselines (static)", BASELINES, static_env)
    return plain, static


def expand(cmd: list, subst: dict) -> list[str]:
    return [str(c).format(**subst) if isinstance(c, str) else str(c) for c in cmd]


# ---------------------------------------------------------------------------
# One table
# ---------------------------------------------------------------------------

HEADER = ["workload", "conc best", "conc median", "peer", "peer best", "conc/peer", "(median)", "target", "result"]


def conc_argv(e: dict, conc: str | None, sub: dict) -> tuple[list[str] | None, str]:
    """The conc command for an entry, or None and why not."""
    if conc is None:
        return None, "conc not built"
    if e.get("conc_cmd") is not None:
        return [conc, *expand(e["conc_cmd"], sub)], ""
    path = WORK / e["conc"]
    if not path.exists():
        return None, f"{e['conc']} missing"
    takes_n = e["metric"] in ("per_op", "self")
    return [conc, str(path), *([str(e["n"])] if takes_n else [])], ""


def judge(ratio: float | None, target: float | None) -> str:
    if target is None:
        return "-"
    if ratio is None:
        return "n/a"
    return "PASS" if ratio <= target else "FAIL"


def run_entry(e: dict, conc: str | None, subst: dict, opts, rows: list, records: list, notes: list) -> int:
    """Run one entry's conc side and peers, append its rows; return the number of FAILs."""
    metric = e["metric"]
    n = e.get("n", 1)
    sub = dict(subst, n=n)
    print(f"  {e['name']} ...", file=sys.stderr, flush=True)
    fails = 0

    conc_res, conc_note = None, ""
    argv, conc_note = conc_argv(e, conc, sub)
    peer_argvs = [] if metric == "check" else [expand(p["cmd"], sub) for p in e["peers"]]
    measured = measure_together(([argv] if argv is not None else []) + peer_argvs, metric, n, opts)
    if argv is not None:
        conc_res = measured.pop(0)
        if isinstance(conc_res, RunError):
            conc_note = f"conc failed: {conc_res}"
            conc_res = None
    if conc_note:
        print(f"    conc: n/a ({conc_note})", file=sys.stderr)
        notes.append(f"{e['name']}: conc n/a ({conc_note})")
    best = conc_res.best if conc_res else None
    med = conc_res.median if conc_res else None
    record = {
        "workload": e["name"], "metric": metric,
        "conc_best": best, "conc_median": med, "conc_samples": conc_res.samples if conc_res else None,
        "conc_note": conc_note, "peers": [],
    }
    records.append(record)

    def add_row(first: bool, peer: str, peer_best: str, ratio: str, ratio_med: str, target: str, result: str):
        rows.append([
            e["name"] if first else "",
            fmt_value(metric, best) if first else "",
            fmt_value(metric, med) if first else "",
            peer, peer_best, ratio, ratio_med, target, result,
        ])

    if metric == "check":
        result = "PASS" if conc_res else "FAIL"
        shown = conc_res.outputs[0].strip().splitlines()[0] if conc_res and conc_res.outputs[0].strip() else ""
        rows.append([e["name"], shown or "n/a", "", "(exits 0)", "", "", "", "exit 0", result])
        record["result"] = result
        return result == "FAIL"

    first = True
    if metric == "speedup":
        target = e["min_speedup"]
        result = "n/a" if best is None else ("PASS" if best >= target else "FAIL")
        fails += result == "FAIL"
        add_row(True, "(serial vs parallel)", "", "", "", f">= {target:g}x", result)
        record.update(target=f">= {target:g}x", result=result)
        if conc_res:
            notes.append(f"{e['name']}: conc {conc_res.best_output} (median speedup of runs {med:.2f}x)")
        first = False

    if e.get("abs_target") is not None:
        t = e["abs_target"]
        result = "n/a" if best is None else ("PASS" if best < t else "FAIL")
        fails += result == "FAIL"
        add_row(first, "(absolute)", "", "", "", f"< {fmt_time(t)}", result)
        record.update(target=f"< {fmt_time(t)}", result=result)
        first = False

    for i, p in enumerate(e["peers"]):
        label = p["label"]
        peer_res = measured[i]
        if isinstance(peer_res, RunError):
            print(f"    {label}: failed: {peer_res}", file=sys.stderr)
            notes.append(f"{e['name']}: {label} failed: {peer_res}")
            peer_res = None
        target = p.get("target")
        ratio = ratio_med = None
        if conc_res and peer_res and peer_res.best:
            # For speedups this is conc's speedup as a share of the peer's.
            ratio = conc_res.best / peer_res.best
            ratio_med = conc_res.median / peer_res.median
        result = judge(ratio, target)
        if (
            i == 0 and e.get("check_output") and conc_res is not None and peer_res is not None
            and conc_res.outputs[0].split() != peer_res.outputs[0].split()
        ):
            result = "WRONG"
            print(f"    conc printed {conc_res.outputs[0].strip()[:60]!r}, {label} printed "
                  f"{peer_res.outputs[0].strip()[:60]!r}", file=sys.stderr)
        fails += result in ("FAIL", "WRONG")
        if metric == "speedup" and peer_res:
            notes.append(f"{e['name']}: {label} {peer_res.best_output} (median speedup of runs {peer_res.median:.2f}x)")
        add_row(
            first, label,
            fmt_value(metric, peer_res.best if peer_res else None),
            f"{ratio:.2f}x" if ratio is not None else "n/a",
            f"{ratio_med:.2f}x" if ratio_med is not None else "",
            f"<= {target:g}x" if target is not None else "-",
            result,
        )
        record["peers"].append({
            "label": label, "best": peer_res.best if peer_res else None,
            "median": peer_res.median if peer_res else None, "ratio": ratio, "ratio_median": ratio_med,
            "target": target, "result": result,
        })
        first = False
    return fails


def run_suite(title: str, entries: list[dict], conc: str | None, subst: dict, opts, records: list) -> int:
    """Run entries, print one table; return the number of FAIL rows."""
    rows: list[list[str]] = []
    notes: list[str] = []
    fails = 0
    for e in entries:
        if opts.only and opts.only.lower() not in e["name"].lower():
            continue
        fails += run_entry(e, conc, subst, opts, rows, records, notes)
    if rows:
        print_table(title, HEADER, rows)
        for note in notes:
            print(f"  {note}")
    return fails


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conc", help="conc binary to time (default: the one cargo build --release makes)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each timing; best and median shown (default 5)")
    ap.add_argument("--startup-runs", type=int, default=50, help="runs for startup medians (default 50)")
    ap.add_argument("--peers", action="store_true", help="threads, processes and commands (issues 3-5)")
    ap.add_argument("--all", action="store_true", help="every table")
    ap.add_argument("--issue", type=int, action="append", choices=[s[0] for s in SUITES],
                    help="only this issue's table (repeatable)")
    ap.add_argument("--only", help="run only workloads whose name contains this text")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before one run is killed (default 300)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row is FAIL or WRONG")
    ap.add_argument("--json", help="also write every measured row to this file")
    opts = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr in order
    if opts.runs < 1 or opts.startup_runs < 1:
        ap.error("--runs and --startup-runs must be >= 1")

    if opts.issue:
        issues = set(opts.issue)
    elif opts.all:
        issues = {s[0] for s in SUITES}
    elif opts.peers:
        issues = {3, 4, 5}
    else:
        issues = {2}
    suites = [s for s in SUITES if s[0] in issues]

    # conc
    if opts.conc:
        conc = shutil.which(opts.conc) or opts.conc
        conc = str(Path(conc).resolve())
        if not os.access(conc, os.X_OK):
            print(f"error: --conc {opts.conc}: not an executable", file=sys.stderr)
            return 2
    else:
        conc = cargo_build(["build", "--release", "--bin", "conc", "--manifest-path", str(ROOT / "Cargo.toml")], "conc")

    # posix_spawn does no PATH search: every command starts with an absolute path.
    bash = shutil.which("bash") or "/bin/bash"
    baselines, baselines_static = build_baselines() if issues - {2} else (None, None)
    if issues - {2} and not baselines:
        print("warning: raw-Rust baseline rows will show n/a", file=sys.stderr)
    missing = str(BASELINES_TARGET / "missing")
    subst = {"python": real_python(), "baselines": baselines or missing,
             "baselines_static": baselines_static or missing, "bash": bash}

    print(f"conc:   {conc or 'n/a (build failed)'}")
    print(f"python: {subst['python']} (-S)")
    print(f"bash:   {bash}")
    load_before = os.getloadavg()
    print(f"cpus: {os.cpu_count()}  load (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_before)}  "
          f"runs: {opts.runs} (best and median shown), startup: median of {opts.startup_runs}")
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; times are noisy (best-of-N helps, medians less so)")

    fails = 0
    records: list[dict] = []
    for _, key, title, entries in suites:
        suite_records: list[dict] = []
        fails += run_suite(title, entries, conc, subst, opts, suite_records)
        for r in suite_records:
            r["suite"] = key
        records += suite_records
    load_after = os.getloadavg()
    print(f"\nload (1/5/15 min) at the end: {' '.join(f'{x:.2f}' for x in load_after)}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"load_before": load_before, "load_after": load_after, "runs": opts.runs, "rows": records}, indent=1))
    return 1 if (opts.strict and fails) else 0


if __name__ == "__main__":
    sys.exit(main())
