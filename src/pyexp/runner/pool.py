"""Farm workers: which pool index a worker tries next, and whether its time still holds one.

Worker w of N walks the pool from position (w * size) // N, wrapping, so workers start apart.
Indices whose last stop saved a checkpoint (continuing) come first, for every worker; a continuing
index's fit test counts only the part its checkpoint's progress fraction says is left. It skips
indices that are done or that this array already tried and failed, in a view of those folders
re-read at most once a second while the worker meets others' indices (its last try was refused or
found its index done), else once its view is D/2 old (D: the lease duration): a worker in its own
stretch lists nothing per index. It tries the lease of any other directly, without a look at its
marker first: the exclusive create is refused by the server for a held key at the cost such a look
would have, and a refused index is left to its holder (held back) for the next pass. No index is
tried twice by one array, with no listing under the lease: a failure in a farm worker replaces its
lease marker by a failure mark naming its array (state/leases.py), which answers the array's later
takes "done" until it is swept, at least 2 D after the failure was recorded; a take that succeeds by
exclusive create thus meets no failure of this array but one over 2 D old, which the view (under D/2
old, client caches under D) holds, as known_complete argues for completions. Only an index this
worker found held before is listed again under its lease: it may have been taken over from a stalled
holder whose marker named no failure. A pass that claimed something is followed by another over the
indices that were held; the worker ends when a pass claims nothing and none of its own indices runs,
or when the next index no longer fits before the deadline: both decided by pyexp.budget, with the
planner's rule (a high percentile of this experiment's measured durations, else the entry's
index_minutes; the job's end less the signal lead and Slurm's early warning).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from itertools import chain

from pyexp.budget import index_seconds, may_start, usable_seconds
from pyexp.environment import lease_seconds
from pyexp.experiment import ExperimentDescription
from pyexp.indexset import IndexSet
from pyexp.job_environment import JobEnvironment
from pyexp.runner.item import Item
from pyexp.state import checkpoints
from pyexp.state.attempts import CONTINUING, FAILED, LEASE_LOST, OOM, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import LedgerEntry
from pyexp.state.records import CompletionRecords
from pyexp.state.settings import remember

REFRESH_SECONDS = 1.0  # done and tried sets, while the worker meets others' indices
ESTIMATE_SECONDS = 30.0  # durations
_SETTLED_OUTCOMES = (FAILED, OOM, LEASE_LOST)  # this array does not try them again


class TimeBudget:
    """How long a worker has left and how long its next index may take (monotonic clock)."""

    def __init__(
        self,
        deadline: float | None,
        records: CompletionRecords | None = None,
        index_minutes: float | None = None,
    ) -> None:
        self.deadline = deadline
        self.limit: float | None = None  # the task's time limit, when known
        self.records = records
        self.index_minutes = index_minutes
        self._estimate: float | None = None
        self._measured_at = -math.inf

    @classmethod
    def for_entry(
        cls, entry: LedgerEntry, job: JobEnvironment, records: CompletionRecords, started: float
    ) -> TimeBudget:
        """The budget of a task of entry started at monotonic time started: until the job's
        end (Slurm's, else started + the entry's time limit) less the signal lead, and under
        Slurm less how early its warning may come (it stops the indices then running)."""
        under_slurm = job.job_id is not None  # not a stand-in for a local worker
        lead = entry.signal_lead_seconds
        if job.end is not None:
            left = usable_seconds(job.end - time.time(), lead, under_slurm)
            deadline: float | None = time.monotonic() + left
        elif entry.time_limit_seconds:
            deadline = started + usable_seconds(entry.time_limit_seconds, lead, under_slurm)
        else:
            deadline = None
        budget = cls(deadline, records, entry.index_minutes)
        budget.limit = entry.time_limit_seconds
        return budget

    def left(self) -> float | None:
        """Seconds until the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def estimate(self) -> float | None:
        """Seconds the next index may take, as the planner estimates it (budget.index_seconds)."""
        now = time.monotonic()
        if now - self._measured_at >= ESTIMATE_SECONDS:
            self._measured_at = now
            measured = self.records.durations() if self.records is not None else []
            self._estimate = index_seconds(measured, self.index_minutes)
        return self._estimate

    def refusal(self, fraction: float | None = None) -> str | None:
        """Why no further index may start (None: one may); fraction: how much of the index its
        checkpoint says is done, so only the rest of the estimate is needed."""
        left, estimate = self.left(), self.estimate()
        if estimate is not None and fraction is not None:
            estimate *= 1.0 - min(max(fraction, 0.0), 1.0)
        if may_start(estimate, left):
            return None
        return (
            f"it may take {estimate or 0:.0f}s and {max(left, 0):.0f}s are left before the deadline"
        )


