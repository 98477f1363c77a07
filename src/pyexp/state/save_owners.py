"""Which experiment files save under a save root: a small registry that outlives submissions.

The save root is the save path up to the folder holding its first per-index part ({params},
{run}, {params_hash}), with the experiment's own fields filled in: `results/mc` for
`results/{name}/{params}/{run}`. Experiments whose save paths can meet share a root, so a submit
asks only the few files registered under its own root whether they overlap. The registry is
`<state_path>/save-roots/<hash of the root>/<hash of the experiment file>`, each holding that
file's absolute path: one small file per (root, experiment), written once, never rewritten, so
concurrent submits of different experiments never lose each other's entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from typing import TYPE_CHECKING

from pyexp.state.atomic import scan_names, write_atomic

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription

_PER_INDEX = re.compile(r"\{(?:params|run|params_hash)\W")


def save_root(exp: ExperimentDescription) -> str:
    """The folder every index's save path of exp lies under, as far as its fields say."""
    template = exp.config.save_path
    match = _PER_INDEX.search(template)
    head = template if match is None else os.path.dirname(template[: match.start()])
    return exp.interpolateSavePath(0, key=head)


def _folder(exp: ExperimentDescription, root: str) -> str:
    name = hashlib.blake2b(root.encode(), digest_size=8).hexdigest()
    return os.path.join(exp.config.state_path, "save-roots", name)


def _name(path: str) -> str:
    return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()


def owners(exp: ExperimentDescription, root: str) -> list[str]:
    """The other experiment files registered under root (absolute paths), oldest name first."""
    folder, mine = _folder(exp, root), os.path.abspath(exp.path or "")
    found = []
    for name in sorted(scan_names(folder)):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                path = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue  # being written, or damaged: it is rewritten at that file's next submit
        if path and path != mine:
            found.append(path)
    return found


def register(exp: ExperimentDescription, root: str) -> None:
    """Record that exp's file saves under root (once; later submits find it there)."""
    path = os.path.abspath(exp.path or "")
    entry = os.path.join(_folder(exp, root), _name(path))
    if exp.path and not os.path.exists(entry):
        write_atomic(entry, path + "\n")


def forget(exp: ExperimentDescription, root: str, path: str) -> None:
    """Drop a registered experiment file that no longer exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(_folder(exp, root), _name(path)))
