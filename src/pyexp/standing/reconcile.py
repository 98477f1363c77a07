"""Where every index of a sweep stands: done, running, queued, failed or missing."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from pyexp.environment import slurm_timeout
from pyexp.errors import PyExpError
from pyexp.experiment import ExperimentDescription, paramsHash
from pyexp.indexset import IndexSet
from pyexp.standing.placement import place
from pyexp.standing.slurm_states import QueueSnapshot
from pyexp.state import leases, settings
from pyexp.state.atomic import scan_names
from pyexp.state.attempts import CHARGED, CHARGED_TIMEOUT, Attempts
from pyexp.state.attempts import CONTINUING as SAVED
from pyexp.state.layout import state_dirs, work_scope
from pyexp.state.ledger import PENDING, Ledger, LedgerEntry, LedgerScan, job_name
from pyexp.state.records import CompletionRecords, record_key

DEFAULT_MAX_ATTEMPTS = 3
IN_FLIGHT_MARGIN_SECONDS = 30.0
LEDGER_PLACEMENT_BUDGET = 200_000  # ledger indices hashed to place keys of a huge sweep
DONE, RUNNING, HELD, QUEUED, CONTINUING, FAILING, FAILED_OUT, MISSING = (
    "done",
    "running",
    "held",
    "queued",
    "continuing",  # stopped after saving a checkpoint: resubmitted first, never charged
    "failing",  # failed at least once, attempts left: resubmitted
    "failed",  # attempts exhausted: given up until --retry-failed
    "missing",
)
STATUSES = (DONE, RUNNING, HELD, QUEUED, CONTINUING, FAILING, FAILED_OUT, MISSING)


class LedgerUnreadable(PyExpError, RuntimeError):
    """A ledger entry cannot be read while its array may still run: its indices are unknown."""


@dataclass
class Standing:
    """Where the indices 0..total-1 stand: an IndexSet per status (each index in exactly one),
    the record keys of the failing, failed and running ones, who holds the held ones, one line
    for each ledger entry that cannot be read, and the record keys that could not be placed."""

    total: int
    sets: dict[str, IndexSet]
    failed_keys: dict[int, str] = field(default_factory=dict)
    failing_keys: dict[int, str] = field(default_factory=dict)
    continuing_keys: dict[int, str] = field(default_factory=dict)
    running_keys: dict[int, str] = field(default_factory=dict)
    retried_keys: dict[int, str] = field(default_factory=dict)  # missing, with attempts (timeouts)
    held: dict[int, leases.Holder] = field(default_factory=dict)
    ledger_problems: list[str] = field(default_factory=list)
    unplaced: set[str] = field(default_factory=set)
    jobs: list[str] = field(default_factory=list)  # Slurm job ids of our arrays still queued

    def counts(self) -> dict[str, int]:
        """How many indices have each status."""
        return {s: len(self.sets[s]) for s in STATUSES}

    def indices(self, status: str) -> IndexSet:
        """The indices with that status."""
        return self.sets[status]

    def status_of(self, index: int) -> str:
        """The status of one index."""
        return next(s for s in STATUSES if index in self.sets[s])


def queued_indices(
    exp: ExperimentDescription, queue: QueueSnapshot, scan: LedgerScan | None = None
) -> IndexSet:
    """Today's indices of the (parameters, run) that a pending or running array task of ours
    still owns: a task runs what it was planned for, under whatever index that has now."""
    same: list[IndexSet] = []
    moved: dict[str, dict] = {}  # record key -> its parameters
    today = exp.fingerprint()
    for entry, planned, owned in _owned(exp, queue, scan):
        if entry.fingerprint == today:  # same file: same indices, no hashing
            same.append(owned)
        else:
            for i in owned:
                params = planned.getPermutation(i)
                moved[record_key(params, planned.getRun(i))] = params
    out = IndexSet([r for s in same for r in s.ranges])
    if moved:
        # Keys of permutations no longer swept have no index today: not queued.
        runs = 1 + max(int(k.rpartition("-")[2]) for k in moved)
        known = ((paramsHash(p), p) for p in moved.values())
        out = out | IndexSet.of(place(exp, runs, moved, known)[0].values())
    return out


def _owned(
    exp: ExperimentDescription, queue: QueueSnapshot, scan: LedgerScan | None
) -> Iterator[tuple[LedgerEntry, ExperimentDescription, IndexSet]]:
    """Per ledger entry with active tasks in exp's work scope: the entry, the experiment as
    submitted, and the indices (of that snapshot) its active tasks own."""
    today, scope = exp.fingerprint(), work_scope(exp)
    for entry in (scan or Ledger(state_dirs(exp).ledger).scan()).entries:
        owned = active_indices(entry, queue)
        if not owned:
            continue
        planned = ExperimentDescription(entry.snapshot, path=entry.experiment, config=exp.config)
        # Other save-path field values are other work: it records elsewhere (the runner skips it).
        if entry.fingerprint == today or work_scope(planned) == scope:
            yield entry, planned, owned


@dataclass(frozen=True)
class UnknownQueue(QueueSnapshot):
    """Stands for squeue when it cannot be asked: every task of the given ledger entries (those
    submitted to Slurm and not settled) may still run, so their indices are not missing."""

    in_doubt: frozenset[str] = frozenset()

    def active(self, entry_id: str, task_id: int) -> bool:
        """Whether that task may still run: unknown, so yes for an entry in doubt."""
        return entry_id in self.in_doubt

    def entry_active(self, entry_id: str) -> bool:
        """Whether the entry may still run: unknown, so yes for an entry in doubt."""
        return entry_id in self.in_doubt


def unknown_queue(scan: LedgerScan) -> UnknownQueue:
    """The queue as far as the ledger (scan) knows it without squeue: every unsettled Slurm
    array."""
    return UnknownQueue(in_doubt=frozenset(e.id for e in scan.entries if e.unsettled_on_slurm))


def active_indices(entry: LedgerEntry, queue: QueueSnapshot) -> IndexSet:
    """The indices an entry's pending or running tasks own: a farm's whole pool while any of
    its workers may still run (any of them may take any index), else each active task's."""
    if entry.state == PENDING and _sbatch_in_flight(entry):
        return entry.index_set()
    if entry.is_farm:
        return entry.index_set() if queue.entry_active(entry.id) else IndexSet()
    return IndexSet.of(
        i for t, task in enumerate(entry.tasks) if queue.active(entry.id, t) for i in task
    )


