"""A farm worker whose command takes no index: started once, it claims indices itself.

pyexp-run starts the command with PYEXP_LEDGER and PYEXP_TASK set, and the user's script calls
pyexp.claim() (pyexp.runner.claim), which takes leases and records outcomes the way pyexp-run
does. pyexp-run passes a stop signal on as it came (SIGUSR1 stays a timeout), kills the
script's process group if it has not ended a grace period later, and says so when the script
never called pyexp.claim() (a command that forgot {index}).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import TextIO

from pyexp.command import CommandTemplate
from pyexp.environment import grace_seconds
from pyexp.job_environment import JobEnvironment
from pyexp.runner.command import command_environ
from pyexp.runner.processes import SignalWatch, Spawner, signal_group
from pyexp.state.ledger import LedgerEntry

CLAIM_MARK = "PYEXP_CLAIM_MARK"  # a path pyexp.claim() creates: the script did claim
WORKER_START = (
    "PYEXP_WORKER_START"  # epoch seconds pyexp-run started: the time limit counts from it
)


def run_worker_script(
    template: CommandTemplate,
    ledger_path: str,
    task: int,
    snapshot: str,
    entry: LedgerEntry,
    out: TextIO | None = None,
) -> int:
    """Run the command as worker task of the entry, once per core (PYEXP_SLOT 0..cores-1);
    the highest exit status (128+N on signal N)."""
    out = out or sys.stderr
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pyexp-worker-") as tmp:
        mark = os.path.join(tmp, "claimed")
        env = {
            **command_environ(os.environ, JobEnvironment.read().python_on_path),
            "PYEXP_LEDGER": os.path.abspath(ledger_path),
            "PYEXP_TASK": str(task),
            "PYEXP_EXPERIMENT": entry.experiment,
            "PYEXP_SNAPSHOT": snapshot,
            CLAIM_MARK: mark,
            WORKER_START: str(started),
        }
        with SignalWatch() as watch:
            # Read now, with the watch on: a signal that came before is noted in the environment.
            if (early := JobEnvironment.read().early_signum) is not None:
                print("pyexp-run: Slurm's stop signal came before pyexp-run was up: not starting",
                      file=out)  # fmt: skip
                return 128 + early
            procs = []
            try:
                for slot in range(max(1, entry.cores)):  # one copy per core, each a sub-worker
                    env["PYEXP_SLOT"] = str(slot)
                    procs.append(Spawner().start(template.argv(snapshot, 0, 0), None, env))
            except OSError as e:
                for proc in procs:
                    signal_group(proc, signal.SIGKILL)
                    proc.wait()
                print(f"pyexp-run: cannot start {template.tokens[0]!r}: {e.strerror}", file=out)
                return 127
            rc = _supervise(procs, watch)
        if watch.signum is not None:
            return 128 + watch.signum
        if not os.path.exists(mark):
            print(
                f"pyexp-run: {template.template!r} has no {{index}}, so each worker runs it "
                "once to call pyexp.claim(), but it never did; add {index} to run it per index",
                file=out,
            )
            return rc or 1
        return rc


def _supervise(procs: list[subprocess.Popen], watch: SignalWatch) -> int:
    """Wait for procs, passing a stop signal on and SIGKILLing them a grace period later; the
    highest exit status (128+N for one killed by signal N)."""
    kill_at = None
    while any(p.poll() is None for p in procs):
        if watch.signum is not None and kill_at is None:
            for p in procs:
                signal_group(p, watch.signum)
            kill_at = time.monotonic() + grace_seconds()
        if kill_at is not None and time.monotonic() >= kill_at:
            for p in procs:
                signal_group(p, signal.SIGKILL)
        watch.wait(None if kill_at is None else max(0.05, kill_at - time.monotonic()))
    return max(128 - p.returncode if p.returncode < 0 else p.returncode for p in procs)
