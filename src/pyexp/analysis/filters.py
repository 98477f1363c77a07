"""Analysis over Results: filters by parameter, slices, and getBest by the mean over runs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pyexp.errors import ResultsError
from pyexp.sweep import flat_items

if TYPE_CHECKING:
    from pyexp.analysis.results import ResultLike

_MISSING: Any = object()


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
    results: Iterable[ResultLike], result: ResultLike | dict, ignore: Iterable[str] = ()
) -> ResultLike | None:
    """The first result equal to `result` (a Result, or a dict of parameters, nested or dotted)
    on all parameters except `ignore` (dotted); no loads."""
    ignored = list(ignore)
    target = _withoutIgnored(result if isinstance(result, dict) else result.params, ignored)
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
_warned_default = False


def getBest(
    results: Iterable[ResultLike],
    steps: int | None = None,
    percent: float | None = None,
    comparator: Callable[[float, float], bool] | None = None,
    prefer: str | None = None,
    ci: float | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> ResultLike:
    """The permutation whose mean over runs, inside the window, wins `comparator(candidate, best)`.

    Default smallest (warned once per process: PyExpUtils 3.2.3's code picked the biggest);
    `prefer='big'|'small'` as in PyExpUtils' code. The window is the last `steps` entries of the
    mean curve, or the last ceil(percent * length) (at least one), or all of it. Missing results,
    empty data and NaN means are skipped; ties keep the earlier one. ResultsError if no result
    has data.

    With `ci` (a confidence, e.g. 0.95) the pick is rankResults' best (the mean over runs of each
    run's windowed mean), and the result returned carries `.interval` (its seeded bootstrap
    interval, `bootstrap` resamples from `seed`), `.tied` (the other results that cannot be told
    from it at that confidence) and `.ranking` (rankResults' list, best first).
    """
    _checkWindow(steps, percent)
    better = _comparator(comparator, prefer)
    looked: list[ResultLike] = []
    if ci is not None:
        return _bestWithin(_remembered(results, looked), looked, steps, percent, comparator,
                           prefer, ci, bootstrap, seed)  # fmt: skip
    best = _pickBest(_remembered(results, looked), steps, percent, better)
    if best is None:
        raise ResultsError(_nothingLoaded(looked))
    return best


def _bestWithin(
    results: Iterable[ResultLike],
    looked: list[ResultLike],
    steps: int | None,
    percent: float | None,
    comparator: Callable[[float, float], bool] | None,
    prefer: str | None,
    ci: float,
    bootstrap: int,
    seed: int,
) -> ResultLike:
    """getBest with ci: rankResults' best, annotated with its interval and the settings tied."""
    from pyexp.analysis.bootstrap import rankedWithData  # lazy: it imports this module

    if comparator is not None:
        raise ValueError("getBest(ci=...) ranks by prefer='big' or 'small', not by a comparator")
    ranked = rankedWithData(results, prefer or "small", steps, percent, ci, bootstrap, seed)
    if not ranked:
        raise ResultsError(_nothingLoaded(looked))
    best = ranked[0].result
    best.interval = (ranked[0].low, ranked[0].high)
    best.tied = [r.result for r in ranked[1:] if r.tied]
    best.ranking = ranked
    return best


def _comparator(
    comparator: Callable[[float, float], bool] | None, prefer: str | None
) -> Callable[[float, float], bool]:
    """The comparator getBest uses; the default (smallest) is warned about once per process."""
    global _warned_default
    if prefer is not None and comparator is not None:
        raise ValueError("give comparator or prefer, not both")
    if prefer is not None and prefer not in _PREFER:
        raise ValueError(f"prefer must be 'big' or 'small', got {prefer!r}")
    if prefer is None and comparator is None and not _warned_default:
        _warned_default = True
        warnings.warn(
            "getBest picks the smallest mean (as PyExpUtils' README says; PyExpUtils 3.2.3's "
            "code picked the biggest): pass prefer='small' or prefer='big' to say which",
            UserWarning,
            stacklevel=3,
        )
    return _PREFER[prefer] if prefer is not None else comparator or _PREFER["small"]


def _remembered(results: Iterable[ResultLike], looked: list[ResultLike]) -> Iterator[ResultLike]:
    """The results, each appended to `looked` as it is seen."""
    for result in results:
        looked.append(result)
        yield result


def _nothingLoaded(looked: list[ResultLike]) -> str:
    """One line: getBest found no data among these results, and where it looked."""
    if not looked:
        return "getBest: no results given (is the sweep empty, or a filter too strict?)"
    where = looked[0].path
    return (
        f"getBest: no result could be loaded from {len(looked)} permutation(s), e.g. {where}; "
        "have the runs written it? (pyexp-status shows what is done)"
    )


def _pickBest(
    results: Iterable[ResultLike],
    steps: int | None,
    percent: float | None,
    better: Callable[[float, float], bool],
) -> ResultLike | None:
    """The result whose window mean wins `better`, or None if no result has data."""
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
    import numpy as np  # lazy: importing pyexp stays numpy-free

    curve = result.mean()
    if curve is None:
        return None
    array = np.atleast_1d(curve)
    if percent is not None:
        steps = max(1, math.ceil(len(array) * percent - 1e-9))
    window = array if steps is None else array[-steps:]
    return float(np.mean(window)) if window.size else None