def _sbatch_in_flight(entry: LedgerEntry) -> bool:
    # Recorded, then sbatch: another submitter (this one paused, or slurmctld slow to answer)
    # may not see the array in squeue yet. Until sbatch would have timed out, it may be queued.
    return time.time() - entry.created < slurm_timeout() + IN_FLIGHT_MARGIN_SECONDS


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
    scan: LedgerScan | None = None,
) -> Standing:
    """Every index of exp x runs as exactly one of the STATUSES, in that order of precedence.

    Arithmetic over the few record keys on disk (done, leased, attempted) placed at their
    indices, and the ledger's queued indices (scan: the ledger as this command read it; default:
    read now): missing is everything else, never enumerated.
    """
    dirs = state_dirs(exp)
    markers = leases.held_keys(dirs.leases)  # before done: a runner may finish in between
    # A reader: folding here would also drop the parameters that place keys of huge sweeps.
    done = CompletionRecords(dirs.done).completed(compact=False)
    scan = scan or Ledger(dirs.ledger).scan()
    # a timeout in a retry with more time counts against the cap (scheduler/escalate.py)
    escalated = {e.job_id for e in scan.entries if e.escalated and e.job_id}
    attempts = Attempts(dirs.attempts).counts(charged_timeouts=escalated)
    queued = _index_set(queued_indices(exp, queue, scan))
    keys = done | markers.keys() | attempts.keys()
    where, unplaced = place(exp, runs, keys, _params_on_record(exp, dirs.done, scan))
    charged = {k: _charged(c) for k, c in attempts.items() if _charged(c)}
    given_up = {k for k, c in charged.items() if c >= max_attempts and not retry_failed}
    saved = {k for k, c in attempts.items() if c[SAVED]}
    live = {k for k, h in markers.items() if h.live}
    total = exp.numPermutations() * runs
    groups = [
        (DONE, IndexSet.of(where[k] for k in done if k in where)),
        (RUNNING, _at(where, live)),
        (HELD, _at(where, markers.keys() - live)),
        (QUEUED, queued - (IndexSet.span(total, max(total, _end(queued))))),
        (FAILED_OUT, _at(where, given_up)),
        (FAILING, _at(where, charged.keys() - given_up)),
        (CONTINUING, _at(where, saved)),
    ]
    sets: dict[str, IndexSet] = {}
    taken = IndexSet()
    for status, indices in groups:
        sets[status] = indices - taken
        taken = taken | sets[status]
    sets[MISSING] = IndexSet.span(0, total) - taken
    standing = Standing(total, sets, ledger_problems=ledger_problems(scan, queue))
    standing.unplaced = unplaced & (done | live)
    standing.jobs = [e.job_id for e in scan.entries if e.job_id and queue.entry_active(e.id)]
    for k, i in where.items():
        if i in sets[FAILED_OUT]:
            standing.failed_keys[i] = k
        elif i in sets[FAILING]:
            standing.failing_keys[i] = k
        elif i in sets[CONTINUING]:
            standing.continuing_keys[i] = k
        elif i in sets[RUNNING] and k in live:
            standing.running_keys[i] = k
        elif i in sets[HELD] and k in markers:
            standing.held[i] = markers[k]
        elif i in sets[MISSING] and k in attempts:
            standing.retried_keys[i] = k
    return standing


