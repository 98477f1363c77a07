"""Parameter-sensitivity plots: mean over runs with stderr bands (matplotlib, optional)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pyexp.analysis.filters import _checkWindow, _comparator, _pickBest, splitOverParameter
from pyexp.analysis.results import _numeric

if TYPE_CHECKING:
    from pyexp.analysis.results import ResultLike


def plotSensitivity(
    results: Iterable[ResultLike],
    param: str,
    by: str | None = None,
    *,
    steps: int | None = None,
    percent: float | None = None,
    comparator: Callable[[float, float], bool] | None = None,
    prefer: str | None = None,
    ax: Any = None,
    logx: bool = False,
) -> Any:
    """Draw, per value of `param`, the mean over runs (inside the window) with a stderr band;
    one line per value of `by`. Where other parameters vary, each point is the best of them
    (as getBest picks). Values that are not numbers (lists, strings) are evenly spaced, in
    file order, labelled as they read. Returns the matplotlib Axes."""
    _checkWindow(steps, percent)
    try:
        import matplotlib.pyplot as plt  # lazy: only plots need it
    except ImportError:
        raise ImportError(
            "plotSensitivity needs matplotlib: pip install 'pyexp-utils[plot]'"
        ) from None
    import numpy as np  # lazy: importing pyexp stays numpy-free

    better = _comparator(comparator, prefer)
    results = list(results)
    xs = _axis(results, param, logx)
    ax = ax if ax is not None else plt.gca()
    lines = splitOverParameter(results, by) if by else {None: results}
    for value, group in lines.items():
        points = _points(splitOverParameter(group, param), xs, steps, percent, better)
        if not points:
            continue
        px, ys, errs = (np.asarray(column) for column in zip(*points, strict=True))
        label = None if by is None else f"{by}={_label(value)}"
        (line,) = ax.plot(px, ys, marker="o", label=label)
        ax.fill_between(px, ys - errs, ys + errs, color=line.get_color(), alpha=0.25)
    if any(x != position for x, position in xs.items()):
        ax.set_xticks(list(xs.values()), [_label(x) for x in xs])
    ax.set_xlabel(param)
    ax.set_ylabel("mean over runs" + ("" if steps is None and percent is None else " (window)"))
    if logx:
        ax.set_xscale("log")
    if by is not None:
        ax.legend()
    return ax


def _axis(results: list[ResultLike], param: str, logx: bool) -> dict[Any, Any]:
    """Each value of `param` -> its x position: itself if every value is a number, else its
    place in file order."""
    values = list(splitOverParameter(results, param))
    if all(isinstance(v, (int, float)) for v in values):
        return {v: v for v in sorted(values)}
    if logx:
        raise ValueError(f"logx needs numbers, but {param!r} takes other values: {values[0]!r}")
    return {v: position for position, v in enumerate(values)}


def _points(
    candidates_at: dict[Any, list[ResultLike]],
    xs: dict[Any, Any],
    steps: int | None,
    percent: float | None,
    better: Callable[[float, float], bool],
) -> list[tuple[Any, float, float]]:
    """(x position, mean, stderr) of the best result at each value that has data."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    points = []
    for x, position in xs.items():
        best = _pickBest(candidates_at.get(x, []), steps, percent, better)
        scores = None if best is None else _runScores(best, steps, percent)
        if scores is not None and scores.size:
            stderr = np.std(scores, ddof=1) / np.sqrt(scores.size) if scores.size > 1 else 0.0
            points.append((position, float(np.mean(scores)), float(stderr)))
    return points


def _label(value: Any) -> str:
    """A parameter value as it reads in the experiment file (a list, not its tuple key)."""
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _runScores(result: ResultLike, steps: int | None, percent: float | None) -> Any:
    """Each run's mean over the window of steps (runs first), NaN runs left out."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    data = _numeric(result.load(), result)
    if data is None:
        return None
    if data.ndim == 1:  # one number per run
        data = data[:, None]
    length = data.shape[1]
    if percent is not None:
        steps = max(1, math.ceil(length * percent - 1e-9))
    window = data if steps is None else data[:, -steps:]
    if not window.size:
        return np.array([])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = np.nanmean(window.reshape(len(window), -1), axis=1)
    return scores[~np.isnan(scores)]
