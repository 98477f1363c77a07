"""Submitting what is missing: lock, ask squeue, plan, render, then ledger + sbatch per array."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from pyexp.errors import PyExpError, SavePathError, SlurmError
from pyexp.scheduler import planner, render, slurm
from pyexp.scheduler.cluster import ClusterConfig
from pyexp.state.atomic import scan_names, write_atomic
from pyexp.state.layout import experiment_id, state_dirs
from pyexp.state.ledger import Ledger, LedgerEntry, new_entry_id

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.slurm_states import QueueSnapshot

LOCK_LEASE_SECONDS = float(os.environ.get("PYEXP_SUBMIT_LOCK_SECONDS") or 30.0)


class SubmitBusy(PyExpError, RuntimeError):
    """Another pyexp-submit of the same experiment holds its submit lock."""


class SubmitLockLost(PyExpError, RuntimeError):
    """This submitter's lock was taken over (it was paused past its lease): it stops."""


class SubmitFailed(PyExpError, RuntimeError):
    """Slurm did not accept an array; the arrays accepted before it stay recorded."""


@dataclass
class SubmitOptions:
    """How to submit: everything pyexp-submit's flags set, besides the experiments."""

    runs: int
    cluster: ClusterConfig
    command: str | None = None
    template: str | None = None
    dry_run: bool = False
    local: bool = False
    parallel: int | None = None
    max_attempts: int | None = None  # None: as the last explicit --max-attempts, else 3
    retry_failed: bool = False
    lock_timeout: float = 60.0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    progress: Callable[[int, int, int], None] | None = None  # local: indices done, of, failed tasks


@dataclass
class Submitted:
    """What one submission did for one experiment."""

    experiment: str
    missing: list[int]
    plans: list[planner.ArrayPlan] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    failed_tasks: int = 0
    logs: str = ""
    queue_seen: bool = True  # False: squeue could not be asked, queued work was not subtracted
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. unreadable ledger


def submit_experiment(exp: ExperimentDescription, opts: SubmitOptions) -> Submitted:
    """Submit exp's missing indices (or, with dry_run, only plan and render them)."""
    command = opts.command or exp.config.command
    if not command:
        raise PyExpError(
            "no command to run: pass --command 'python main.py -e {experiment} -i {index}' "
            "or set 'command' in config.json"
        )
    if opts.dry_run:
        return _submit_locked(exp, opts, command, lambda: True)
    with submit_lock(state_dirs(exp).submit_lock, opts.lock_timeout) as held:
        return _submit_locked(exp, opts, command, held)


