"""Analysis side: lazy, cached Result objects over an experiment's saved files, and filters."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pyexp.errors import ResultsError
from pyexp.sweep import flat_items

if TYPE_CHECKING:
    from typing import TypeAlias

    from pyexp.experiment import ExperimentDescription

    ResultLike: TypeAlias = "Result | ResultView"

logger = logging.getLogger("pyexp.results")

Loader = Callable[[str], Any]
_BUILTIN_SUFFIXES = (".npy", ".npz", ".csv")
_MISSING: Any = object()
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
        import numpy as np

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(data, axis=0)

    def stderr(self) -> Any:
        """The standard error over runs (ddof=1), or None without data."""
        data = _numeric(self.load(), self)
        if data is None:
            return None
        import numpy as np

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

    @cached_property
    def shared_file(self) -> bool:
        """Whether every run of a permutation saves to the same file (PyExpUtils CSV results)."""
        return self.path(0) == self.path(self.exp.numPermutations())

    @cached_property
    def runs(self) -> int | None:
        """The runs asked for, else the submitted ones, else those found (None: all rows)."""
        if self._runs is not None:
            return self._runs
        from pyexp.state.layout import state_dirs
        from pyexp.state.settings import remembered_int

        remembered = remembered_int(state_dirs(self.exp).settings, "runs")
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
        """The file of this permutation's first run."""
        return self._shared.path(self.idx)

    @cached_property
    def params(self) -> dict:
        """The permutation's metaParameters, nested."""
        return self.exp.getPermutation(self.idx)

    def paths(self) -> list[str]:
        """The file of each run (for a PyExpUtils CSV file, the one file they share)."""
        if self._shared.shared_file:
            return [self.path]
        n = self.exp.numPermutations()
        return [self._shared.path(self.idx + run * n) for run in range(self._shared.runs or 0)]

    def load(self) -> Any:
        """Every run's data, runs first, read on first call and cached; None if none exists."""
        if self._data is _UNLOADED:
            if self._shared.shared_file and _suffix(self.filename) == ".csv":
                found = _csvRuns(self._shared, self.idx, self.params)
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
                _ranges(lost),
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
        from pyexp.experiment import paramsString

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
    found. `.npy`, `.npz` and `.csv` (also PyExpUtils' CSV results) load with numpy; any other
    suffix needs `loader(path) -> data` (a given loader is used for every suffix).
    """
    _checkLoadable(filename, loader)
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    shared = _Shared(exp, filename, runs, loader, base)
    return (Result(exp, p, filename, _shared=shared) for p in range(exp.numPermutations()))


def _checkLoadable(filename: str, loader: Loader | None) -> None:
    """Raise ValueError if filename has no built-in reader and no loader was given."""
    if loader is None and _suffix(filename) not in _BUILTIN_SUFFIXES:
        raise ValueError(
            f"{filename!r}: no built-in reader for this suffix ({', '.join(_BUILTIN_SUFFIXES)}); "
            "pass loader=callable(path) -> data"
        )


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
    import numpy as np

    suffix = _suffix(path)
    if suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".csv":
        return np.loadtxt(path, delimiter=",")
    return np.load(path)


def _stack(datas: list[Any]) -> tuple[Any, bool]:
    """Runs' data as one runs-first array (NaN-padded along steps) and whether it was uneven."""
    import numpy as np

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
    import numpy as np

    try:
        if isinstance(data, dict):
            raise TypeError("dict")
        return np.asarray(data, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"needs numeric array data, got {type(data).__name__} for {result!r}; "
            "pick an array with .reducer(...)"
        ) from e


def _ranges(runs: list[int]) -> str:
    """'0-2, 5' for [0, 1, 2, 5]."""
    parts, start = [], None
    for pos, run in enumerate(runs):
        start = run if start is None else start
        if pos + 1 == len(runs) or runs[pos + 1] != run + 1:
            parts.append(str(run) if start == run else f"{start}-{run}")
            start = None
    return ", ".join(parts)


def _runsOnDisk(shared: _Shared) -> int:
    """How many runs exist: from completion records (one folder read), else result files."""
    from pyexp.missing import permutation_hashes
    from pyexp.state.layout import state_dirs
    from pyexp.state.records import CompletionRecords

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


class _CsvTable:
    """A PyExpUtils CSV results file: rows of parameter values, the run, then the data."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self._by_cols: dict[int, dict[str, dict[int, list[str]]]] = {}

    def rows(
        self, exp: ExperimentDescription, header: list[str]
    ) -> dict[str, dict[int, list[str]]]:
        """{parameter columns joined by ',': {run: values}}; ResultsError if they do not fit."""
        cols = len(header)
        if cols not in self._by_cols:
            table: dict[str, dict[int, list[str]]] = {}
            for lineno, line in enumerate(self.lines, 1):
                parts = line.split(",")
                if len(parts) <= cols or not parts[cols].isdigit():
                    found = parts[cols] if len(parts) > cols else "nothing"
                    raise ResultsError(
                        f"{self.path}:{lineno}: not a PyExpUtils results row for this experiment: "
                        f"after its {cols} parameter column(s) ({','.join(header)}) comes "
                        f"{found!r}, not a run number"
                    )
                table.setdefault(",".join(parts[:cols]), {})[int(parts[cols])] = parts[cols + 1 :]
            wanted = {_csvKey(exp.getPermutation(p)) for p in range(exp.numPermutations())}
            if table and not wanted & table.keys():
                raise ResultsError(
                    f"{self.path}: no row's parameter columns ({','.join(header)}) match a "
                    "permutation of this experiment; was it written for another one?"
                )
            self._by_cols[cols] = table
        return self._by_cols[cols]


def _csvKey(params: dict) -> str:
    """PyExpUtils' CSV parameter columns of a permutation: its flat values, ','-joined."""
    return ",".join(str(v) for _, v in flat_items(params))


def _csvRuns(shared: _Shared, idx: int, params: dict) -> dict[int, Any]:
    """{run: data} of one permutation in a PyExpUtils CSV file shared by all its runs."""
    import numpy as np

    path = shared.path(idx)
    if path not in shared.tables:
        try:
            with open(path, encoding="utf-8") as f:
                shared.tables[path] = _CsvTable(path, f.read().splitlines())
        except (OSError, UnicodeDecodeError) as e:
            logger.warning("result file unreadable: %s (%s)", path, e)
            shared.tables[path] = None
    table = shared.tables[path]
    header = [k for k, _ in flat_items(params)]
    found = {} if table is None else table.rows(shared.exp, header).get(_csvKey(params), {})
    runs = shared.runs if shared.runs is not None else max(found, default=-1) + 1
    out: dict[int, Any] = {}
    for run in range(runs):
        try:
            out[run] = None if run not in found else np.asarray(found[run], dtype=float)
        except ValueError:
            raise ResultsError(f"{path}: run {run} of {_csvKey(params)}: not numbers") from None
    return out


def _getDotted(params: dict, name: str, default: Any = _MISSING) -> Any:
    """params['a']['b'] for 'a.b' (list elements as 'a.[0]'), or default if any part is absent."""
    node: Any = params
    for part in name.split("."):
        if isinstance(node, list) and part.startswith("[") and part.endswith("]"):
            pos = part[1:-1]
            if not pos.isdigit() or int(pos) >= len(node):
                return default
            node = node[int(pos)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def _hashable(value: Any) -> Any:
    """A hashable stand-in: lists become tuples, dicts sorted (key, value) tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _withoutIgnored(params: dict, ignore: Iterable[str]) -> dict:
    """Flattened params minus the ignored dotted names and everything below them."""
    prefixes = tuple(ignore)
    return {
        key: _hashable(value)
        for key, value in flat_items(params)
        if not any(key == p or key.startswith(p + ".") for p in prefixes)
    }


def splitOverParameter(results: Iterable[ResultLike], name: str) -> dict[Any, list[ResultLike]]:
    """Group results by their value of `name` (dotted), in first-seen order; no loads.

    Unhashable values are keyed by a hashable form: a list as a tuple (`[32, 32]` -> `(32, 32)`),
    a dict as a tuple of sorted (key, value) pairs. Results lacking `name` are left out.
    """
    groups: dict[Any, list[ResultLike]] = {}
    for result in results:
        value = _getDotted(result.params, name)
        if value is not _MISSING:
            groups.setdefault(_hashable(value), []).append(result)
    return groups


def sliceOverParameter(
    results: Iterable[ResultLike], result: ResultLike, name: str
) -> dict[Any, ResultLike]:
    """Results equal to `result` on every parameter but `name`, keyed by their `name`; no loads.

    Keys are hashable forms as in splitOverParameter; the first match per value is kept.
    """
    target = _withoutIgnored(result.params, [name])
    found: dict[Any, ResultLike] = {}
    for candidate in results:
        value = _getDotted(candidate.params, name)
        if value is _MISSING or _withoutIgnored(candidate.params, [name]) != target:
            continue
        found.setdefault(_hashable(value), candidate)
    return found


def find(
    results: Iterable[ResultLike], result: ResultLike, ignore: Iterable[str] = ()
) -> ResultLike | None:
    """The first result equal to `result` on all parameters except `ignore` (dotted); no loads."""
    ignored = list(ignore)
    target = _withoutIgnored(result.params, ignored)
    for candidate in results:
        if _withoutIgnored(candidate.params, ignored) == target:
            return candidate
    return None


def whereParameterEquals(
    results: Iterable[ResultLike], name: str, value: Any
) -> Iterator[ResultLike]:
    """Lazily keep results whose `name` (dotted) equals value; results lacking `name` pass."""
    wanted = _hashable(value)
    for result in results:
        have = _getDotted(result.params, name)
        if have is _MISSING or _hashable(have) == wanted:
            yield result


def whereParameterGreaterEq(
    results: Iterable[ResultLike], name: str, value: Any
) -> Iterator[ResultLike]:
    """Lazily keep results whose `name` (dotted) is >= value; results lacking `name` pass."""
    for result in results:
        have = _getDotted(result.params, name)
        if have is _MISSING or have >= value:
            yield result


def whereParametersEqual(results: Iterable[ResultLike], d: dict) -> Iterator[ResultLike]:
    """Lazily keep results equal to d on each of its (dotted or nested) keys; lacking ones pass."""
    for result in results:
        if _partialEqual(d, result.params):
            yield result


def _partialEqual(wanted: dict, params: dict) -> bool:
    for name, value in wanted.items():
        have = _getDotted(params, name)
        if have is _MISSING:
            continue
        if isinstance(value, dict) and isinstance(have, dict):
            if not _partialEqual(value, have):
                return False
        elif _hashable(have) != _hashable(value):
            return False
    return True


_PREFER = {"big": lambda a, b: a > b, "small": lambda a, b: a < b}


def getBest(
    results: Iterable[ResultLike],
    steps: int | None = None,
    percent: float | None = None,
    comparator: Callable[[float, float], bool] | None = None,
    prefer: str | None = None,
) -> ResultLike | None:
    """The permutation whose mean over runs, inside the window, wins `comparator(candidate, best)`.

    Default smallest; `prefer='big'|'small'` as in PyExpUtils' code. The window is the last
    `steps` entries of the mean curve, or the last ceil(percent * length) (at least one), or
    all of it. Missing results, empty data and NaN means are skipped; ties keep the earlier one.
    None if no result has data.
    """
    _checkWindow(steps, percent)
    if prefer is not None and comparator is not None:
        raise ValueError("give comparator or prefer, not both")
    if prefer is not None and prefer not in _PREFER:
        raise ValueError(f"prefer must be 'big' or 'small', got {prefer!r}")
    better = _PREFER[prefer] if prefer is not None else comparator or _PREFER["small"]
    best, bestMean = None, math.nan
    for result in results:
        mean = _windowMean(result, steps, percent)
        if mean is None or math.isnan(mean):
            continue
        if best is None or better(mean, bestMean):
            best, bestMean = result, mean
    return best


def _checkWindow(steps: int | None, percent: float | None) -> None:
    """Raise ValueError unless at most one of steps (>= 1) and percent (in (0, 1]) is given."""
    if steps is not None and percent is not None:
        raise ValueError("give steps or percent, not both")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if percent is not None and not 0 < percent <= 1:
        raise ValueError(f"percent must be in (0, 1], got {percent!r}")


def _windowMean(result: ResultLike, steps: int | None, percent: float | None) -> float | None:
    """The mean over runs, then over the window of steps; None if the result has no data."""
    import numpy as np

    curve = result.mean()
    if curve is None:
        return None
    array = np.atleast_1d(curve)
    if percent is not None:
        steps = max(1, math.ceil(len(array) * percent - 1e-9))
    window = array if steps is None else array[-steps:]
    return float(np.mean(window)) if window.size else None
