"""Submitting what is missing: lock, ask the backend's queue and limits, plan, render, then
hand the ledger entries to the backend (Slurm, or this machine)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import TYPE_CHECKING, TextIO

from filelock import SoftFileLease, Timeout

from pyexp.command import CommandTemplate
from pyexp.environment import submit_lock_seconds
from pyexp.errors import PyExpError, SavePathError
from pyexp.indexset import IndexSet
from pyexp.scheduler import escalate, planner, preflight, quota, render, slurm
from pyexp.scheduler.backend import Backend
from pyexp.scheduler.cluster import ClusterConfig
from pyexp.scheduler.local import LocalBackend
from pyexp.scheduler.slurm_backend import SlurmBackend
from pyexp.scheduler.storage import purge_warning, readonly_refusal
from pyexp.standing.reconcile import (
    CONTINUING,
    FAILED_OUT,
    Standing,
    check_ledger,
    classify,
    max_attempts,
    submittable,
)
from pyexp.standing.settling import broken_command, broken_script, settle, with_accounting
from pyexp.standing.slurm_states import QueueSnapshot
from pyexp.state import footprint, save_owners
from pyexp.state.atomic import scan_names, write_atomic
from pyexp.state.guard import clear_broken
from pyexp.state.layout import log_dir, read_ledger, state_dirs
from pyexp.state.leases import still_holds
from pyexp.state.ledger import Ledger, LedgerEntry, LedgerScan, new_entry_id
from pyexp.state.records import CompletionRecords
from pyexp.state.settings import read_settings, remember
from pyexp.state.store import compact_quietly

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.local import Tick

CHECKED_PERMUTATIONS = 20_000  # save paths checked before submitting, of a huge sweep the first


class SubmitBusy(PyExpError, RuntimeError):
    """Another pyexp-submit of the same experiment holds its submit lock."""


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
    progress: Callable[[Tick], None] | None = None  # local: called as each task ends
    workers: int | None = None  # farm workers (--workers); None: from the expected work
    indices_per_task: int | None = None  # static bundles (--indices-per-task)
    index_minutes: float | None = None  # estimate of one index (--index-minutes)
    yes: bool = False  # submit more than planner.SANE_MISSING indices
    after: Callable[[Submitted], str] | None = None  # under the lock, after submitting (chain)
    escalate: bool = True  # retries with more memory or time (scheduler/escalate.py)

    def backend(self) -> Backend:
        """Where the arrays go: this machine with --local, else Slurm."""
        if self.local:
            return LocalBackend(self.cluster, self.parallel, self.progress)
        return SlurmBackend(self.cluster, submit_lock_seconds())


@dataclass
class Submitted:
    """What one submission did for one experiment."""

    experiment: str
    missing: IndexSet
    plan: planner.Plan | None = None
    limits: planner.Limits | None = None
    scripts: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    failed_tasks: int = 0
    logs: str = ""
    queue_seen: bool = True  # False: squeue could not be asked, queued work was not subtracted
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. unreadable ledger
    given_up: int = 0  # indices failed for good (attempts exhausted), not submitted
    ran: int | None = None  # indices that ran (--local), as the state says
    command: str = ""
    chain: str = ""  # what --until-done's chain did, one line
    files: quota.Estimate | None = None  # files the plan creates at most (scheduler/quota.py)

    @property
    def plans(self) -> list[planner.ArrayPlan]:
        """The arrays planned."""
        return self.plan.arrays if self.plan else []

    @property
    def submitted(self) -> int:
        """Indices planned into arrays (the others wait for room in the queue)."""
        return sum(p.indices for p in self.plans)


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
    preflight.check_writable(_experiment_path(exp), {"state_path": state_dirs(exp).root})
    # Before anything runs: later submits without --runs or --cluster, pyexp-status and
    # loadResults use them, also after an interrupted or killed first run. A --local run
    # submits to no cluster.
    cluster = {} if opts.local else {"cluster": opts.cluster.spec}
    remember(state_dirs(exp).settings, runs=opts.runs, **cluster)
    with submit_lock(state_dirs(exp).submit_lock, opts.lock_timeout) as held:
        done = _submit_locked(exp, opts, command, held)
        done.chain = opts.after(done) if opts.after else ""
        return done


@contextmanager
def submit_lock(path: str, timeout: float) -> Iterator[Callable[[], bool]]:
    """Hold the experiment's submit lock (a lease, so it works across login nodes on NFS);
    yields a check that it is still ours (renewed, not taken over), for fencing each sbatch."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = SoftFileLease(path, lease_duration=submit_lock_seconds(), timeout=timeout)
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


