"""The submission ledger: which indices each array task owns, recorded before and after sbatch."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from pyexp.indexset import IndexSet
from pyexp.state.atomic import scan_names, write_atomic

PENDING, SUBMITTED, SETTLED = "pending", "submitted", "settled"
UNCONFIRMED = "unconfirmed"  # sbatch answered unclearly: queued only if squeue shows it
STATIC, FARM = "static", "farm"  # tasks own fixed index lists / workers pull from one pool
CANCELLED = "cancelled"  # by pyexp-cancel: its unfinished indices are missing, never charged
LOCAL_JOB = "local-"  # job ids of work run on this machine, never Slurm's
NAME_CHARS = 40  # of the experiment's name in job names: squeue shows the start of a name
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_JOB_NAME = re.compile(r"(?:.*-)?pyexp-([A-Za-z0-9]+)")


@dataclass
class LedgerEntry:
    """One job array: its tasks' indices and the experiment as it was at submission."""

    id: str
    experiment: str  # absolute path of the experiment file
    fingerprint: str
    snapshot: dict  # the experiment dict at submission
    runs: int
    tasks: list[list[int]]
    command: str | None = None  # e.g. "python main.py -e {experiment} -i {index}"
    cores: int = 1  # indices a task runs at once
    cluster: str = ""
    script: str = ""
    state: str = PENDING
    job_id: str | None = None
    created: float = field(default_factory=time.time)
    mode: str = STATIC
    pool: str = ""  # farm: the entry's indices as IndexSet.text(); tasks is [] then
    workers: int = 0  # farm: the array size; task ids 0..workers-1
    time_limit_seconds: float | None = None  # each task's --time
    signal_lead_seconds: float | None = None  # how long before the limit Slurm signals
    index_minutes: float | None = None  # estimate of one index while none has finished
    script_failed: str = ""  # farm, settled: the .err of a worker whose script failed early
    fail_fast_indices: int | None = None  # the broken-command guard (runner/guard.py); 0: off
    fail_fast_seconds: float | None = None
    mem_per_core_gb: float | None = None  # each task's --mem-per-cpu (None: not set)
    escalated: str = ""  # a retry with more memory or time: why (scheduler/escalate.py)

    @property
    def job_name(self) -> str:
        """The Slurm job name, `<experiment>-pyexp-<id>`: it names this entry even before its
        job id is recorded, and says in squeue whose work it is."""
        return job_name(self.experiment, self.snapshot.get("name"), self.id)

    @property
    def is_farm(self) -> bool:
        """Whether the entry's workers pull from a pool instead of owning index lists."""
        return self.mode == FARM

    @property
    def unsettled_on_slurm(self) -> bool:
        """Submitted to Slurm and not settled: local runs record every outcome themselves."""
        return self.state == SUBMITTED and bool(self.job_id) and not is_local_job(self.job_id)

    def index_set(self) -> IndexSet:
        """Every index of the entry: the pool (farm) or every task's list (static)."""
        if self.is_farm:
            return IndexSet.parse(self.pool)
        return IndexSet.of(i for task in self.tasks for i in task)

    def indices(self) -> list[int]:
        """Every index of every task (farm: of the pool, ascending)."""
        if self.is_farm:
            return list(self.index_set())
        return [i for task in self.tasks for i in task]

    def task_count(self) -> int:
        """How many array tasks the entry has: its workers (farm) or its index lists (static)."""
        return self.workers if self.is_farm else len(self.tasks)


def job_name(experiment: str, name: str | None, entry_id: str) -> str:
    """The Slurm job name of an entry, `<experiment>-pyexp-<id>`: the experiment's 'name', else
    its file's folder-stem, shell-safe."""
    folder, stem = os.path.split(os.path.splitext(experiment)[0])
    short = _UNSAFE.sub("_", str(name or f"{os.path.basename(folder)}-{stem}"))[:NAME_CHARS]
    return f"{short or 'exp'}-pyexp-{entry_id}"


def local_job_id(tag: str) -> str:
    """The job id of work run on this machine (`local-<tag>`): no Slurm job has it."""
    return f"{LOCAL_JOB}{tag}"


