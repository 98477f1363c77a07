#!/usr/bin/env python3
"""Benchmark the runner's overhead per index: lease + record + release around a command.

    python scripts/bench_runner.py [-n 500] [--dir /path/on/shared/fs] [--keep] [--busy]

Phases, each in a fresh child process with fresh state (best of --repeat runs):
  noop      the real Runner with process spawning replaced by a no-op (state work only)
  true      the real Runner running `true` for every index (its CPU time, the runner's and
            the commands', is printed beside its wall time)
  farm      the same as a farm worker pulling from a pool (PoolClaims: pyexp-run --ledger)
  setpriv   the same where pidfds are missing (each command exec'd through setpriv --pdeathsig)
  nodeath   the same with nothing killing the command with the runner (no watcher, no setpriv)
  fallback  the same with the Python trampoline used where setpriv lacks --pdeathsig
  spawn     bare Popen of `true` in its own session (what any runner pays)
Then, for the watcher, setpriv and the trampoline: a runner running `sleep 60` is killed with
SIGKILL and the command must be gone within a second.
With strace on PATH, the noop and true phases also run under `strace -c -f -e
trace=%file,getdents64`; counts per index are (run with n indices - run with 0) / n. A second
trace counts only the calls that name a path under the benchmark folder (state and logs), the
ones a shared filesystem pays for, for the true and farm phases; the rest are /proc reads and
the child's exec and loader.
--busy runs a second copy of this benchmark beside this one (a busy machine) and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from syscalls import read_strace_summary

TARGET_MS = 5.0
WALL_PER_CPU = 1.5  # a single worker's wall time per index within this many times its CPU time
MAX_TRIPS = 6  # metadata round trips per index in farm mode (issue 16)
# Calls a shared filesystem cannot answer from the client's caches: opens (close-to-open
# consistency), creating, renaming, removing and syncing names, and lookups of missing names.
ROUND_TRIPS = {
    *("openat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "fsync"),
    *("mkdir", "mkdirat", "rmdir", "link", "linkat"),
}


def make_project(root: str, n: int) -> str:
    """A config.json and an experiment with at least n indices under root; the experiment path."""
    os.makedirs(os.path.join(root, "experiments"), exist_ok=True)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump({"state_path": "state", "log_path": "logs", "command": "true"}, f)
    side = max(1, int(n**0.5) + 1)
    exp = {"metaParameters": {"a": list(range(side)), "b": list(range(side))}}
    path = os.path.join(root, "experiments", "bench.json")
    with open(path, "w") as f:
        json.dump(exp, f)
    return path


class _NoProcess:
    """Popen stand-in: 'exits 0' at once and wakes the runner as a real child's SIGCHLD would."""

    counter = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        import signal

        _NoProcess.counter += 1
        self.pid, self.returncode = _NoProcess.counter, 0
        signal.raise_signal(signal.SIGCHLD)

    def poll(self) -> int:
        return 0

    def wait(self) -> int:
        return 0


