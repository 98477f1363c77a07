"""Where one experiment's state lives under the config's state_path."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyexp.experiment import ExperimentDescription

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StateDirs:
    """The folders of one experiment's state."""

    root: str

    @property
    def done(self) -> str:
        return os.path.join(self.root, "done")

    @property
    def attempts(self) -> str:
        return os.path.join(self.root, "attempts")

    @property
    def leases(self) -> str:
        return os.path.join(self.root, "leases")

    @property
    def ledger(self) -> str:
        return os.path.join(self.root, "ledger")

    @property
    def scripts(self) -> str:
        return os.path.join(self.root, "scripts")

    @property
    def submit_lock(self) -> str:
        return os.path.join(self.root, "submit.lock")


def experiment_id(exp: ExperimentDescription) -> str:
    """The experiment file's path under the config root without '.json' (else its name)."""
    root = exp.config.root
    if exp.path is not None:
        path = os.path.splitext(os.path.abspath(exp.path))[0]
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            return "/".join(_UNSAFE.sub("_", p) for p in rel.split(os.sep))
    return "/".join(_UNSAFE.sub("_", p) or "_" for p in exp.getExperimentName().split("/"))


def state_dirs(exp: ExperimentDescription) -> StateDirs:
    """The state folders of exp."""
    return StateDirs(os.path.join(exp.config.state_path, experiment_id(exp)))
