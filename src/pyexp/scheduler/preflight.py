"""Checks at submit of what the tasks would otherwise fail on index by index: a program the
command names that cannot be found, a folder that cannot be written, and save paths that another
experiment file already saves to (across submissions, from the registry in state.save_owners)."""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import sys
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING

from pyexp.errors import ConfigError, ExperimentError, SavePathError
from pyexp.experiment import loadExperiment
from pyexp.state import save_owners

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.indexset import IndexSet
    from pyexp.scheduler.cluster import ClusterConfig

HOW_TO_FIX = "fix 'command' in config.json (or --command)"


def check_program(
    where: str, command: str, root: str, cluster: ClusterConfig, local: bool
) -> list[str]:
    """Refuse a command (already checked to split) whose program the tasks cannot find: a path
    (relative to root, where tasks start) that is not an executable file, or a name in neither
    the job's Python's folder nor PATH. The latter is a warning (returned) on a cluster whose
    setup lines may change PATH."""
    program = shlex.split(command)[0]
    if "{" in program:
        return []  # filled per index
    program = os.path.expanduser(program)
    if os.sep in program:
        path = os.path.normpath(os.path.join(root, program))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return []
        state = "is not an executable file" if os.path.exists(path) else "does not exist"
        raise ConfigError(f"{where}: the command's program {path} {state}; {HOW_TO_FIX}")
    folders = [_python_folder(cluster), *os.environ.get("PATH", "").split(os.pathsep)]
    if shutil.which(program, path=os.pathsep.join(folders)) is not None:
        return []
    line = (
        f"{where}: the command's program {program!r} is not in {folders[0]} nor on PATH"
        f"{_did_you_mean(program, folders)}; {HOW_TO_FIX}"
    )
    if cluster.setup and not local:
        return [f"{line} (not refused: the cluster's setup lines may put it on PATH)"]
    raise ConfigError(line)


def _python_folder(cluster: ClusterConfig) -> str:
    """The folder of the Python that runs the tasks (first on their PATH)."""
    python = cluster.python or sys.executable
    return os.path.dirname(shutil.which(python) or python)


def _did_you_mean(program: str, folders: list[str]) -> str:
    names: set[str] = set()
    for folder in dict.fromkeys(folders):
        try:
            names.update(os.listdir(folder or "."))
        except OSError:
            continue
    close = difflib.get_close_matches(program, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_writable(where: str, folders: dict[str, str]) -> None:
    """Refuse when a folder ({config key: path}) cannot be made or written by this user."""
    for key, folder in folders.items():
        existing = folder
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK):
            continue
        blocker = "" if existing == folder else f" ({existing} is not writable)"
        raise ConfigError(
            f"{where}: {key} folder {folder} cannot be written{blocker}; make it writable or "
            f"point {key} in config.json elsewhere"
        )


def check_save_owners(
    where: str, exp: ExperimentDescription, permutations: IndexSet, limit: int
) -> str:
    """Refuse when another experiment file registered under exp's save root has a permutation
    whose save path is one of these permutations' (the first `limit`); returns the root."""
    root = save_owners.save_root(exp)
    for other_path in save_owners.owners(exp, root):
        if not os.path.exists(other_path):
            save_owners.forget(exp, root, other_path)
            continue
        try:
            other = loadExperiment(other_path)
            shared = _first_shared(exp, other, islice(permutations, limit))
        except (ExperimentError, SavePathError):
            continue  # its own submit says what is wrong with it
        if shared is not None:
            raise SavePathError(
                f"{where}: its save paths meet those of {other_path} (both save index {shared} "
                f"to {exp.interpolateSavePath(shared)}); give each file its own 'name', or put a "
                "field that tells them apart in save_path (e.g. {agent})"
            )
    return root


def _first_shared(
    exp: ExperimentDescription, other: ExperimentDescription, permutations: Iterable[int]
) -> int | None:
    for p in permutations:
        q = other.permutationOf(exp.getPermutation(p))
        if q is not None and other.interpolateSavePath(q) == exp.interpolateSavePath(p):
            return p
    return None