def child(phase: str, n: int, root: str) -> None:
    """Run one phase in this process and print {"seconds": ...} (state under root/phase)."""
    import io

    from pyexp.config import load_config
    from pyexp.experiment import loadExperiment
    from pyexp.runner import CommandTemplate, Runner, processes

    path = make_project(root, max(n, 1))
    exp = loadExperiment(path, config=load_config(os.path.join(root, "config.json")))
    if phase == "spawn":
        start = time.perf_counter()
        for _ in range(n):
            subprocess.Popen(["/bin/true"], start_new_session=True).wait()
        print(json.dumps({"seconds": time.perf_counter() - start}))
        return
    if phase == "noop":
        processes.Spawner.start = lambda self, argv, log, env: _NoProcess()
    if phase in ("setpriv", "killsetpriv", "nodeath", "fallback", "killfallback"):
        processes._has_pidfd = lambda: False
    if phase == "nodeath":
        processes.die_with_parent_prefix = lambda parent: []
    if phase in ("fallback", "killfallback"):
        processes._has_pdeathsig = lambda setpriv: False
    if phase.startswith("kill"):  # run `sleep 60` and wait to be killed by the parent
        command = CommandTemplate(f"sh -c 'echo $$ > {root}/child.pid; exec sleep 60'")
        Runner(exp, command, out=io.StringIO()).run([0])
        return
    run = Runner(exp, CommandTemplate("true"), out=io.StringIO())
    start, cpu = time.perf_counter(), _cpu()
    if phase == "farm":
        from pyexp.indexset import IndexSet
        from pyexp.runner.pool import PoolClaims

        status = run.run_from(PoolClaims(exp, IndexSet.span(0, n), 0, 1, "bench", say=str))
    else:
        status = run.run(range(n))
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    assert status == 0 and run.tally["done"] == n, (status, run.tally)
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def child_dies_with_runner(root: str, phase: str) -> float | None:
    """Seconds from SIGKILL of a runner to its command's end; None if it outlived 1 s."""
    folder = os.path.join(root, phase)
    os.makedirs(folder)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phase, "1", folder]
    runner = subprocess.Popen(cmd)
    pidfile = os.path.join(folder, "child.pid")
    deadline = time.monotonic() + 30
    while not _read(pidfile).endswith("\n"):
        if time.monotonic() > deadline:
            runner.kill()
            raise RuntimeError(f"{phase}: the command never started")
        time.sleep(0.01)
    pid = int(_read(pidfile))
    runner.kill()
    runner.wait()
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        if not _alive(pid):
            return time.monotonic() - start
        time.sleep(0.005)
    os.kill(pid, 9)
    return None


