"""Parameter-sensitivity plots: mean over runs with stderr or bootstrap bands (matplotlib,
optional)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pyexp.analysis.bootstrap import bootstrap_interval, runScores
from pyexp.analysis.filters import _checkWindow, _comparator, _pickBest, splitOverParameter

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
    band: str = "stderr",
    confidence: float = 0.95,
    seed: int = 0,
) -> Any:
    """Draw, per value of `param`, the mean over runs (inside the window) with a band (`stderr`,
    or `bootstrap`: the seeded bootstrap interval at `confidence`); one line per value of `by`.
    Where other parameters vary, each point is the best of them (as getBest picks). Values that
    are not numbers (lists, strings) are evenly spaced, in file order, labelled as they read.
    Returns the matplotlib Axes."""
    _checkWindow(steps, percent)
    if band not in ("stderr", "bootstrap"):
        raise ValueError(f"band must be 'stderr' or 'bootstrap', got {band!r}")
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
        candidates = splitOverParameter(group, param)
        points = _points(candidates, xs, steps, percent, better, (band, confidence, seed))
        if not points:
            continue
        px, ys, lows, highs = (np.asarray(column) for column in zip(*points, strict=True))
        label = None if by is None else f"{by}={_label(value)}"
        (line,) = ax.plot(px, ys, marker="o", label=label)
        ax.fill_between(px, lows, highs, color=line.get_color(), alpha=0.25)
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
    band: tuple[str, float, int],
) -> list[tuple[Any, float, float, float]]:
    """(x position, mean, band low, band high) of the best result at each value with data."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    points = []
    kind, confidence, seed = band
    for x, position in xs.items():
        best = _pickBest(candidates_at.get(x, []), steps, percent, better)
        scores = None if best is None else runScores(best, steps, percent)
        if scores is None or not scores.size:
            continue
        mean = float(np.mean(scores))
        if kind == "bootstrap":
            low, high = bootstrap_interval(scores, confidence, seed=seed)
        else:
            stderr = np.std(scores, ddof=1) / np.sqrt(scores.size) if scores.size > 1 else 0.0
            low, high = mean - stderr, mean + stderr
        points.append((position, mean, float(low), float(high)))
    return points


def _label(value: Any) -> str:
    """A parameter value as it reads in the experiment file (a list, not its tuple key)."""
    return str(list(value)) if isinstance(value, tuple) else str(value)