@contextmanager
def submit_lock(path: str, timeout: float) -> Iterator[Callable[[], bool]]:
    """Hold the experiment's submit lock (a lease, so it works across login nodes on NFS);
    yields a check that it is still ours (renewed, not taken over), for fencing each sbatch."""
    from filelock import SoftFileLease, Timeout

    from pyexp.state.leases import still_holds

    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = SoftFileLease(path, lease_duration=LOCK_LEASE_SECONDS, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise SubmitBusy(
            f"another pyexp-submit of this experiment still holds {path} after {timeout:g} s; "
            "try again later"
        ) from None
    except OSError as e:  # filelock's marker write names no file
        raise OSError(e.errno, e.strerror, e.filename or path) from None
    try:
        yield lambda: still_holds(lock)
    finally:
        lock.release()


def _submit_locked(
    exp: ExperimentDescription, opts: SubmitOptions, command: str, held: Callable[[], bool]
) -> Submitted:
    from pyexp.reconcile import check_ledger, max_attempts, settle, to_submit, with_accounting
    from pyexp.scheduler.slurm_states import QueueSnapshot

    submitting = not (opts.local or opts.dry_run)
    queue = _queue(required=submitting)
    seen = queue is not None
    queue = queue or QueueSnapshot()
    if submitting:
        queue = with_accounting(exp, queue, slurm.sacct_states)
        settle(exp, queue)
    warnings = check_ledger(exp, queue)
    cap = max_attempts(exp, opts.max_attempts, remember=submitting)
    missing = to_submit(exp, opts.runs, queue, cap, opts.retry_failed)
    done = Submitted(_experiment_path(exp), missing, logs=log_dir(exp), queue_seen=seen)
    done.warnings = warnings
    if not missing:
        return done
    done.warnings += check_runnable(exp, command, missing, opts.runs)
    config = "" if opts.local else slurm.show_config()
    done.plans = planner.plan_for(missing, opts.cluster, slurm.max_array_size(config))
    folder = _dry_run_folder(exp, done.warnings) if opts.dry_run else state_dirs(exp).scripts
    entries = [_entry(exp, opts, command, plan, folder) for plan in done.plans]
    done.scripts = [
        _write_script(exp, opts, e, p, slurm.grace_seconds(config))
        for e, p in zip(entries, done.plans, strict=True)
    ]
    if opts.dry_run:
        return done
    os.makedirs(done.logs, exist_ok=True)  # Slurm does not create the log folder
    if opts.local:
        done.failed_tasks = _run_local(exp, opts, entries, done)
    else:
        _sbatch_all(exp, entries, done, held)
    return done


def check_runnable(
    exp: ExperimentDescription, command: str, indices: list[int], runs: int = 1
) -> list[str]:
    """Refuse, before anything is submitted, a command or save paths the tasks would fail on or
    share; the warnings worth a line (runs > 1 with no {run} in the save path)."""
    from pyexp.runner import CommandTemplate

    CommandTemplate(command)
    n, owner = exp.numPermutations(), {}
    for p in sorted({i % n for i in indices}):  # run 0 of each: the run cannot make it invalid
        try:
            path = exp.interpolateSavePath(p)
        except SavePathError as e:
            raise SavePathError(f"{_experiment_path(exp)}: index {p}: {e}") from None
        if path in owner:
            raise SavePathError(
                f"{_experiment_path(exp)}: indices {owner[path]} and {p} have the same save path "
                f"{path} (parameters {exp.getPermutation(owner[path])} and "
                f"{exp.getPermutation(p)}); make the values differ or use {{params_hash}}"
            )
        owner[path] = p
    if runs > 1 and "{run" not in exp.config.save_path:
        return [
            f"{_experiment_path(exp)}: {runs} runs but save_path {exp.config.save_path} has no "
            "{run}: the runs of a permutation share one folder"
        ]
    return []


def _queue(required: bool) -> QueueSnapshot | None:
    # Submitting to Slurm needs squeue's answer; a local or dry run uses it when there is one.
    if required:
        return slurm.queue_snapshot()
    if not slurm.available():
        return None
    try:
        return slurm.queue_snapshot()
    except SlurmError:
        return None


def _experiment_path(exp: ExperimentDescription) -> str:
    return os.path.abspath(exp.path) if exp.path else exp.getExperimentName()


def log_dir(exp: ExperimentDescription) -> str:
    """Where an experiment's array tasks write their stdout and stderr."""
    return os.path.join(exp.config.log_path, experiment_id(exp))


def _entry(
    exp: ExperimentDescription,
    opts: SubmitOptions,
    command: str,
    plan: planner.ArrayPlan,
    folder: str,
) -> LedgerEntry:
    entry_id = new_entry_id()
    return LedgerEntry(
        id=entry_id,
        experiment=_experiment_path(exp),
        fingerprint=exp.fingerprint(),
        snapshot=exp.description,
        runs=opts.runs,
        tasks=plan.tasks,
        command=command,
        cores=1 if opts.local else opts.cluster.cores,  # locally, parallelism is across tasks
        cluster="local-machine" if opts.local else opts.cluster.name,
        script=os.path.join(folder, f"{entry_id}.sbatch"),
    )


def _dry_run_folder(exp: ExperimentDescription, warnings: list[str]) -> str:
    """Where a dry run writes its scripts: the state folder's dry-run/, emptied (each dry run
    replaces the last one's), else, when state is read-only, a new temporary folder."""
    folder = os.path.join(state_dirs(exp).scripts, "dry-run")
    try:
        os.makedirs(folder, exist_ok=True)
        for name in scan_names(folder):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
        if os.access(folder, os.W_OK):
            return folder
    except OSError:  # read-only mount, no write permission, quota: a dry run writes elsewhere
        pass
    temporary = tempfile.mkdtemp(prefix="pyexp-dry-run-")
    warnings.append(f"{folder}: cannot write there; dry-run scripts written to {temporary}")
    return temporary


def _write_script(
    exp: ExperimentDescription,
    opts: SubmitOptions,
    entry: LedgerEntry,
    plan: planner.ArrayPlan,
    grace: int | None,
) -> str:
    context = render.array_context(
        plan,
        opts.cluster,
        job_name=entry.job_name,
        ledger=Ledger(state_dirs(exp).ledger).path(entry.id),
        log_dir=log_dir(exp),
        experiment=entry.experiment,
        config=exp.config.source,
        workdir=exp.config.root,
        grace=grace,
    )
    write_atomic(entry.script, render.render(context, opts.template))
    return entry.script


def _sbatch_all(
    exp: ExperimentDescription, entries: list[LedgerEntry], done: Submitted, held: Callable
) -> None:
    ledger = Ledger(state_dirs(exp).ledger)
    for n, entry in enumerate(entries):
        if not held():  # fencing: another submitter took the lock while this one was paused
            _forget(ledger, entries[n:], keep_first=False)
            raise SubmitLockLost(
                f"{done.experiment}: lost the submit lock {state_dirs(exp).submit_lock} "
                f"(paused past its {LOCK_LEASE_SECONDS:g} s lease); stopped after {n} of "
                f"{len(entries)} arrays, another submitter handles the rest"
            )
        # Recorded before sbatch: a task that starts at once finds its entry, and an array
        # whose sbatch hangs but gets queued anyway is still found in squeue by its job name.
        ledger.write(entry)
        try:
            job_id = slurm.sbatch(entry.script)
        except SlurmError as e:
            kept = _forget(ledger, entries[n:], keep_first=isinstance(e, slurm.SlurmUncertain))
            summary = f"{n} of {len(entries)} arrays submitted, the others' indices stay missing"
            raise SubmitFailed(f"{done.experiment}: {e}; {summary}{kept}") from None
        ledger.mark_submitted(entry, job_id)
        done.job_ids.append(job_id)


def _forget(ledger: Ledger, unsent: list[LedgerEntry], keep_first: bool) -> str:
    """Drop the ledger entry and scripts of arrays Slurm did not take; the note for the error."""
    note = ""
    if keep_first:
        # It may have been queued after all: keep its pending entry and script, so squeue's
        # tasks of pyexp-<id> count as queued and find their indices. If it was not queued,
        # nothing refers to the entry and its indices stay missing.
        note = f" (ledger entry {unsent[0].id} kept as pending in case it was queued)"
        unsent = unsent[1:]
    for entry in unsent:
        ledger.discard(entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.script)
    return note


def _run_local(
    exp: ExperimentDescription, opts: SubmitOptions, entries: list[LedgerEntry], done: Submitted
) -> int:
    """Run every task of every entry on this machine; returns how many tasks failed."""
    ledger = Ledger(state_dirs(exp).ledger)
    jobs = []
    for entry in entries:
        ledger.write(entry)
        ledger.mark_submitted(entry, f"local-{os.getpid()}")
        done.job_ids.append(entry.job_id or "")
        jobs += [(entry, t) for t in range(len(entry.tasks))]
    env = dict(os.environ)
    if exp.config.source:
        env["PYEXP_CONFIG"] = exp.config.source
    python = opts.cluster.python or sys.executable
    workers = max(1, opts.parallel or os.cpu_count() or 1)
    failed = finished = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = {pool.submit(_run_task, exp, python, env, e, t): len(e.tasks[t]) for e, t in jobs}
        try:
            for future in as_completed(sizes):
                failed += future.result() != 0
                finished += sizes[future]
                if opts.progress:
                    opts.progress(finished, sum(sizes.values()), failed)
        except KeyboardInterrupt:  # running tasks got the same SIGINT: each recorded its stop
            pool.shutdown(cancel_futures=True)
            raise SubmitFailed("interrupted: stopped indices stay missing") from None
    return failed


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


def report(done: Submitted, opts: SubmitOptions) -> str:
    """What happened, for the terminal: a line per experiment, the plan with --dry-run."""
    name = done.experiment
    if not done.missing:
        return f"{name}: nothing to submit"
    n, arrays = len(done.missing), len(done.plans)
    if opts.dry_run:
        return _dry_run_report(done, opts)
    if opts.local:
        tasks = sum(len(p.tasks) for p in done.plans)
        failed = (
            f", {done.failed_tasks} of them with failures (logs: {done.logs})"
            if done.failed_tasks
            else ""
        )
        return f"{name}: ran {n} indices locally in {_count(tasks, 'task')}{failed}"
    jobs = ", ".join(done.job_ids)
    return (
        f"{name}: submitted {n} indices as {_count(arrays, 'array')} "
        f"to {opts.cluster.name} (job {jobs})"
    )


def _dry_run_report(done: Submitted, opts: SubmitOptions) -> str:
    n, arrays, first = len(done.missing), len(done.plans), done.scripts[0]
    with open(first, encoding="utf-8") as f:
        script = f.read()
    notes = [] if done.queue_seen else ["squeue not reachable: queued work not subtracted"]
    if opts.cluster.account_required and not opts.cluster.account:
        notes.append("no account yet: submitting needs --account, or SBATCH_ACCOUNT")
    others = " (the others differ in --array, job name and ledger)" if arrays > 1 else ""
    return "\n".join(
        [
            f"{done.experiment}: dry run, would submit {n} indices as "
            f"{_count(arrays, 'array')} on {opts.cluster.name}:",
            planner.describe(done.plans),
            *(f"  note: {note}" for note in notes),
            f"  scripts: {os.path.dirname(first)} ({arrays} written); {first}{others}:",
            script.rstrip("\n"),
        ]
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