class PoolClaims:
    """The indices a pool worker tries, one at a time; see the module docstring."""

    defers = False  # a held lease is left to its holder, not retried by the Runner

    def __init__(
        self,
        exp: ExperimentDescription,
        pool: IndexSet,
        worker: int,
        workers: int,
        tag: str,
        budget: TimeBudget | None = None,
        say: Callable[[str], None] = print,
        swept: Callable[[int], bool] | None = None,
    ) -> None:
        self._exp = exp
        dirs = state_dirs(exp)
        self._records, self._attempts = CompletionRecords(dirs.done), Attempts(dirs.attempts)
        self._checkpoints = dirs.checkpoints
        self._continuing = continuing_in(exp, pool, self._attempts)
        rest = pool - IndexSet.of(self._continuing)
        start = (worker * len(rest)) // max(1, workers)
        self._pass: Iterator[int] = chain(
            self._continuing, rest.take(start, len(rest)), rest.take(0, start)
        )
        self._held: list[int] = []
        self._met: set[int] = set()  # indices refused once: a later take may be a takeover
        self._claimed = 0
        self._prefix, self.array = f"{tag}_", tag
        self._budget = budget or TimeBudget(None)
        self._say = say
        self._swept = swept
        self._skipped: set[int] = set()
        self._settled: set[str] = set()
        self._unfit = dirs.unfit
        self._refreshed = -math.inf
        self._quiet = lease_seconds() / 2  # the view's age limit while each try takes its index
        self._contested = False  # the last try was refused, or found its index done
        self._answered = True  # the Runner said taken or held of the last index popped
        self.ended = self.out_of_time = False
        self.tries = self.refused = 0

    def more(self) -> bool:
        """Whether pop() may give an index now or after this worker's running ones end."""
        return not self.ended

    def pop(self, running: int) -> Item | None:
        """The next index to try, or None for now (running: this worker's indices running)."""
        if not self._answered:  # neither taken nor held: its marker said done
            self._contested = True
        self._answered = True
        while not self.ended:
            index = next(self._pass, None)
            if index is None:
                if not self._next_pass(running):
                    return None
                continue
            if index in self._skipped or (self._swept and not self._swept(index)):
                self._skipped.add(index)  # removed from the sweep since submission
                continue
            item = Item.of(self._exp, index)
            if item.key in self._settled_keys():  # the Runner checks again under the lease
                continue
            if (why := self._budget.refusal(self._fraction(item))) is not None:
                self._say(f"not starting index {index}: {why}; the rest stays missing")
                self.ended = self.out_of_time = True
                if not self.tries and self._budget.limit:  # the planner must hear of it
                    limit, estimate = self._budget.limit, self._budget.estimate()
                    remember(self._unfit, time_limit_seconds=limit, estimate=estimate or 0.0)
                return None
            self._answered = False
            return item
        return None

    def taken(self, item: Item) -> None:
        """The Runner took item's lease."""
        self._answered, self._contested = True, False
        self.tries += 1
        self._claimed += 1

    def wanted(self, item: Item) -> bool:
        """Asked under item's lease: whether this array has not tried it yet. A first try needs
        no fresh look (pop() checked the view, and a failure of this array leaves a failure
        mark that refuses the take until that view shows it); an index refused before may have
        been taken over from a stalled holder, whose own marker named no failure, so it gets a
        fresh listing (failures are recorded before their lease is released)."""
        return item.index not in self._met or item.key not in self._tried()

    def held(self, item: Item) -> None:
        """Someone else (or this worker, for an equal key) holds item's lease."""
        self.tries += 1
        self.refused += 1
        self._answered = self._contested = True
        self._held.append(item.index)
        self._met.add(item.index)

    def summary(self) -> str:
        """The worker's lease figures for its final line."""
        late = ", stopped before the time limit" if self.out_of_time else ""
        return f", {self.tries} lease tries ({self.refused} refused){late}"

    def _next_pass(self, running: int) -> bool:
        claimed, held = self._claimed, self._held
        if not held or not (claimed or running):
            self.ended = True
            return False
        self._pass, self._held, self._claimed = iter(held), [], 0
        self._refreshed = -math.inf
        # Nothing claimed while own indices run: the next pass waits for one of them to end.
        return claimed > 0

    def _fraction(self, item: Item) -> float | None:
        """The fraction done that a continuing index's checkpoint holds (None: not known)."""
        if item.index not in self._continuing:
            return None
        saved = checkpoints.progress(checkpoints.folder_of(self._checkpoints, item.key))
        fraction = saved.get("fraction")
        return float(fraction) if isinstance(fraction, (int, float)) else None

    def _settled_keys(self) -> set[str]:
        now = time.monotonic()
        if now - self._refreshed >= (REFRESH_SECONDS if self._contested else self._quiet):
            self._refreshed = now
            self._settled = self._records.completed() | self._tried()
        return self._settled

    def _tried(self) -> set[str]:
        return {
            key
            for key, outcome, attempt in self._attempts.names()
            if outcome in _SETTLED_OUTCOMES and attempt.startswith(self._prefix)
        }


def continuing_in(exp: ExperimentDescription, pool: IndexSet, attempts: Attempts) -> list[int]:
    """The indices of pool whose last stop saved a checkpoint (continuing), ascending: a worker
    starts them before new ones (their records name the index; one edited away is left out)."""
    keys = {key for key, outcome, _ in attempts.names() if outcome == CONTINUING}
    found = set()
    for key, attempt in attempts.latest(keys).items():
        index = attempt.info.get("index")
        if isinstance(index, int) and index in pool and Item.of(exp, index).key == key:
            found.add(index)
    return sorted(found)
