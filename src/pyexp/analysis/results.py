"""Analysis side: lazy, cached Result objects over an experiment's saved files (filters and
getBest are in pyexp.analysis.filters)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pyexp.analysis.csv_results import csv_runs
from pyexp.experiment import paramsString
from pyexp.indexset import IndexSet
from pyexp.standing.missing import permutation_hashes
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.settings import remembered_int

if TYPE_CHECKING:
    from typing import TypeAlias

    from pyexp.experiment import ExperimentDescription

    ResultLike: TypeAlias = "Result | ResultView"

logger = logging.getLogger("pyexp.results")

Loader = Callable[[str], Any]
_BUILTIN_SUFFIXES = (".npy", ".npz", ".csv")
_UNLOADED: Any = object()
_UNREADABLE: Any = object()


class _ResultBase:
    """What Result and ResultView share: statistics over runs, and reducers that chain."""

    exp: ExperimentDescription
    idx: int

    @property
    def params(self) -> dict:
        """The permutation's metaParameters, nested."""
        raise NotImplementedError

    def load(self) -> Any:
        """The data of every run, runs first, or None if no run has any."""
        raise NotImplementedError

    def mean(self) -> Any:
        """The mean over runs (NaN-padded steps left out), or None without data."""
        data = _numeric(self.load(), self)
        if data is None:
            return None
        import numpy as np  # lazy: importing pyexp stays numpy-free

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(data, axis=0)

    def stderr(self) -> Any:
        """The standard error over runs (ddof=1), or None without data."""
        data = _numeric(self.load(), self)
        if data is None:
            return None
        import numpy as np  # lazy: importing pyexp stays numpy-free

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            n = np.sum(~np.isnan(data), axis=0)
            return np.nanstd(data, axis=0, ddof=1) / np.sqrt(n)

    def runs(self) -> int:
        """How many runs loaded."""
        data = self.load()
        return (
            0
            if data is None
            else len(next(iter(data.values())) if isinstance(data, dict) else data)
        )

    def reducer(self, fn: Callable[[Any], Any]) -> ResultView:
        """A view whose load() gives fn(this result's runs-first data); None stays None."""
        return ResultView(self, fn)


class _Shared:
    """What the results of one loadResults call share: the run count and files read once."""

    def __init__(
        self,
        exp: ExperimentDescription,
        filename: str,
        runs: int | None,
        loader: Loader | None,
        base: str,
    ) -> None:
        self.exp, self.filename, self.loader, self.base = exp, filename, loader, base
        self._runs = runs
        self.tables: dict[str, Any] = {}  # PyExpUtils CSV files, parsed once per path
        self.warned_uneven = False

    def path(self, idx: int) -> str:
        return self.exp.buildSaveContext(idx, base=self.base).resolve(self.filename)

    @property
    def in_store(self) -> bool:
        """Whether filename names a metric of the results store (`returns`, no suffix)."""
        return self.loader is None and _isMetric(self.filename)

    @cached_property
    def stored(self) -> dict[str, Any]:
        """The store's records holding the metric, by record key (read once)."""
        from pyexp.analysis.frame import stored  # lazy: it imports the filters, which import us

        return {r.meta["key"]: r for r in stored(self.exp, self.filename)}

    def stored_run(self, params: dict, run: int) -> Any:
        """One run's array of the metric from the store; None if it has none."""
        record = self.stored.get(record_key(params, run))
        if record is None:
            return None
        import numpy as np  # lazy: importing pyexp stays numpy-free

        dtype, shape, data = record.metric(self.filename)
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    @cached_property
    def shared_file(self) -> bool:
        """Whether every run of a permutation saves to the same file (PyExpUtils CSV results)."""
        return self.path(0) == self.path(self.exp.numPermutations())

    @cached_property
    def runs(self) -> int | None:
        """The runs asked for, else the submitted ones, else those found (None: all rows)."""
        if self._runs is not None:
            return self._runs
        remembered = remembered_int(state_dirs(self.exp).settings, "runs")
        if remembered is None and self.in_store:
            return max((r.meta["run"] for r in self.stored.values()), default=-1) + 1
        if remembered is not None or self.shared_file:
            return remembered
        return _runsOnDisk(self)


