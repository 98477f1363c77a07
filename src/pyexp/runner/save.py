"""pyexp.save(name, value): a metric of the index this process runs, staged until it ends.

A command run by pyexp-run finds its index's staging file in $PYEXP_STAGING (node-local, made by
the runner); a pyexp.claim() job stages in memory. When the index succeeds, its runner folds the
staged saves into one record of its own shard, then writes the completion record
(runner/outcome.py): an index is complete only with its data in the store. Saving a name more
than once appends: the values are stacked (scalars make a curve), so the shape must stay the
same. NaN and inf are stored, with one warning per name: a diverged run is a result, and refusing
it would fail the whole run at its end.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any

from pyexp.errors import ResultsError
from pyexp.runner.outcome import Work
from pyexp.state.store import Record, ShardWriter, decode, encode, fold

STAGING = "PYEXP_STAGING"  # the staging file of the index a command runs


class Staging:
    """The saves of one index not yet in the store: in a file (a command's) or in memory."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.shapes: dict[str, tuple[str, list[int]]] = {}
        self._records: list[bytes] = []

    def add(self, record: bytes) -> None:
        """Stage one save."""
        if self.path is None:
            self._records.append(record)
            return
        with open(self.path, "ab") as f:
            f.write(record)

    def read(self) -> list[Record]:
        """The saves staged so far (a torn last one, of a killed command, left out)."""
        if self.path is None:
            return list(decode(b"".join(self._records), "pyexp.save"))
        try:
            with open(self.path, "rb") as f:
                return list(decode(f.read(), self.path))
        except FileNotFoundError:
            return []

    def discard(self) -> None:
        """Forget the staged saves."""
        self._records.clear()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def store_staged(writer: ShardWriter, staging: Staging, work: Work) -> None:
    """Append the index's staged saves to the store as one record (nothing if it saved none);
    OSError or ResultsError if they cannot be stored."""
    staged = staging.read()
    if staged:
        meta = {"key": work.key, "params": work.params, "run": work.run, "time": time.time()}
        writer.append(fold(staged, meta, f"index {getattr(work, 'index', work.key)}"))


_current: Staging | None = None  # the pyexp.claim() job running in this process
_from_env: dict[str, Staging] = {}
_warned: set[str] = set()


def begin(staging: Staging | None) -> None:
    """Make staging the target of pyexp.save() in this process (None: no job runs)."""
    global _current
    _current = staging


def save(name: str, value: Any) -> None:
    """Save a metric (a scalar or an array, e.g. a learning curve) of the running index."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ResultsError(f"pyexp.save({name!r}): a metric's name must be an identifier")
    staging = _staging(name)
    import numpy as np  # lazy: importing pyexp stays numpy-free

    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ResultsError(
            f"pyexp.save({name!r}): {array.dtype} values; save numbers (a scalar or an array)"
        )
    spec = (array.dtype.str, list(array.shape))
    if staging.shapes.setdefault(name, spec) != spec:
        old = staging.shapes[name]
        raise ResultsError(
            f"pyexp.save({name!r}): shape {tuple(spec[1])} {spec[0]} differs from an earlier "
            f"save's {tuple(old[1])} {old[0]} in this run; save the same shape each time"
        )
    if array.dtype.kind == "f" and name not in _warned and not np.isfinite(array).all():
        _warned.add(name)
        warnings.warn(f"pyexp.save({name!r}): NaN or inf stored as they are", stacklevel=2)
    staging.add(encode({"name": name, "dtype": spec[0], "shape": spec[1]}, array.tobytes()))


def _staging(name: str) -> Staging:
    if _current is not None:
        return _current
    path = os.environ.get(STAGING)
    if not path:
        raise ResultsError(
            f"pyexp.save({name!r}) outside an index: call it from a command pyexp-run runs, "
            "or inside `with job:` of pyexp.claim()"
        )
    return _from_env.setdefault(path, Staging(path))
