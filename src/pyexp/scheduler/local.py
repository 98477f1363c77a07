"""The local backend: every array task runs on this machine, `parallel` at once, through the
same runner (pyexp-run --ledger) as on Slurm; pyexp-submit returns when they are done."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyexp.job_environment import PYTHON_ON_PATH
from pyexp.scheduler.backend import Backend, Sent, SubmitFailed
from pyexp.scheduler.planner import Limits
from pyexp.scheduler.slurm_backend import SlurmBackend
from pyexp.state.atomic import scan_names
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.ledger import Ledger, local_job_id
from pyexp.state.records import CompletionRecords

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.standing.slurm_states import QueueSnapshot
    from pyexp.state.ledger import LedgerEntry


@dataclass(frozen=True)
class Tick:
    """Where a local run stands as a task ends."""

    ran: int  # indices run (done or attempted) since the run began, as the state says
    total: int  # indices planned
    failed_tasks: int  # tasks that ended with failures
    eta: float | None  # seconds until the last task ends (None: no task has ended yet)
    over: bool  # every task has ended


Progress = Callable[[Tick], None]


class LocalBackend(Backend):
    """Runs the tasks here; Slurm's queue, when there is one, still says what runs elsewhere."""

    def __init__(
        self, cluster: ClusterConfig, parallel: int | None = None, progress: Progress | None = None
    ) -> None:
        super().__init__(cluster)
        self.parallel = max(1, parallel or os.cpu_count() or 1)
        self.progress = progress

    @property
    def name(self) -> str:
        """Recorded as the entries' cluster."""
        return "local-machine"

    @property
    def cores(self) -> int:
        """One: locally, parallelism is across tasks."""
        return 1

    def queue(self, required: bool) -> QueueSnapshot | None:
        """What Slurm has queued of this experiment, if this machine talks to Slurm."""
        return SlurmBackend(self.cluster).queue(required=False)

    def limits(self) -> Limits:
        """No queue limit; arrays as large as the cluster config allows."""
        return Limits(None, self.cluster.max_array_size, self.parallel, "this machine")

    def submit(
        self, exp: ExperimentDescription, entries: list[LedgerEntry], held: Callable[[], bool]
    ) -> Sent:
        """Run every task of every entry here; Ctrl-C stops them (each records its stop). Once a
        task's broken-command guard trips, the tasks not yet started are not started."""
        ledger, sent = Ledger(state_dirs(exp).ledger), Sent()
        jobs: list[tuple[LedgerEntry, int]] = []
        for entry in entries:
            ledger.write(entry)
            ledger.mark_submitted(entry, local_job_id(str(os.getpid())))
            sent.job_ids.append(entry.job_id or "")
            jobs += [(entry, t) for t in range(entry.task_count())]
        env = dict(os.environ)
        if exp.config.source:
            env["PYEXP_CONFIG"] = exp.config.source
        env[PYTHON_ON_PATH] = "1" if self.cluster.python_on_path else "0"
        python = self.cluster.python or sys.executable
        total, base = sum(len(e.index_set()) for e in entries), ran_so_far(exp)
        starts: dict[tuple[str, int], float] = {}  # (entry id, task) -> when it started
        durations: list[float] = []
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            futures = {
                pool.submit(_run_task, exp, python, env, e, t, starts): (e.id, t) for e, t in jobs
            }
            try:
                for future in as_completed(futures):
                    sent.failed_tasks += future.result() not in (0, None)
                    durations.append(time.monotonic() - starts[futures[future]])
                    sent.ran = min(total, ran_so_far(exp) - base)
                    if self.progress:
                        now, ended = time.monotonic(), len(durations)
                        running = [
                            now - starts[k]
                            for f, k in futures.items()
                            if k in starts and not f.done()
                        ]
                        left = eta(
                            durations, running, len(jobs) - ended - len(running), self.parallel
                        )
                        self.progress(
                            Tick(sent.ran, total, sent.failed_tasks, left, ended == len(jobs))
                        )
            except KeyboardInterrupt:  # running tasks got the same SIGINT: each recorded its stop
                pool.shutdown(cancel_futures=True)
                raise SubmitFailed("interrupted: stopped indices stay missing") from None
        return sent


def ran_so_far(exp: ExperimentDescription) -> int:
    """Indices of exp that have run, as its state says: completion records and attempts."""
    dirs = state_dirs(exp)
    return len(CompletionRecords(dirs.done).completed(compact=False)) + len(
        scan_names(dirs.attempts)
    )


def eta(durations: list[float], running: list[float], queued: int, slots: int) -> float:
    """Seconds until the last task ends: each queued task takes the mean ended task's time and
    each running one what is left of that, spread over the slots (so the first estimate, made
    while the other slots are nearly done with their first tasks, is not slots times too long)."""
    mean = sum(durations) / len(durations)
    left = queued * mean + sum(max(mean - elapsed, 0.0) for elapsed in running)
    return left / max(1, min(slots, queued + len(running)))


def _run_task(
    exp: ExperimentDescription,
    python: str,
    env: dict[str, str],
    entry: LedgerEntry,
    task: int,
    starts: dict[tuple[str, int], float],
) -> int | None:
    """Run one task through pyexp-run; its exit status, None when not started because a task
    of this run found the command broken (the guard's word in state: the rest stays missing)."""
    starts[entry.id, task] = time.monotonic()
    if os.path.exists(state_dirs(exp).broken):  # one from before this run: refused, or cleared
        return None
    ledger_path = Ledger(state_dirs(exp).ledger).path(entry.id)
    stem = os.path.join(log_dir(exp), f"{entry.job_name}_{task}")
    argv = [python, "-m", "pyexp.cli.run", "--ledger", ledger_path, "--task", str(task)]
    with open(f"{stem}.out", "w") as out, open(f"{stem}.err", "w") as err:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=exp.config.root
        )
    return proc.returncode
