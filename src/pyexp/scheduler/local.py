"""The local backend: every array task runs on this machine, `parallel` at once, through the
same runner (pyexp-run --ledger) as on Slurm; pyexp-submit returns when they are done."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING

from pyexp.job_environment import PYTHON_ON_PATH
from pyexp.scheduler.backend import Backend, Sent, SubmitFailed, log_dir
from pyexp.scheduler.planner import Limits
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.scheduler.slurm_states import QueueSnapshot
    from pyexp.state.ledger import LedgerEntry

Progress = Callable[[int, int, int], None]  # indices done, of, tasks with failures


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
        from pyexp.scheduler.slurm_backend import SlurmBackend

        return SlurmBackend(self.cluster).queue(required=False)

    def limits(self) -> Limits:
        """No queue limit; arrays as large as the cluster config allows."""
        return Limits(None, self.cluster.max_array_size, self.parallel, "this machine")

    def submit(
        self, exp: ExperimentDescription, entries: list[LedgerEntry], held: Callable[[], bool]
    ) -> Sent:
        """Run every task of every entry here; Ctrl-C stops them (each records its stop)."""
        ledger, sent = Ledger(state_dirs(exp).ledger), Sent()
        jobs: list[tuple[LedgerEntry, int, int]] = []  # entry, task, its share of the indices
        for entry in entries:
            ledger.write(entry)
            ledger.mark_submitted(entry, f"local-{os.getpid()}")
            sent.job_ids.append(entry.job_id or "")
            jobs += [(entry, t, share) for t, share in enumerate(_shares(entry))]
        env = dict(os.environ)
        if exp.config.source:
            env["PYEXP_CONFIG"] = exp.config.source
        env[PYTHON_ON_PATH] = "1" if self.cluster.python_on_path else "0"
        python = self.cluster.python or sys.executable
        total, finished = sum(share for _, _, share in jobs), 0
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            shares = {pool.submit(_run_task, exp, python, env, e, t): n for e, t, n in jobs}
            try:
                for future in as_completed(shares):
                    sent.failed_tasks += future.result() != 0
                    finished += shares[future]
                    if self.progress:
                        self.progress(finished, total, sent.failed_tasks)
            except KeyboardInterrupt:  # running tasks got the same SIGINT: each recorded its stop
                pool.shutdown(cancel_futures=True)
                raise SubmitFailed("interrupted: stopped indices stay missing") from None
        return sent

    def cancel(self, job_ids: list[str]) -> None:
        """Nothing to do: local tasks end with the pyexp-submit that runs them (Ctrl-C)."""


def _shares(entry: LedgerEntry) -> list[int]:
    """Indices each task accounts for in progress: its bundle, or an even part of the pool."""
    if not entry.is_farm:
        return [len(task) for task in entry.tasks]
    size, n = len(entry.index_set()), max(1, entry.workers)
    return [size * (w + 1) // n - size * w // n for w in range(n)]


def _run_task(
    exp: ExperimentDescription, python: str, env: dict[str, str], entry: LedgerEntry, task: int
) -> int:
    ledger_path = Ledger(state_dirs(exp).ledger).path(entry.id)
    stem = os.path.join(log_dir(exp), f"{entry.job_name}_{task}")
    argv = [python, "-m", "pyexp.cli.run", "--ledger", ledger_path, "--task", str(task)]
    with open(f"{stem}.out", "w") as out, open(f"{stem}.err", "w") as err:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=exp.config.root
        )
    return proc.returncode