class Result(_ResultBase):
    """One parameter permutation with all its runs: nothing is read until load(), then once."""

    def __init__(
        self,
        exp: ExperimentDescription,
        idx: int,
        filename: str,
        runs: int | None = None,
        loader: Loader | None = None,
        base: str = "",
        *,
        _shared: _Shared | None = None,
    ) -> None:
        if _shared is None:
            _checkLoadable(filename, loader)
        self.exp = exp
        self.idx = idx % exp.numPermutations()
        self.filename = filename
        self._shared = _shared or _Shared(exp, filename, runs, loader, base)
        self._data: Any = _UNLOADED

    @cached_property
    def path(self) -> str:
        """The file of this permutation's first run (the store's folder for a stored metric)."""
        if self._shared.in_store:
            return state_dirs(self.exp).store
        return self._shared.path(self.idx)

    @cached_property
    def params(self) -> dict:
        """The permutation's metaParameters, nested."""
        return self.exp.getPermutation(self.idx)

    def paths(self) -> list[str]:
        """The file of each run (for a PyExpUtils CSV file or a stored metric, the one place
        they share)."""
        if self._shared.in_store or self._shared.shared_file:
            return [self.path]
        n = self.exp.numPermutations()
        return [self._shared.path(self.idx + run * n) for run in range(self._shared.runs or 0)]

    def load(self) -> Any:
        """Every run's data, runs first, read on first call and cached; None if none exists."""
        if self._data is _UNLOADED:
            if self._shared.in_store:
                shared = self._shared
                found = {run: shared.stored_run(self.params, run) for run in range(shared.runs)}
            elif self._shared.shared_file and _suffix(self.filename) == ".csv":
                shared = self._shared
                path = shared.path(self.idx)
                found = csv_runs(shared.tables, self.exp, path, shared.runs, self.params)
            else:
                found = {
                    run: _readOrNone(path, self._shared.loader)
                    for run, path in enumerate(self.paths())
                }
            self._data = self._assemble(found)
        return self._data

    def _assemble(self, found: dict[int, Any]) -> Any:
        lost = [run for run, data in found.items() if data is None]
        if lost:
            logger.warning(
                "%s: %d run(s) missing (%s), e.g. %s",
                self.label(),
                len(lost),
                IndexSet.of(lost).text(),
                self.path,
            )
        datas = [data for data in found.values() if data is not None and data is not _UNREADABLE]
        if not found:
            logger.warning("%s: no run found, e.g. %s", self.label(), self.path)
        if not datas:
            return None
        stacked, uneven = _stack(datas)
        if uneven and not self._shared.warned_uneven:
            self._shared.warned_uneven = True
            logger.warning("runs of uneven length (e.g. %s): padded with NaN", self.label())
        return stacked

    def label(self) -> str:
        """The permutation as PyExpUtils names its folder."""
        return paramsString(self.params)

    def __repr__(self) -> str:
        return f"Result(idx={self.idx}, params={self.label()!r})"


class ResultView(_ResultBase):
    """A Result seen through fn: same attributes and statistics, load() gives fn(parent data)."""

    def __init__(self, parent: ResultLike, fn: Callable[[Any], Any]) -> None:
        self._parent = parent
        self._fn = fn

    @property
    def path(self) -> str:
        """The underlying result's first file."""
        return self._parent.path

    @property
    def params(self) -> dict:
        """The underlying result's parameters."""
        return self._parent.params

    @property
    def idx(self) -> int:  # type: ignore[override]
        """The underlying result's permutation."""
        return self._parent.idx

    @property
    def exp(self) -> ExperimentDescription:  # type: ignore[override]
        """The underlying result's experiment."""
        return self._parent.exp

    def load(self) -> Any:
        """fn applied to the parent's (cached) data; None if that is None."""
        data = self._parent.load()
        return None if data is None else self._fn(data)

    def __repr__(self) -> str:
        return f"ResultView({self._parent!r}, {getattr(self._fn, '__name__', self._fn)!r})"