def _alive(pid: int) -> bool:
    # A killed orphan stays a zombie until init reaps it, which some containers never do.
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_child(phase: str, n: int, root: str, prefix: tuple[str, ...] = ()) -> dict:
    """One phase in a fresh process (optionally under a tracer); its JSON answer."""
    cmd = [*prefix, sys.executable, os.path.abspath(__file__), "--child", phase, str(n), root]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_ms(phase: str, n: int, root: str, repeat: int) -> tuple[float, float | None]:
    """The fastest of repeat runs of a phase: (wall ms per index, its CPU ms per index)."""
    runs = [run_child(phase, n, os.path.join(root, f"{phase}-{r}")) for r in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    cpu = best.get("cpu")
    return best["seconds"] / n * 1000, None if cpu is None else cpu / n * 1000


def strace_summary(phase: str, n: int, root: str) -> dict[str, int]:
    """Syscall counts of one phase under strace -c -f -e trace=%file,getdents64."""
    out = os.path.join(root, "strace-c.txt")
    prefix = ("strace", "-c", "-f", "-e", "trace=%file,getdents64", "-o", out)
    run_child(phase, n, os.path.join(root, f"{phase}-{n}-c"), prefix)
    return read_strace_summary(out)


def state_calls(phase: str, n: int, root: str) -> dict[str, int]:
    """Calls (by name) of one phase that name a path under its own folder, i.e. state and logs."""
    out = os.path.join(root, "strace-y.txt")
    folder = os.path.join(root, f"{phase}-{n}-y")
    prefix = ("strace", "-f", "-y", "-e", "trace=%file,getdents64,fsync", "-o", out)
    run_child(phase, n, folder, prefix)
    counts: dict[str, int] = {}
    pattern = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\(")
    ours = (os.path.join(folder, "state"), os.path.join(folder, "logs"))
    with open(out) as f:
        for line in f:
            if any(p in line for p in ours) and (m := pattern.match(line)):
                name = m.group(1)
                counts[name] = counts.get(name, 0) + 1
                if name in ROUND_TRIPS or "ENOENT" in line:
                    counts["(round trips)"] = counts.get("(round trips)", 0) + 1
    return counts


def per_index(with_n: dict[str, int], without: dict[str, int], n: int) -> dict[str, float]:
    """(with_n - without) / n per syscall, dropping zeros."""
    names = set(with_n) | set(without)
    delta = {k: (with_n.get(k, 0) - without.get(k, 0)) / n for k in names}
    return {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0.005}


def fmt(counts: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in counts.items())
    return f"{sum(counts.values()):.1f} ({parts or 'none'})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=500, help="indices per phase (default 500)")
    p.add_argument("--dir", default=None, help="where to put state and logs (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=3, help="timing runs per phase (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark folder")
    p.add_argument("--busy", action="store_true", help="run a second copy beside this one")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    if args.busy:
        return busy(args)
    root = tempfile.mkdtemp(prefix="pyexp-bench-runner-", dir=args.dir)
    try:
        ok = report(root, args.n, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"target < {TARGET_MS} ms per index around `true`, wall within {WALL_PER_CPU}x CPU, "
        f"at most {MAX_TRIPS} round trips per index (farm), command dies with the runner: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


def busy(args: argparse.Namespace) -> int:
    """This benchmark twice at once, on a busy machine; both reports, one after the other."""
    argv = [sys.executable, os.path.abspath(__file__), "-n", str(args.n)]
    argv += ["--repeat", str(args.repeat), *(["--dir", args.dir] if args.dir else [])]
    copies = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [c.communicate()[0] for c in copies]
    for i, out in enumerate(outs, 1):
        print(f"--- copy {i} of 2, run at the same time")
        print(out, end="")
    return max(c.returncode for c in copies)


def report(root: str, n: int, repeat: int) -> bool:
    """Run every phase under root and print the figures; whether every target was met."""
    phases = ("noop", "true", "farm", "setpriv", "nodeath", "fallback", "spawn")
    ms = {ph: best_ms(ph, n, root, repeat) for ph in phases}
    wall, cpu = ms["true"]
    print(f"{n} indices, state and logs under {root}, best of {repeat}")
    print(f"  runner, no process (state work only): {ms['noop'][0]:6.2f} ms/index")
    print(f"  runner around `true`:                 {wall:6.2f} ms/index, CPU {cpu:.2f} ms")
    print(f"  farm worker around `true`:            {ms['farm'][0]:6.2f} ms/index")
    print(f"  same, through setpriv (no pidfds):    {ms['setpriv'][0]:6.2f} ms/index")
    print(f"  same, nothing killing it with us:     {ms['nodeath'][0]:6.2f} ms/index")
    print(f"  same, with the Python fallback:       {ms['fallback'][0]:6.2f} ms/index")
    print(f"  bare spawn of `true` (for reference): {ms['spawn'][0]:6.2f} ms/index")
    print(f"  runner overhead beyond the spawn:     {wall - ms['spawn'][0]:6.2f} ms/index")
    print(f"  wall / CPU per index around `true`:   {wall / cpu:6.2f}")
    ok = wall < TARGET_MS and wall <= WALL_PER_CPU * cpu
    kills = (("kill", "watcher"), ("killsetpriv", "setpriv"), ("killfallback", "fallback"))
    for phase, name in kills:
        died = child_dies_with_runner(root, phase)
        ok = ok and died is not None
        verdict = f"gone after {died * 1000:.0f} ms" if died is not None else "STILL ALIVE"
        print(f"  kill -9 of the runner ({name}): command {verdict}")
    if not shutil.which("strace"):
        print("  (strace not found: no syscall counts)")
        return ok
    for phase in ("noop", "true"):
        summary = per_index(strace_summary(phase, n, root), strace_summary(phase, 0, root), n)
        print(f"  {phase}: %file+getdents64 calls per index (strace -c): {fmt(summary)}")
    for phase in ("true", "farm"):
        # Beyond the first index, which also makes the run's folders, journal and views.
        state = per_index(state_calls(phase, n, root), state_calls(phase, 1, root), n - 1)
        trips = state.pop("(round trips)", 0.0)
        print(f"  {phase}: calls naming state/log paths per index after the first: {fmt(state)}")
        print(f"        of which round trips on a shared filesystem: {trips:.1f}")
        ok = ok and (phase != "farm" or trips <= MAX_TRIPS)
    return ok


if __name__ == "__main__":
    sys.exit(main())
