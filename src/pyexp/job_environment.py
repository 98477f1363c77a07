"""The Slurm job this process runs in, read from its SLURM_* variables in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class JobEnvironment:
    """What Slurm tells a job about itself; every field None outside Slurm."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    restart_count: str | None = None
    cpus_per_task: str | None = None
    end_time: str | None = None  # epoch seconds; Slurm >= 23.02 sets it, older ones do not

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
        )

    @property
    def end(self) -> float | None:
        """When Slurm ends this job (epoch seconds), if it says; None otherwise or if garbled."""
        try:
            return float(self.end_time) if self.end_time else None
        except ValueError:
            return None

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
