"""Analysis side: lazy, cached Result objects over an experiment's saved files, and filters."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pyexp.sweep import flatten

if TYPE_CHECKING:
    from typing import TypeAlias

    from pyexp.context import FileSystemContext
    from pyexp.experiment import ExperimentDescription

    ResultLike: TypeAlias = "Result | ResultView"

logger = logging.getLogger("pyexp.results")

Loader = Callable[[str], Any]
_BUILTIN_SUFFIXES = (".npy", ".npz", ".csv")
_MISSING: Any = object()
_UNLOADED: Any = object()


class _ResultBase:
    """What Result and ResultView share: identity attributes delegate, reducer chains."""

    @property
    def path(self) -> str:
        """The file this result reads."""
        raise NotImplementedError

    @property
    def params(self) -> dict:
        """The permutation's metaParameters, nested."""
        raise NotImplementedError

    def load(self) -> Any:
        """The data, or None if the file is missing or unreadable."""
        raise NotImplementedError

    def reducer(self, fn: Callable[[Any], Any]) -> ResultView:
        """A view whose load() gives fn(this result's data); None stays None."""
        return ResultView(self, fn)


class Result(_ResultBase):
    """One index's result file: nothing is read until load(), which reads once and caches."""

    def __init__(
        self,
        exp: ExperimentDescription,
        idx: int,
        filename: str,
        loader: Loader | None = None,
        base: str = "",
    ) -> None:
        _checkLoadable(filename, loader)
        self.exp = exp
        self.idx = idx
        self.filename = filename
        self._loader = loader
        self._base = base
        self._data: Any = _UNLOADED

    @cached_property
    def path(self) -> str:
        """The file's path in this index's save folder."""
        context: FileSystemContext = self.exp.buildSaveContext(self.idx, base=self._base)
        return context.resolve(self.filename)

    @cached_property
    def params(self) -> dict:
        """The permutation's metaParameters, nested."""
        return self.exp.getPermutation(self.idx)

    @cached_property
    def run(self) -> int:
        """Which repetition of the permutation this index is."""
        return self.exp.getRun(self.idx)

    def load(self) -> Any:
        """The data, read on first call and cached (None, logged once, if missing/unreadable)."""
        if self._data is _UNLOADED:
            self._data = _readOrWarn(self.path, self.idx, self._loader)
        return self._data

    def __repr__(self) -> str:
        return f"Result(idx={self.idx}, path={self.path!r})"


class ResultView(_ResultBase):
    """A Result seen through fn: same attributes, load() gives fn(parent data)."""

    def __init__(self, parent: ResultLike, fn: Callable[[Any], Any]) -> None:
        self._parent = parent
        self._fn = fn

    @property
    def path(self) -> str:
        """The underlying result's file path."""
        return self._parent.path

    @property
    def params(self) -> dict:
        """The underlying result's parameters."""
        return self._parent.params

    @property
    def idx(self) -> int:
        """The underlying result's index."""
        return self._parent.idx

    @property
    def run(self) -> int:
        """The underlying result's run."""
        return self._parent.run

    @property
    def exp(self) -> ExperimentDescription:
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
    runs: int = 1,
    *,
    loader: Loader | None = None,
    base: str = "",
) -> Iterator[Result]:
    """A lazy iterator of one Result per index 0 .. numPermutations*runs - 1; opens no file.

    `.npy`, `.npz` and `.csv` load with numpy; any other suffix needs `loader(path) -> data`
    (a given loader is used for every suffix). A suffix with no loader is a ValueError here.
    """
    _checkLoadable(filename, loader)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    total = exp.numPermutations() * runs
    return (Result(exp, idx, filename, loader, base) for idx in range(total))


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


def _readOrWarn(path: str, idx: int, loader: Loader | None) -> Any:
    """The file's data, or None after one warning if it is missing or cannot be read."""
    try:
        return loader(path) if loader is not None else _readBuiltin(path)
    except FileNotFoundError:
        logger.warning("result missing for index %d: no file %s", idx, path)
    except Exception as e:  # an unreadable file counts as missing: analysis never crashes
        logger.warning(
            "result unreadable for index %d: %s (%s: %s)", idx, path, type(e).__name__, e
        )
    return None


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


def _getDotted(params: dict, name: str, default: Any = _MISSING) -> Any:
    """params['a']['b'] for 'a.b', or default if any part is absent."""
    node: Any = params
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
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
        for key, value in flatten(params).items()
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

    Keys are hashable forms as in splitOverParameter. With several runs, the first result
    (lowest index) per value is kept.
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


def getBest(
    results: Iterable[ResultLike],
    steps: int | None = None,
    percent: float | None = None,
    comparator: Callable[[float, float], bool] = lambda a, b: a < b,
) -> ResultLike | None:
    """The result whose windowed mean wins `comparator(candidate, best)`; default smallest.

    The window is the last `steps` entries along axis 0, or the last ceil(percent * length)
    (at least one), or everything; the mean is over every value in it (1-D or 2-D data).
    Missing results (None), empty data and NaN means are skipped; ties keep the earlier one.
    None if no result has data.
    """
    _checkWindow(steps, percent)
    best, bestMean = None, math.nan
    for result in results:
        mean = _windowMean(result, steps, percent)
        if mean is None or math.isnan(mean):
            continue
        if best is None or comparator(mean, bestMean):
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
    """The mean of the result's data over the window, or None if it has no data."""
    import numpy as np

    data = result.load()
    if data is None:
        return None
    try:
        array = np.atleast_1d(np.asarray(data, dtype=float))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"getBest needs numeric array data, got {type(data).__name__} for {result!r}; "
            "pick an array with .reducer(...)"
        ) from e
    if percent is not None:
        steps = max(1, math.ceil(len(array) * percent - 1e-9))
    window = array if steps is None else array[-steps:]
    return float(np.mean(window)) if window.size else None