def tidy_if_idle(
    exp: ExperimentDescription, scan: LedgerScan, queue: QueueSnapshot | None = None
) -> bool:
    """Settle the arrays that left queue (squeue's word, None: unknown) and fold what exp's
    ended tasks left (footprint.leftovers), under its submit lock, if its state folder exists
    and no pyexp-submit holds the lock; whether it did (a read-only folder: no)."""
    if not os.path.isdir(state_dirs(exp).root):
        return False
    with contextlib.suppress(SubmitBusy, OSError), submit_lock(state_dirs(exp).submit_lock, 0):
        if queue is not None:
            settle(exp, queue, scan)  # marks the entries it settled in scan
        footprint.leftovers(exp, scan)
        return True
    return False


def _submit_locked(
    exp: ExperimentDescription, opts: SubmitOptions, command: str, held: Callable[[], bool]
) -> Submitted:
    notes = storage_notes(exp, opts)  # before anything asks Slurm or writes state
    backend = opts.backend()
    submitting = not (opts.local or opts.dry_run)
    scan = read_ledger(exp)  # the ledger, read once for the whole command
    queue, seen = _queue(backend, scan, submitting)
    if submitting:
        queue = with_accounting(exp, queue, slurm.sacct_states, scan)
        settle(exp, queue, scan)
    if not opts.dry_run:
        compact_quietly(state_dirs(exp).store)  # the results store's finished shards, merged
        footprint.tidy(exp, scan)  # settle() marked the entries it settled
    warnings = notes + check_ledger(exp, queue, scan)
    cap = max_attempts(exp, opts.max_attempts, remember=submitting)
    standing = classify(exp, opts.runs, queue, cap, opts.retry_failed, scan)
    missing = submittable(standing)
    done = Submitted(_experiment_path(exp), missing, logs=log_dir(exp), queue_seen=seen)
    done.command = command
    done.warnings, done.given_up = warnings, len(standing.indices(FAILED_OUT))
    if opts.retry_failed and not opts.dry_run:
        clear_broken(state_dirs(exp).broken)
    where, owned = done.experiment, permutations_of(missing, exp.numPermutations())
    root = preflight.check_save_owners(where, exp, owned, CHECKED_PERMUTATIONS)
    if not opts.dry_run:
        save_owners.register(exp, root)
    if not missing:
        return done
    broken = None if opts.retry_failed else broken_command(exp) or broken_script(exp, cap, scan)
    if broken and not opts.dry_run:
        raise PyExpError(f"{done.experiment}: {broken}")
    done.warnings += [broken] if broken else []
    if len(missing) > planner.SANE_MISSING and not (opts.yes or opts.dry_run):
        raise PyExpError(too_many(done))
    done.warnings += check_runnable(exp, command, missing, opts.runs)
    done.warnings += preflight.check_program(
        where, command, exp.config.root, opts.cluster, opts.local
    )
    if not opts.dry_run:
        preflight.check_writable(where, {"save_path": root, "log_path": done.logs})
    done.limits = backend.limits()
    done.plan = _plan(exp, opts, standing, missing, done.limits, scan.entries)
    tasks = sum(p.task_count for p in done.plans)
    save_path = "" if exp.config.store_only else exp.config.save_path  # "": no results folders
    done.files = quota.estimate(done.submitted, tasks, save_path)
    if not (opts.dry_run or opts.yes):
        paths = [exp.config.state_path, done.logs, root]
        if over := quota.refusal(where, done.files, quota.files_left(paths, slurm.run)):
            raise PyExpError(over)
    folder = _dry_run_folder(exp, done.warnings) if opts.dry_run else state_dirs(exp).scripts
    entries = [_entry(exp, opts, backend, command, p, folder) for p in done.plans]
    if not opts.local or opts.dry_run:  # a --local run starts pyexp-run itself: no script
        done.scripts = [
            _write_script(exp, opts, e, p, done.limits.grace_seconds)
            for e, p in zip(entries, done.plans, strict=True)
        ]
    if opts.dry_run or not entries:
        return done
    os.makedirs(done.logs, exist_ok=True)  # Slurm does not create the log folder
    sent = backend.submit(exp, entries, held)
    done.job_ids, done.failed_tasks, done.ran = sent.job_ids, sent.failed_tasks, sent.ran
    if opts.local and (broken := broken_command(exp)):  # a task of this run stopped early
        done.warnings.append(broken)
    return done


