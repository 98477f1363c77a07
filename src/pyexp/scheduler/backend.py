"""Where arrays run, behind one small interface (as submitit's executors): submit a plan's
ledger entries, say what is queued and how much more may be."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyexp.errors import PyExpError

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.scheduler.planner import Limits
    from pyexp.standing.slurm_states import QueueSnapshot
    from pyexp.state.ledger import LedgerEntry


class SubmitLockLost(PyExpError, RuntimeError):
    """This submitter's lock was taken over (it was paused past its lease): it stops."""


class SubmitFailed(PyExpError, RuntimeError):
    """The backend did not take an array; the arrays taken before it stay recorded."""


@dataclass
class Sent:
    """What a backend did with a submission's entries."""

    job_ids: list[str] = field(default_factory=list)
    failed_tasks: int = 0  # tasks that ended with failures (backends that run to the end)
    ran: int | None = None  # indices that ran (backends that run to the end)


class Backend(ABC):
    """One place arrays run (Slurm, or this machine), with the cluster config's settings."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster

    @property
    def name(self) -> str:
        """Where the arrays ran, recorded in their ledger entries."""
        return self.cluster.name

    @abstractmethod
    def queue(self, required: bool) -> QueueSnapshot | None:
        """Our array tasks that may still run, or None when that cannot be asked (and is not
        required)."""

    @abstractmethod
    def limits(self) -> Limits:
        """How many more array tasks may be queued now, and the largest array."""

    @property
    def cores(self) -> int:
        """Indices each array task runs at once."""
        return self.cluster.cores

    @abstractmethod
    def submit(
        self, exp: ExperimentDescription, entries: list[LedgerEntry], held: Callable[[], bool]
    ) -> Sent:
        """Record and start the entries' arrays, checking held() (the submit lock) before each."""
