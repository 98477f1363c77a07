"""Where one experiment's state lives under the config's state_path.

Work is identified by (the experiment file, the values of the top-level fields its save_path
uses, parameters, run). The first picks the folder; the second, when the save_path uses any such
field, suffixes done/, attempts/ and leases/ with a hash of their values (`done-<hash8>`), so a
changed `agent` in `results/{agent}/...` finds nothing done while the old value's records stay.
The ledger, started markers, scripts, settings and the broken-command guard's word are shared
by every scope.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from pyexp.experiment import ExperimentDescription, canonical_json
from pyexp.state.ledger import Ledger, LedgerScan

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StateDirs:
    """The folders of one experiment's state."""

    root: str
    scope: str = ""  # hash of the save path's top-level field values; "" when it uses none

    def _scoped(self, name: str) -> str:
        return os.path.join(self.root, f"{name}-{self.scope}" if self.scope else name)

    @property
    def done(self) -> str:
        return self._scoped("done")

    @property
    def attempts(self) -> str:
        return self._scoped("attempts")

    @property
    def checkpoints(self) -> str:
        return self._scoped("checkpoints")

    @property
    def store(self) -> str:
        return self._scoped("store")

    @property
    def started(self) -> str:
        return os.path.join(self.root, "started")

    @property
    def leases(self) -> str:
        return self._scoped("leases")

    @property
    def ledger(self) -> str:
        return os.path.join(self.root, "ledger")

    @property
    def snapshots(self) -> str:
        return os.path.join(self.root, "snapshots")

    @property
    def scripts(self) -> str:
        return os.path.join(self.root, "scripts")

    @property
    def settings(self) -> str:
        return os.path.join(self.root, "settings.json")

    @property
    def broken(self) -> str:
        return os.path.join(self.root, "broken-command.json")

    @property
    def chain(self) -> str:
        """--until-done's chain of rounds (scheduler/chain.py)."""
        return os.path.join(self.root, "chain.json")

    @property
    def unfit(self) -> str:
        """A farm task that could start nothing in its time: its limit and estimate."""
        return os.path.join(self.root, "unfit.json")

    @property
    def submit_lock(self) -> str:
        return os.path.join(self.root, "submit.lock")


def experiment_id(exp: ExperimentDescription) -> str:
    """A folder name unique to the experiment file: its path under the config root without
    '.json'; outside the root, its name plus a hash of its absolute path; no file: its name."""
    if exp.path is None:
        return _safe(exp.getExperimentName().split("/"))
    path = os.path.splitext(os.path.abspath(exp.path))[0]
    rel = os.path.relpath(path, exp.config.root)
    if rel != ".." and not rel.startswith(".." + os.sep):
        return _safe(rel.split(os.sep))
    digest = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
    return _safe(["_outside", f"{os.path.basename(path)}-{digest}"])


def _safe(parts: list[str]) -> str:
    # Never '.', '..' or empty: a name cannot climb out of state_path or log_path.
    cleaned = (_UNSAFE.sub("_", p) for p in parts)
    return "/".join(p if p.strip(".") else "_" for p in cleaned)


def state_dirs(exp: ExperimentDescription) -> StateDirs:
    """The state folders of exp."""
    return StateDirs(os.path.join(exp.config.state_path, experiment_id(exp)), work_scope(exp))


def log_dir(exp: ExperimentDescription) -> str:
    """The log folder of exp: <log_path>/<experiment id> (index logs, array tasks' files)."""
    return os.path.join(exp.config.log_path, experiment_id(exp))


def read_ledger(exp: ExperimentDescription) -> LedgerScan:
    """The ledger of exp as it is now: one listing, each entry read once."""
    return Ledger(state_dirs(exp).ledger).scan()


def work_scope(exp: ExperimentDescription) -> str:
    """8 hex digits naming the values of the top-level fields exp's save_path uses; "" if none."""
    fields = exp.savePathFields()
    if not fields:
        return ""
    return hashlib.blake2b(canonical_json(fields).encode(), digest_size=4).hexdigest()