def _queue(backend: Backend, scan: LedgerScan, submitting: bool) -> tuple[QueueSnapshot, bool]:
    """Slurm's queue as this command sees it, and whether squeue answered. Run here or planned
    only, with nothing of the ledger's on Slurm, squeue is not asked (it can take seconds, or
    hang when no controller answers)."""
    if not (submitting or scan.may_be_on_slurm()):
        return QueueSnapshot(), True
    queue = backend.queue(required=submitting)
    return queue or QueueSnapshot(), queue is not None


def _plan(
    exp: ExperimentDescription,
    opts: SubmitOptions,
    standing: Standing,
    missing: IndexSet,
    limits: planner.Limits,
    entries: list[LedgerEntry],
) -> planner.Plan:
    """The arrays for missing: the retries with more memory or time, then the rest's plan."""
    est = planner.estimate(CompletionRecords(state_dirs(exp).done).durations(), opts.index_minutes)
    retries = _retries(exp, standing, missing, opts, entries)
    rest = missing - IndexSet.of(i for r in retries for i in r.indices)
    args = (opts.cluster, limits, est, opts.workers, _per_task(opts))
    plan = planner.plan_submission(rest, *args, started_nothing=started_nothing(exp, est))
    continuing, room = standing.indices(CONTINUING), len(rest) - plan.waiting
    if plan.waiting and room and continuing:  # not all fit in the queue: continuing first
        first = continuing_first(rest, continuing - (continuing - rest), room)
        plan = planner.plan_submission(first, *args, started_nothing=started_nothing(exp, est))
    more = escalate.plans(retries, opts.cluster, limits)
    return replace(plan, arrays=plan.arrays + more) if more else plan


def _retries(
    exp: ExperimentDescription,
    standing: Standing,
    missing: IndexSet,
    opts: SubmitOptions,
    entries: list[LedgerEntry],
) -> list[escalate.Retry]:
    """The indices retried with more memory or time (not with --no-escalate, --local)."""
    if not opts.escalate or opts.local:
        return []
    return escalate.retries(exp, standing, missing, opts.cluster, entries)


def started_nothing(exp: ExperimentDescription, est: planner.Estimate) -> float | None:
    """The time limit of a farm task that could start no index at an estimate no smaller than
    est's (runner/pool.py notes it): a farm of tasks that short would start nothing again."""
    seen = read_settings(state_dirs(exp).unfit)
    limit, estimate = seen.get("time_limit_seconds"), seen.get("estimate")
    if not isinstance(limit, (int, float)) or not isinstance(estimate, (int, float)):
        return None
    return float(limit) if est.fit is None or est.fit >= estimate else None


def storage_notes(exp: ExperimentDescription, opts: SubmitOptions) -> list[str]:
    """Refuse state, logs or results where compute nodes cannot write (a dry run notes it; --local
    runs here, where they can); the warning for state on purged scratch."""
    refusal = None if opts.local else readonly_refusal(exp.config, opts.cluster, os.environ)
    if refusal and not opts.dry_run:
        raise PyExpError(refusal)
    purge = purge_warning(exp.config, opts.cluster, os.environ)
    return [note for note in (refusal, purge) if note]


