"""Where every index of a sweep stands: done, running, queued, failed or missing."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pyexp.errors import PyExpError
from pyexp.experiment import ExperimentDescription
from pyexp.missing import permutation_hashes
from pyexp.scheduler.slurm_states import NOT_THE_SCRIPTS_FAULT, SLURM_OUTCOMES, QueueSnapshot
from pyexp.state import leases, settings
from pyexp.state.atomic import scan_names
from pyexp.state.attempts import FAILED, LOST, OOM, Attempts
from pyexp.state.layout import experiment_id, state_dirs
from pyexp.state.ledger import SUBMITTED, Ledger, LedgerEntry, LedgerScan, split_changed
from pyexp.state.records import CompletionRecords, record_key

DEFAULT_MAX_ATTEMPTS = 3
DONE, RUNNING, HELD, QUEUED, FAILED_OUT, MISSING = (
    "done",
    "running",
    "held",
    "queued",
    "failed",
    "missing",
)
STATUSES = (DONE, RUNNING, HELD, QUEUED, FAILED_OUT, MISSING)


class LedgerUnreadable(PyExpError, RuntimeError):
    """A ledger entry cannot be read while its array may still run: its indices are unknown."""


@dataclass
class Standing:
    """Each index's status, the record keys of the failed and running ones, who holds the held
    ones, and one line for each ledger entry that cannot be read."""

    status: list[str]
    failed_keys: dict[int, str]
    running_keys: dict[int, str] = field(default_factory=dict)
    held: dict[int, leases.Holder] = field(default_factory=dict)
    ledger_problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many indices have each status."""
        c = Counter(self.status)
        return {s: c.get(s, 0) for s in STATUSES}

    def indices(self, status: str) -> list[int]:
        """The indices with that status, ascending."""
        return [i for i, s in enumerate(self.status) if s == status]


def queued_indices(
    exp: ExperimentDescription, queue: QueueSnapshot, scan: LedgerScan | None = None
) -> set[int]:
    """Indices that a pending or running array task of ours still owns, under today's meaning."""
    out: set[int] = set()
    for entry in (scan or Ledger(state_dirs(exp).ledger).scan()).entries:
        owned = active_indices(entry, queue)
        # The runner refuses indices whose parameters changed since submission: not queued.
        out.update(split_changed(entry, exp, owned)[0])
    return out


def active_indices(entry: LedgerEntry, queue: QueueSnapshot) -> list[int]:
    """The indices an entry's pending or running tasks own: a farm's whole pool while any of
    its workers may still run (any of them may take any index), else each active task's."""
    if entry.is_farm:
        return entry.indices() if queue.entry_active(entry.id) else []
    return [i for t, task in enumerate(entry.tasks) if queue.active(entry.id, t) for i in task]


def ledger_problems(scan: LedgerScan, queue: QueueSnapshot) -> list[str]:
    """One line per unreadable ledger entry, saying whether its array may still run."""
    return [
        f"{why}; its array pyexp-{entry_id} is still in squeue, so the indices it owns are unknown"
        if queue.entry_active(entry_id)
        else f"{why}; its array is not in squeue: ignored (delete the file to silence this)"
        for entry_id, why in sorted(scan.unreadable.items())
    ]


def classify(
    exp: ExperimentDescription,
    runs: int,
    queue: QueueSnapshot,
    max_attempts: int = 3,
    retry_failed: bool = False,
) -> Standing:
    """Every index of exp x runs as exactly one of done, running, held, queued, failed, missing."""
    dirs = state_dirs(exp)
    markers = leases.held_keys(dirs.leases)  # before done: a runner may finish in between
    done = CompletionRecords(dirs.done).completed()
    live = {k for k, h in markers.items() if h.live}
    held = {k: h for k, h in markers.items() if not h.live}
    attempts = Attempts(dirs.attempts).counts()
    scan = Ledger(dirs.ledger).scan()
    queued = queued_indices(exp, queue, scan)
    hashes = permutation_hashes(exp)
    n = len(hashes)
    standing = Standing([], {}, ledger_problems=ledger_problems(scan, queue))
    for run in range(runs):
        for p, h in enumerate(hashes):
            key = f"{h}-{run}"
            i = run * n + p
            if key in done:
                standing.status.append(DONE)
            elif key in live:
                standing.status.append(RUNNING)
                standing.running_keys[i] = key
            elif key in held:
                standing.status.append(HELD)
                standing.held[i] = held[key]
            elif i in queued:
                standing.status.append(QUEUED)
            elif _exhausted(attempts.get(key), max_attempts) and not retry_failed:
                standing.status.append(FAILED_OUT)
                standing.failed_keys[i] = key
            else:
                standing.status.append(MISSING)
    return standing


