"""Attempt records: every finished-but-not-successful try of an index, with its outcome."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from pyexp.state.atomic import scan_names, write_atomic

# Outcomes a runner records; "completed" is the completion record itself.
FAILED, TIMEOUT, PREEMPTED, OOM, LOST = "failed", "timeout", "preempted", "oom", "lost"
LEASE_LOST = "lease_lost"  # the runner lost the index's lease mid-run and stopped it
# Stopped after its checkpoint folder changed: progress, never charged (state/checkpoints.py);
# stalled: it saved the same progress as its last stop, charged so nothing runs forever.
CONTINUING, STALLED = "continuing", "stalled"
# Outcomes the command is to blame for: they count against the attempt cap and the broken-command
# guard; the others (timeout, preempted, lost, lease_lost, continuing) are always retried.
CHARGED = frozenset({FAILED, OOM, STALLED})
CHARGED_TIMEOUT = "timeout_charged"  # in counts(): a timeout of a job given more time


@dataclass(frozen=True)
class Attempt:
    """One try of (record key) that did not complete."""

    key: str
    outcome: str
    info: dict


class Attempts:
    """The attempt records of one experiment: `<key>.<outcome>.<uuid>` files, one per try."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def record(self, key: str, outcome: str, info: dict, attempt: str | None = None) -> str:
        """Write one attempt record, named by its Slurm job (`123_4`) when it has one."""
        path = os.path.join(self.folder, f"{key}.{outcome}.{attempt or uuid.uuid4().hex[:12]}")
        body = {"key": key, "outcome": outcome, "time": time.time(), **info}
        write_atomic(path, json.dumps(body))
        return path

    def names(self) -> list[tuple[str, str, str]]:
        """(key, outcome, attempt) of every record, from one directory read."""
        parts = (name.split(".", 2) for name in scan_names(self.folder))
        return [(p[0], p[1], p[2]) for p in parts if len(p) == 3]  # strays are not attempts

    def counts(self, charged_timeouts: set[str] = frozenset()) -> dict[str, Counter]:
        """key -> Counter of outcomes; a timeout in one of the jobs charged_timeouts (array job
        ids) counts as CHARGED_TIMEOUT."""
        out: dict[str, Counter] = {}
        for key, outcome, attempt in self.names():
            if outcome == TIMEOUT and attempt.split("_")[0] in charged_timeouts:
                outcome = CHARGED_TIMEOUT
            out.setdefault(key, Counter())[outcome] += 1
        return out

    def latest(self, keys: set[str]) -> dict[str, Attempt]:
        """The most recent attempt of each of keys: one directory read, then their files."""
        out: dict[str, Attempt] = {}
        for key, outcome, attempt in self.names():
            if key not in keys:
                continue
            try:
                with open(os.path.join(self.folder, f"{key}.{outcome}.{attempt}")) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if key not in out or info.get("time", 0) >= out[key].info.get("time", 0):
                out[key] = Attempt(key, outcome, info)
        return out