def loadResults(
    exp: ExperimentDescription,
    filename: str,
    runs: int | None = None,
    *,
    loader: Loader | None = None,
    base: str = "",
) -> Iterator[Result]:
    """A lazy iterator of one Result per permutation, each with its runs; opens no file.

    runs=None: the runs pyexp-submit was last given for this experiment, else every run
    found. A name without suffix (`returns`) is a metric of the results store (pyexp.save);
    `.npy`, `.npz` and `.csv` (also PyExpUtils' CSV results) load with numpy; any other
    suffix needs `loader(path) -> data` (a given loader is used for every suffix).
    """
    _checkLoadable(filename, loader)
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    shared = _Shared(exp, filename, runs, loader, base)
    return (Result(exp, p, filename, _shared=shared) for p in range(exp.numPermutations()))


def _checkLoadable(filename: str, loader: Loader | None) -> None:
    """Raise ValueError if filename has no built-in reader and no loader was given."""
    if loader is None and _suffix(filename) not in _BUILTIN_SUFFIXES and not _isMetric(filename):
        raise ValueError(
            f"{filename!r}: no built-in reader for this suffix ({', '.join(_BUILTIN_SUFFIXES)}); "
            "pass loader=callable(path) -> data"
        )


def _isMetric(filename: str) -> bool:
    """A name pyexp.save() can save under: an identifier, no suffix."""
    return filename.isidentifier()


def _suffix(filename: str) -> str:
    """The lower-cased file extension, with its dot."""
    return os.path.splitext(filename)[1].lower()


def _readOrNone(path: str, loader: Loader | None) -> Any:
    """One run's data, None if its file is missing, _UNREADABLE (logged) if it cannot be read."""
    try:
        return loader(path) if loader is not None else _readBuiltin(path)
    except FileNotFoundError:
        return None
    except Exception as e:  # an unreadable file is left out: analysis never crashes
        logger.warning("result unreadable: %s (%s: %s)", path, type(e).__name__, e)
    return _UNREADABLE


def _readBuiltin(path: str) -> Any:
    """Read a .npy (array), .npz (dict of arrays) or .csv (array) file with numpy."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    suffix = _suffix(path)
    if suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".csv":
        return np.loadtxt(path, delimiter=",")
    return np.load(path)


def _stack(datas: list[Any]) -> tuple[Any, bool]:
    """Runs' data as one runs-first array (NaN-padded along steps) and whether it was uneven."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    if all(isinstance(d, dict) for d in datas):
        out, uneven = {}, False
        for name in datas[0]:
            out[name], odd = _stack([d[name] for d in datas if name in d])
            uneven = uneven or odd
        return out, uneven
    arrays = [np.asarray(d) for d in datas]
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1:
        return np.stack(arrays), False
    if {a.shape[1:] for a in arrays if a.ndim} != {arrays[0].shape[1:]} or not all(
        a.ndim for a in arrays
    ):
        return datas, True  # shapes that no padding can reconcile: left as a list
    longest = max(len(a) for a in arrays)
    padded = np.full((len(arrays), longest, *arrays[0].shape[1:]), np.nan)
    for row, a in zip(padded, arrays, strict=True):
        row[: len(a)] = a
    return padded, True


def _numeric(data: Any, result: Any) -> Any:
    """data as a float array, None for None; TypeError saying to reduce other data."""
    if data is None:
        return None
    import numpy as np  # lazy: importing pyexp stays numpy-free

    try:
        if isinstance(data, dict):
            raise TypeError("dict")
        return np.asarray(data, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"needs numeric array data, got {type(data).__name__} for {result!r}; "
            "pick an array with .reducer(...)"
        ) from e


def _runsOnDisk(shared: _Shared) -> int:
    """How many runs exist: from completion records (one folder read), else result files."""
    exp = shared.exp
    hashes = set(permutation_hashes(exp))
    keys = CompletionRecords(state_dirs(exp).done).completed(compact=False)
    done = [int(run) for h, _, run in (k.rpartition("-") for k in keys) if h in hashes]
    if done:
        return max(done) + 1
    listings: dict[str, frozenset[str]] = {}  # results not made by pyexp-run: list folders

    def exists(path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = frozenset(os.listdir(folder))
            except OSError:
                listings[folder] = frozenset()
        return name in listings[folder]

    n, run = exp.numPermutations(), 0
    while any(exists(shared.path(p + run * n)) for p in range(n)):
        run += 1
    return run