def _exhausted(outcomes: Counter | None, max_attempts: int) -> bool:
    return outcomes is not None and outcomes[FAILED] + outcomes[OOM] >= max_attempts


def max_attempts(exp: ExperimentDescription, given: int | None, remember: bool = False) -> int:
    """The attempt cap: given (remembered when asked), else the remembered one, else 3.

    So that pyexp-status and cron's pyexp-submit without the flag agree with the last explicit
    `pyexp-submit --max-attempts N`.
    """
    path = state_dirs(exp).settings
    if given is not None:
        if remember:
            settings.remember(path, max_attempts=given)
        return given
    return settings.remembered_int(path, "max_attempts") or DEFAULT_MAX_ATTEMPTS


def to_submit(
    exp: ExperimentDescription,
    runs: int,
    queue: QueueSnapshot,
    max_attempts: int = 3,
    retry_failed: bool = False,
) -> list[int]:
    """The indices pyexp-submit should submit: the missing ones, and those whose lease holder
    stopped renewing (held), which the next runner takes over."""
    standing = classify(exp, runs, queue, max_attempts, retry_failed)
    return sorted(standing.indices(MISSING) + standing.indices(HELD))


def check_ledger(exp: ExperimentDescription, queue: QueueSnapshot) -> list[str]:
    """One line per unreadable ledger entry whose array has left the queue (its indices count
    as missing); LedgerUnreadable if one's array may still run, since which indices it owns is
    unknown and submitting any might run one twice."""
    ledger = Ledger(state_dirs(exp).ledger)
    scan = ledger.scan()
    for entry_id in scan.unreadable:
        if queue.entry_active(entry_id):
            raise LedgerUnreadable(
                f"{scan.unreadable[entry_id]}; its array pyexp-{entry_id} is still in squeue and "
                f"which indices it owns is unknown: nothing submitted until it leaves the queue "
                f"(scancel -n pyexp-{entry_id}) or the file is repaired"
            )
    return ledger_problems(scan, queue)


def with_accounting(
    exp: ExperimentDescription,
    queue: QueueSnapshot,
    states: Callable[[list[str]], dict[str, str] | None],
) -> QueueSnapshot:
    """squeue's snapshot completed by sacct's word (states: job ids -> '123_4' -> state, None
    when accounting cannot say) on our unsettled arrays that squeue no longer shows as active."""
    unsettled = [e for e in Ledger(state_dirs(exp).ledger).entries() if _left_queue(e, queue)]
    answer = states([e.job_id for e in unsettled if e.job_id]) if unsettled else None
    if not answer:
        return queue
    seen = {
        (e.id, t): answer[f"{e.job_id}_{t}"]
        for e in unsettled
        for t in range(e.task_count())
        if f"{e.job_id}_{t}" in answer
    }
    return queue.merged(seen)


@dataclass(frozen=True)
class _TaskEnd:
    """What is known of how one array task ended."""

    job: str  # '<array job>_<task>'
    state: str | None  # its final Slurm state, if squeue or sacct said
    runner_started: bool  # pyexp-run left its `started` marker
    launched: bool  # Slurm started the script: its .out or .err file exists