def _charged(outcomes: Counter) -> int:
    """Failures that count towards the attempt cap (failed, out of memory, a timeout of a retry
    with more time)."""
    return sum(outcomes[o] for o in CHARGED) + outcomes[CHARGED_TIMEOUT]


def _at(where: dict[str, int], keys: Iterable[str]) -> IndexSet:
    return IndexSet.of(where[k] for k in keys if k in where)


def _end(indices: IndexSet) -> int:
    return indices.ranges[-1][1] if indices else 0


def _index_set(indices: IndexSet | Iterable[int]) -> IndexSet:
    return indices if isinstance(indices, IndexSet) else IndexSet.of(indices)


def _params_on_record(
    exp: ExperimentDescription, done_dir: str, scan: LedgerScan
) -> Iterator[tuple[str, dict]]:
    """(params hash, params) where the state holds parameters: loose completion records, then
    the indices of ledger entries under their snapshots (newest first, up to a budget). Read
    lazily: only for sweeps too big to hash every permutation."""
    for name in scan_names(done_dir):
        with contextlib.suppress(OSError, ValueError, TypeError, LookupError):
            with open(os.path.join(done_dir, name), encoding="utf-8") as f:
                params = json.load(f)["params"]
            yield name.rpartition("-")[0], params
    budget = LEDGER_PLACEMENT_BUDGET
    for entry in reversed(scan.entries):
        then = ExperimentDescription(entry.snapshot, path=entry.experiment, config=exp.config)
        for i in islice((i for task in entry.tasks for i in task), budget):
            budget -= 1
            params = then.getPermutation(i)
            yield paramsHash(params), params
        if budget <= 0:
            return


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
) -> IndexSet:
    """The indices pyexp-submit should submit: the missing ones, the continuing ones, the failing
    ones (attempts left), and those whose lease holder stopped renewing (held), which the next
    runner takes over."""
    return submittable(classify(exp, runs, queue, max_attempts, retry_failed))


def submittable(standing: Standing) -> IndexSet:
    """The indices of standing that pyexp-submit submits (see to_submit)."""
    resubmitted = (MISSING, CONTINUING, FAILING, HELD)
    return IndexSet([r for s in resubmitted for r in standing.indices(s).ranges])


def check_ledger(exp: ExperimentDescription, queue: QueueSnapshot, scan: LedgerScan) -> list[str]:
    """One line per unreadable ledger entry (of scan) whose array has left the queue (its indices
    count as missing); LedgerUnreadable if one's array may still run, since which indices it owns
    is unknown and submitting any might run one twice."""
    for entry_id in scan.unreadable:
        if queue.entry_active(entry_id):
            name = queue.names.get(entry_id) or job_name(
                exp.path or "", exp.description.get("name"), entry_id
            )
            raise LedgerUnreadable(
                f"{scan.unreadable[entry_id]}; its array {name} is still in squeue and "
                f"which indices it owns is unknown: nothing submitted until it leaves the queue "
                f"(scancel -n {name}) or the file is repaired"
            )
    return ledger_problems(scan, queue)
