"""The runner's entry points: one array task of a ledger entry, or indices of a file."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from typing import TextIO

from pyexp.config import Config
from pyexp.environment import positive
from pyexp.errors import RunnerError
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.job_environment import JobEnvironment
from pyexp.runner.command import parse_indices, resolve_command
from pyexp.runner.guard import FailFast
from pyexp.runner.loop import Runner
from pyexp.runner.pool import PoolClaims, TimeBudget
from pyexp.runner.sweep_edits import still_swept, swept_check
from pyexp.runner.worker_script import run_worker_script
from pyexp.state.atomic import write_atomic
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger, LedgerEntry, local_job_id


def default_parallel(entry: LedgerEntry | None, job: JobEnvironment) -> int:
    """Indices at once: the ledger entry's cores, else $SLURM_CPUS_PER_TASK, else 1."""
    if entry is not None:
        return max(1, entry.cores)
    return max(1, int(positive("SLURM_CPUS_PER_TASK", job.cpus_per_task, 1)))


def load_task(
    ledger_path: str, task: int | None, job: JobEnvironment | None = None
) -> tuple[LedgerEntry, int]:
    """The ledger entry at ledger_path and this array task's number (else $SLURM_ARRAY_TASK_ID)."""
    folder, name = os.path.split(os.path.abspath(ledger_path))
    try:
        entry = Ledger(folder).load(name.removesuffix(".json"))
    except FileNotFoundError:
        raise RunnerError(f"{ledger_path}: no such ledger entry") from None
    except (OSError, ValueError, TypeError) as e:
        raise RunnerError(f"{ledger_path}: unreadable ledger entry: {e}") from None
    if task is None:
        value = (job or JobEnvironment.read()).array_task_id
        if value is None:
            raise RunnerError("no task: pass --task N or run inside a Slurm array task")
        if not value.isdigit():
            raise RunnerError(f"SLURM_ARRAY_TASK_ID={value!r}: not a task number")
        task = int(value)
    if not 0 <= task < entry.task_count():
        raise RunnerError(f"{ledger_path}: task {task} out of range (0-{entry.task_count() - 1})")
    return entry, task


def worker_job(entry: LedgerEntry, task: int, job: JobEnvironment) -> JobEnvironment:
    """job, or outside Slurm a stand-in naming the entry and task, so a farm worker's attempts
    say which array tried them (workers do not retry what their array already failed)."""
    if job.array_task_id is not None:
        return job
    return replace(job, array_job_id=local_job_id(entry.id), array_task_id=str(task))


def pool_tag(job: JobEnvironment) -> str:
    """The prefix (before `_<task>`) of the attempt names of a farm worker's array."""
    return job.array_job_id or ""


def write_snapshot(exp: ExperimentDescription, fingerprint: str) -> str:
    """Store exp's dict once under its fingerprint (content-addressed, atomic); its path."""
    path = os.path.join(state_dirs(exp).snapshots, f"{fingerprint}.json")
    text = json.dumps(exp.description, indent=1)
    # Same name, same content: a concurrent writer is harmless. Compared, not just found: a
    # damaged copy would feed every command garbage, each failure charged to the user.
    if _read_text(path) != text:
        write_atomic(path, text)
    return path


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def run_ledger(
    ledger_path: str,
    task: int | None = None,
    command: str | None = None,
    parallel: int | None = None,
    config: Config | None = None,
    out: TextIO | None = None,
) -> int:
    """Run one array task of a ledger entry, as the experiment was when submitted."""
    job = JobEnvironment.read()
    started = time.monotonic()
    entry, task = load_task(ledger_path, task, job)
    # The entry's snapshot, not the file (which may have been edited since): the record, the
    # save path and the command all see the experiment the indices were planned from.
    exp = ExperimentDescription(entry.snapshot, path=entry.experiment, config=config)
    _check_ledger_home(ledger_path, exp)
    template = resolve_command(command, entry, exp.config)
    snapshot = write_snapshot(exp, entry.fingerprint)
    if entry.is_farm:
        job = worker_job(entry, task, job)
    if entry.is_farm and template.in_process:
        return run_worker_script(template, ledger_path, task, snapshot, entry, out)
    runner = Runner(
        exp,
        template,
        experiment_path=entry.experiment,
        snapshot_path=snapshot,
        parallel=parallel or default_parallel(entry, job),
        job=job,
        out=out,
        guard=FailFast.for_entry(entry, task),
    )
    if not entry.is_farm:
        return runner.run(still_swept(entry, exp, entry.tasks[task], out or sys.stderr))
    budget = TimeBudget.for_entry(entry, job, runner.records, started)
    swept = swept_check(entry, exp, out or sys.stderr)
    claims = PoolClaims(
        exp, entry.index_set(), task, entry.workers, pool_tag(job), budget, runner.say, swept
    )
    return runner.run_from(claims)


def _check_ledger_home(ledger_path: str, exp: ExperimentDescription) -> None:
    here = os.path.realpath(os.path.dirname(os.path.abspath(ledger_path)))
    expected = os.path.realpath(state_dirs(exp).ledger)
    if here != expected:
        raise RunnerError(
            f"{ledger_path} is not in this config's state folder ({expected}); run from the "
            "project folder or set PYEXP_CONFIG to the config.json it was submitted with"
        )


def run_direct(
    experiment: str,
    indices: str | None = None,
    runs: int | None = None,
    command: str | None = None,
    parallel: int | None = None,
    config: Config | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the given indices (or every index of runs) of an experiment file; the exit status."""
    exp = loadExperiment(experiment, config=config)
    template = resolve_command(command, None, exp.config)
    if indices is None and runs is None:
        raise RunnerError("which indices? pass --indices 0-9,12 or --runs R")
    total = exp.numPermutations() * runs if runs is not None else None
    chosen = parse_indices(indices) if indices is not None else list(range(total or 0))
    if total is not None and chosen and max(chosen) >= total:
        raise RunnerError(f"--indices: {max(chosen)} is beyond {runs} run(s) ({total} indices)")
    job = JobEnvironment.read()
    runner = Runner(
        exp,
        template,
        experiment_path=experiment,
        parallel=parallel or default_parallel(None, job),
        job=job,
        out=out,
    )
    return runner.run(chosen)