def settle(exp: ExperimentDescription, queue: QueueSnapshot) -> int:
    """Record how finished arrays ended for the indices they left unfinished; how many recorded.

    queue holds what squeue (and sacct, see with_accounting) said; an array is finished when
    none of its tasks may still run. An index is charged with the task's end (out of memory,
    timeout, cancelled, else lost) only when the task was running it: its lease marker still
    names that task (a runner that ends normally records the index and removes the marker).
    Indices the task never started are lost (retried, not charged). A task whose script failed
    before pyexp-run started charges every index as failed, so a broken script is not
    resubmitted forever; one cancelled, preempted or never launched (no output file) is not
    charged. A farm's pool is charged only where a worker's lease marker names the index.
    Each array is settled once.
    """
    dirs = state_dirs(exp)
    ledger = Ledger(dirs.ledger)
    finished = [e for e in ledger.entries() if _left_queue(e, queue)]
    if not finished:
        return 0
    live = leases.live_keys(dirs.leases)  # before done: a runner may finish in between
    done = CompletionRecords(dirs.done).completed()
    attempts = Attempts(dirs.attempts)
    tried = {(key, attempt.split("-")[0]) for key, _, attempt in attempts.names()}
    started = {name.split("-")[0] for name in scan_names(dirs.started)}
    outputs = set(scan_names(os.path.join(exp.config.log_path, experiment_id(exp))))
    markers = set(scan_names(dirs.leases))
    recorded = 0
    for entry in finished:
        if entry.is_farm:
            recorded += _settle_farm(entry, queue, dirs.leases, done, tried, attempts)
            ledger.settle(entry)
            continue
        old = ExperimentDescription(entry.snapshot, path=entry.experiment, config=exp.config)
        for t, task in enumerate(entry.tasks):
            job = f"{entry.job_id}_{t}"
            launched = any(f"{entry.job_name}_{t}.{s}" in outputs for s in ("out", "err"))
            end = _TaskEnd(job, queue.state(entry.id, t), job in started, launched)
            for i in task:
                key = record_key(old.getPermutation(i), old.getRun(i))
                if key in done or (key, job) in tried:
                    continue
                ran = key + leases.SUFFIX in markers and _holder_job(dirs.leases, key) == job
                if key in live and not ran:  # another runner is on it
                    continue
                outcome, why = _vanished(end, ran)
                info = {"index": i, "job": job, "slurm": end.state, "why": why}
                attempts.record(key, outcome, info, job)
                recorded += 1
        ledger.settle(entry)
    return recorded


def _settle_farm(
    entry: LedgerEntry,
    queue: QueueSnapshot,
    folder: str,
    done: set[str],
    tried: set[tuple[str, str]],
    attempts: Attempts,
) -> int:
    """A finished farm charges only the indices its workers' lease markers still name (they were
    running them when the worker ended); the rest of its pool is lost: missing, not charged."""
    workers = {f"{entry.job_id}_{t}": t for t in range(entry.workers)}
    recorded = 0
    for name in scan_names(folder):
        key = name.removesuffix(leases.SUFFIX)
        if key == name or key in done:
            continue
        job = _holder_job(folder, key)
        if job not in workers or (key, job) in tried:
            continue
        state = queue.state(entry.id, workers[job])
        outcome, why = _vanished(_TaskEnd(job, state, True, True), ran=True)
        attempts.record(key, outcome, {"index": None, "job": job, "slurm": state, "why": why}, job)
        recorded += 1
    return recorded


def _holder_job(folder: str, key: str) -> str | None:
    return leases.read_holder(os.path.join(folder, key + leases.SUFFIX)).get("slurm_job")


def _vanished(end: _TaskEnd, ran: bool) -> tuple[str, str]:
    """The outcome of an index a finished task left without a record, and why."""
    state = end.state or "state unknown"
    if ran:
        return SLURM_OUTCOMES.get(end.state or "", LOST), f"running when the task ended ({state})"
    if end.runner_started:
        return LOST, f"not started before the task ended ({state})"
    if end.state in NOT_THE_SCRIPTS_FAULT:
        return SLURM_OUTCOMES[end.state], f"task ended before pyexp-run started ({state})"
    if not end.launched:
        return LOST, f"task never launched: no output file ({state}; cancelled while pending?)"
    return FAILED, f"task script failed before pyexp-run started ({state}); see its .err file"


def _left_queue(entry: LedgerEntry, queue: QueueSnapshot) -> bool:
    # Local runs record every outcome themselves; Slurm arrays are settled once all tasks left.
    return (
        entry.state == SUBMITTED
        and bool(entry.job_id)
        and not str(entry.job_id).startswith("local-")
        and not any(queue.active(entry.id, t) for t in range(entry.task_count()))
    )
