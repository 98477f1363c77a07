"""Where every index of a sweep stands: done, running, queued, failed or missing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pyexp.experiment import ExperimentDescription
from pyexp.missing import permutation_hashes
from pyexp.state import leases, settings
from pyexp.state.atomic import scan_names
from pyexp.state.attempts import FAILED, LOST, OOM, PREEMPTED, TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import SUBMITTED, Ledger, LedgerEntry, split_changed
from pyexp.state.records import CompletionRecords, record_key

DEFAULT_MAX_ATTEMPTS = 3
DONE, RUNNING, QUEUED, FAILED_OUT, MISSING = "done", "running", "queued", "failed", "missing"
STATUSES = (DONE, RUNNING, QUEUED, FAILED_OUT, MISSING)
# Anything squeue shows may still run (REQUEUE_HOLD, SUSPENDED, STOPPED, ...) except these ends.
FINAL_SLURM_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)
# How sacct's final task states read as attempt outcomes; any other end without a record is lost.
SACCT_OUTCOMES = {
    "OUT_OF_MEMORY": OOM,
    "TIMEOUT": TIMEOUT,
    "DEADLINE": TIMEOUT,
    "CANCELLED": PREEMPTED,
    "PREEMPTED": PREEMPTED,
    "NODE_FAIL": LOST,
    "BOOT_FAIL": LOST,
}


@dataclass(frozen=True)
class QueueSnapshot:
    """What squeue shows of our arrays: (ledger entry id, array task id) -> Slurm state."""

    tasks: dict[tuple[str, int], str] = field(default_factory=dict)

    def active(self, entry_id: str, task_id: int) -> bool:
        """Whether that task is still pending or running."""
        state = self.tasks.get((entry_id, task_id))
        return state is not None and state not in FINAL_SLURM_STATES


@dataclass
class Standing:
    """Each index's status, and the record keys of the failed and running ones."""

    status: list[str]
    failed_keys: dict[int, str]
    running_keys: dict[int, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many indices have each status."""
        c = Counter(self.status)
        return {s: c.get(s, 0) for s in STATUSES}

    def indices(self, status: str) -> list[int]:
        """The indices with that status, ascending."""
        return [i for i, s in enumerate(self.status) if s == status]


def queued_indices(exp: ExperimentDescription, queue: QueueSnapshot) -> set[int]:
    """Indices that a pending or running array task of ours still owns, under today's meaning."""
    out: set[int] = set()
    for entry in Ledger(state_dirs(exp).ledger).entries():
        owned = [i for t, task in enumerate(entry.tasks) if queue.active(entry.id, t) for i in task]
        # The runner refuses indices whose parameters changed since submission: not queued.
        out.update(split_changed(entry, exp, owned)[0])
    return out


def classify(
    exp: ExperimentDescription,
    runs: int,
    queue: QueueSnapshot,
    max_attempts: int = 3,
    retry_failed: bool = False,
) -> Standing:
    """Every index of exp x runs as exactly one of done, running, queued, failed, missing."""
    dirs = state_dirs(exp)
    live = leases.live_keys(dirs.leases)  # before done: a runner may finish in between
    done = CompletionRecords(dirs.done).completed()
    attempts = Attempts(dirs.attempts).counts()
    queued = queued_indices(exp, queue)
    hashes = permutation_hashes(exp)
    n = len(hashes)
    status: list[str] = []
    failed: dict[int, str] = {}
    running: dict[int, str] = {}
    for run in range(runs):
        for p, h in enumerate(hashes):
            key = f"{h}-{run}"
            i = run * n + p
            if key in done:
                status.append(DONE)
            elif key in live:
                status.append(RUNNING)
                running[i] = key
            elif i in queued:
                status.append(QUEUED)
            elif _exhausted(attempts.get(key), max_attempts) and not retry_failed:
                status.append(FAILED_OUT)
                failed[i] = key
            else:
                status.append(MISSING)
    return Standing(status, failed, running)


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
    """The indices pyexp-submit should submit: exactly the missing ones."""
    return classify(exp, runs, queue, max_attempts, retry_failed).indices(MISSING)


def settle(
    exp: ExperimentDescription,
    queue: QueueSnapshot,
    final_states: Callable[[list[str]], dict[str, str] | None],
) -> int:
    """Record how finished arrays ended for the indices they left unfinished; how many recorded.

    A task that left the queue without a completion or attempt record for an index vanished.
    If its runner never started (setup error in the script, or cancelled while pending), every
    index counts as failed, so a broken script is not resubmitted forever; sacct's state wins
    when it answers. If the runner started, the indices it was running (the first `cores`
    unfinished ones) get sacct's state (out of memory, timeout, cancelled) or lost; the rest
    never started and are lost. Each array is settled once.
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
    started = set(scan_names(dirs.started))
    states = final_states([e.job_id for e in finished if e.job_id]) or {}
    recorded = 0
    for entry in finished:
        old = ExperimentDescription(entry.snapshot, path=entry.experiment, config=exp.config)
        for t, task in enumerate(entry.tasks):
            job = f"{entry.job_id}_{t}"
            keys = [(i, record_key(old.getPermutation(i), old.getRun(i))) for i in task]
            left = [
                (i, k) for i, k in keys if k not in done and k not in live and (k, job) not in tried
            ]
            for n, (i, key) in enumerate(left):
                outcome = _vanished(states.get(job), job in started, n < entry.cores)
                info = {"index": i, "job": job, "slurm": states.get(job), "started": job in started}
                attempts.record(key, outcome, info, job)
            recorded += len(left)
        ledger.settle(entry)
    return recorded


def _vanished(slurm_state: str | None, started: bool, was_running: bool) -> str:
    if started and not was_running:
        return LOST
    if slurm_state in SACCT_OUTCOMES:
        return SACCT_OUTCOMES[slurm_state]
    return LOST if started else FAILED


def _left_queue(entry: LedgerEntry, queue: QueueSnapshot) -> bool:
    # Local runs record every outcome themselves; Slurm arrays are settled once all tasks left.
    return (
        entry.state == SUBMITTED
        and bool(entry.job_id)
        and not str(entry.job_id).startswith("local-")
        and not any(queue.active(entry.id, t) for t in range(len(entry.tasks)))
    )
