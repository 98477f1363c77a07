"""The Slurm job this process runs in, read in one place: its SLURM_* variables, and the PYEXP_*
ones its script (or the local backend) sets for pyexp-run."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

# "0": the command's PATH stays the job's (cluster config "python_on_path": false); else the
# folder of the Python running pyexp-run goes first on it.
PYTHON_ON_PATH = "PYEXP_PYTHON_ON_PATH"
# Set by the array script when Slurm's warning signal (USR1) came before pyexp-run was up.
EARLY_SIGNAL = "PYEXP_EARLY_SIGNAL"


@dataclass(frozen=True)
class JobEnvironment:
    """What Slurm tells a job about itself; every field None outside Slurm."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    restart_count: str | None = None
    cpus_per_task: str | None = None
    end_time: str | None = None  # epoch seconds; Slurm >= 23.02 sets it, older ones do not
    python_on_path: bool = True
    early_signal: str | None = None  # a signal name, e.g. 'USR1'

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> JobEnvironment:
        """The job environment of environ (default os.environ), empty values as None."""
        env = os.environ if environ is None else environ
        return cls(
            job_id=env.get("SLURM_JOB_ID") or None,
            array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
            array_task_id=env.get("SLURM_ARRAY_TASK_ID") or None,
            restart_count=env.get("SLURM_RESTART_COUNT") or None,
            cpus_per_task=env.get("SLURM_CPUS_PER_TASK") or None,
            end_time=env.get("SLURM_JOB_END_TIME") or None,
            python_on_path=env.get(PYTHON_ON_PATH) != "0",
            early_signal=env.get(EARLY_SIGNAL) or None,
        )

    @property
    def end(self) -> float | None:
        """When Slurm ends this job (epoch seconds), if it says; None otherwise or if garbled."""
        try:
            return float(self.end_time) if self.end_time else None
        except ValueError:
            return None

    @property
    def early_signum(self) -> int | None:
        """The signal that came before pyexp-run was up, as a number; None if none (or unknown)."""
        signum = getattr(signal, f"SIG{self.early_signal}", None) if self.early_signal else None
        return int(signum) if signum is not None else None

    @property
    def job(self) -> str | None:
        """This job as `<array job>_<task>` or `<job>`, None outside Slurm."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    @property
    def attempt(self) -> str | None:
        """This array task's try as `<array job>_<task>[-<requeue count>]`, None outside one."""
        if not (self.array_job_id and self.array_task_id):
            return None
        restart = self.restart_count or "0"
        return self.job if restart == "0" else f"{self.job}-{restart}"