def is_local_job(job_id: str | None) -> bool:
    """Whether job_id names work run on this machine, not a Slurm job."""
    return str(job_id).startswith(LOCAL_JOB)


def new_entry_id() -> str:
    """A fresh ledger entry id."""
    return uuid.uuid4().hex[:12]


def entry_id_from_job_name(name: str) -> str | None:
    """The ledger entry id inside a job name (`NAME-pyexp-ID`, or the older `pyexp-ID`), or None
    for jobs that are not ours."""
    match = _JOB_NAME.fullmatch(name)
    return match.group(1) if match else None


class Ledger:
    """The ledger folder of one experiment: one JSON file per job array."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def path(self, entry_id: str) -> str:
        """Where an entry is stored."""
        return os.path.join(self.folder, f"{entry_id}.json")

    def write(self, entry: LedgerEntry) -> None:
        """Store (or replace) an entry atomically."""
        write_atomic(self.path(entry.id), json.dumps(asdict(entry)))

    def mark_submitted(self, entry: LedgerEntry, job_id: str) -> None:
        """Record the job id Slurm gave the entry's array."""
        entry.state, entry.job_id = SUBMITTED, job_id
        self.write(entry)

    def mark_unconfirmed(self, entry: LedgerEntry) -> None:
        """Record that sbatch returned without a clear answer for the entry's array."""
        entry.state = UNCONFIRMED
        self.write(entry)

    def mark_cancelled(self, entry: LedgerEntry) -> None:
        """Record that pyexp-cancel cancels the array: it is never settled, so the indices it
        leaves unfinished are missing, not failed."""
        entry.state = CANCELLED
        self.write(entry)

    def settle(self, entry: LedgerEntry) -> None:
        """Mark an array whose tasks have all left the queue and been accounted for."""
        entry.state = SETTLED
        self.write(entry)

    def discard(self, entry: LedgerEntry) -> None:
        """Forget an entry Slurm did not accept."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(entry.id))

    def load(self, entry_id: str) -> LedgerEntry:
        """Read one entry by id."""
        with open(self.path(entry_id), encoding="utf-8") as f:
            return LedgerEntry(**json.load(f))

    def entries(self) -> list[LedgerEntry]:
        """Every readable entry, oldest first."""
        return self.scan().entries

    def scan(self) -> LedgerScan:
        """Every entry, oldest first, and the files that are not readable entries."""
        out, unreadable = [], {}
        for name in scan_names(self.folder):
            if not name.endswith(".json"):
                continue
            entry_id = name[: -len(".json")]
            try:
                out.append(self.load(entry_id))
            except FileNotFoundError:  # discarded meanwhile
                continue
            except (OSError, ValueError, TypeError) as e:  # truncated, junk, not an entry
                unreadable[entry_id] = f"{self.path(entry_id)}: unreadable ledger entry ({e})"
        return LedgerScan(sorted(out, key=lambda e: e.created), unreadable)


@dataclass
class LedgerScan:
    """The ledger as read: its entries, and why each unreadable file (by entry id) is not one.

    A command reads it once (read_ledger) and hands it on; writes (Ledger.settle, ...) update
    the entry objects it holds, so it stays the command's view of the ledger."""

    entries: list[LedgerEntry]
    unreadable: dict[str, str]

    def may_be_on_slurm(self) -> bool:
        """Whether Slurm's queue may hold work of these entries: one not settled and not run
        here (pending ones included: sbatch may have taken it), or one that cannot be read."""
        return bool(self.unreadable) or len(self.ended()) < len(self.entries)

    def ended(self) -> list[LedgerEntry]:
        """The entries whose tasks have all ended: settled arrays, and local runs (which end
        before their submit returns, or are judged by their runner's pid)."""
        return [e for e in self.entries if e.state == SETTLED or is_local_job(e.job_id)]

    def settled(self) -> list[LedgerEntry]:
        """The settled entries, oldest first."""
        return [e for e in self.entries if e.state == SETTLED]