def _per_task(opts: SubmitOptions) -> int | None:
    # Locally there is no queue to spare and no time limit to beat: static bundles (each task's
    # end is progress) unless --workers asks for a farm; no smaller than the broken-command
    # guard's count, or a broken command would never trip it and run every index.
    if opts.local and opts.workers is None and opts.indices_per_task is None:
        return max(opts.cluster.indices_per_task, opts.cluster.fail_fast_indices)
    return opts.indices_per_task


def continuing_first(missing: IndexSet, continuing: IndexSet, room: int) -> IndexSet:
    """room indices of missing, the continuing ones (stopped after a checkpoint) first."""
    first = continuing.take(0, room)
    return first | (missing - continuing).take(0, room - len(first))


def _as_set(indices: list[int] | IndexSet) -> IndexSet:
    return indices if isinstance(indices, IndexSet) else IndexSet.of(indices)


def too_many(done: Submitted) -> str:
    """The one line refusing (or, in a dry run, noting) a sweep over the sane bound."""
    return (
        f"{done.experiment}: {len(done.missing)} missing indices, more than "
        f"{planner.SANE_MISSING}: a sweep this large is often a typo; check with --dry-run, "
        "then pass --yes to submit it"
    )


def check_runnable(
    exp: ExperimentDescription, command: str, indices: list[int] | IndexSet, runs: int = 1
) -> list[str]:
    """Refuse, before anything is submitted, a command or save paths the tasks would fail on or
    share (of a huge sweep, the first CHECKED_PERMUTATIONS permutations); the warnings worth a
    line (runs > 1 with no {run} in the save path). With store_only no folder is made from the
    save path, so it is not checked."""
    CommandTemplate(command)
    if exp.config.store_only:
        return []
    n, owner = exp.numPermutations(), {}
    # run 0 of each: the run cannot make it invalid
    for p in islice(permutations_of(_as_set(indices), n), CHECKED_PERMUTATIONS):
        try:
            path = exp.interpolateSavePath(p)
        except SavePathError as e:
            raise SavePathError(
                f"{_experiment_path(exp)}: index {p}: {e} (or, if the command saves only with "
                'pyexp.save, set "store_only": true in config.json)'
            ) from None
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


def permutations_of(indices: IndexSet, n: int) -> IndexSet:
    """The permutations (index mod n) that indices cover, range by range, never enumerated."""
    parts: list[tuple[int, int]] = []
    for start, stop in indices.ranges:
        if stop - start >= n:
            return IndexSet.span(0, n)
        first, last = start % n, (stop - 1) % n
        parts += [(first, last + 1)] if first <= last else [(first, n), (0, last + 1)]
    return IndexSet(parts)


def _experiment_path(exp: ExperimentDescription) -> str:
    return os.path.abspath(exp.path) if exp.path else exp.getExperimentName()


def _entry(
    exp: ExperimentDescription,
    opts: SubmitOptions,
    backend: Backend,
    command: str,
    plan: planner.ArrayPlan,
    folder: str,
) -> LedgerEntry:
    entry_id, farm, local = new_entry_id(), plan.mode == planner.FARM, opts.local
    return LedgerEntry(
        id=entry_id,
        experiment=_experiment_path(exp),
        fingerprint=exp.fingerprint(),
        snapshot=exp.description,
        runs=opts.runs,
        tasks=[] if farm or opts.dry_run else plan.tasks,  # a dry run records no entry
        command=command,
        cores=backend.cores,
        cluster=backend.name,
        script="" if local and not opts.dry_run else os.path.join(folder, f"{entry_id}.sbatch"),
        mode=plan.mode,
        pool=plan.pool.text() if farm else "",
        workers=plan.task_count if farm else 0,
        time_limit_seconds=None if local else plan.time_hours * 3600,
        signal_lead_seconds=None if local else opts.cluster.signal_lead_seconds,
        index_minutes=opts.index_minutes,
        fail_fast_indices=opts.cluster.fail_fast_indices,
        fail_fast_seconds=opts.cluster.fail_fast_seconds,
        mem_per_core_gb=None if local else plan.mem_per_core_gb or opts.cluster.mem_per_core_gb,
        escalated=plan.why,
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
