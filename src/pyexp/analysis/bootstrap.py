"""Best parameters with uncertainty: seeded percentile-bootstrap confidence intervals of the mean
over runs, and which settings cannot be told from the best at that confidence.

A setting's score per run is the mean of the run's curve over the window (the last `steps`, or
the last ceil(percent * length), or all of it), as getBest scores. Its interval resamples its runs
`samples` times; a setting is `tied` with the best when the interval of the difference of their
bootstrapped means (resampled independently) contains 0. One run gives a zero-width interval.
The same inputs and seed give the same answer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyexp.analysis.filters import _checkWindow
from pyexp.analysis.results import _numeric
from pyexp.errors import ResultsError

if TYPE_CHECKING:
    import pandas

    from pyexp.analysis.results import ResultLike


@dataclass(frozen=True)
class Ranked:
    """One setting's mean over runs, its confidence interval, and whether it ties the best."""

    result: Any  # the Result (rankResults) or the parameters as a dict (rankFrame)
    runs: int
    mean: float
    low: float
    high: float
    tied: bool


def rankResults(
    results: Iterable[ResultLike],
    prefer: str,
    steps: int | None = None,
    percent: float | None = None,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> list[Ranked]:
    """getBest with uncertainty: every result with data, best first (prefer 'big' or 'small'),
    each with its bootstrap interval and whether it cannot be told from the best."""
    ranked = rankedWithData(results, prefer, steps, percent, confidence, samples, seed)
    if not ranked:
        raise ResultsError("rank: no setting has data; have the runs saved it?")
    return ranked


def rankedWithData(
    results: Iterable[ResultLike],
    prefer: str,
    steps: int | None,
    percent: float | None,
    confidence: float,
    samples: int,
    seed: int,
) -> list[Ranked]:
    """rankResults, empty where no result has data (getBest says so in its own words)."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    _checkWindow(steps, percent)
    scored = [(r, s) for r in results if (s := runScores(r, steps, percent)) is not None]
    return _rank(np, [(r, s) for r, s in scored if s.size], prefer, confidence, samples, seed)


def rankFrame(
    frame: pandas.DataFrame,
    metric: str,
    prefer: str,
    steps: int | None = None,
    percent: float | None = None,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> pandas.DataFrame:
    """rankResults on a loadFrame DataFrame: one row per parameter setting, best first, with
    `runs`, `mean`, `low`, `high` and `tied` (cannot be told from the best)."""
    import numpy as np  # lazy: importing pyexp stays numpy-free
    import pandas as pd

    _checkWindow(steps, percent)
    names = [c for c in frame.columns if c not in ("run", "step", metric)]
    per_run = _windowed(frame, metric, names, steps, percent)
    groups = (
        per_run.groupby(names, dropna=False, sort=False, observed=True)
        if names
        else [((), per_run)]
    )
    scored = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        scores = group[metric].to_numpy(dtype=float)
        scores = scores[~np.isnan(scores)]
        if scores.size:
            scored.append((dict(zip(names, key, strict=True)), scores))
    ranked = _rank(np, scored, prefer, confidence, samples, seed)
    if not ranked:
        raise ResultsError("rank: no setting has data; have the runs saved it?")
    rows = [{**r.result, "runs": r.runs, "mean": r.mean, "low": r.low, "high": r.high,
             "tied": r.tied} for r in ranked]  # fmt: skip
    return pd.DataFrame(rows, columns=[*names, "runs", "mean", "low", "high", "tied"])


def _windowed(frame: Any, metric: str, names: list[str], steps: Any, percent: Any) -> Any:
    """Per (setting, run): the mean of the metric over the window of its steps."""
    keys = [*names, "run"]
    if "step" not in frame.columns:
        return frame[[*keys, metric]]
    length = frame.groupby(keys, dropna=False, observed=True)["step"].transform("max") + 1
    if steps is not None:
        start = length - steps
    elif percent is not None:
        start = length - (length * percent - 1e-9).apply(math.ceil).clip(lower=1)
    else:
        start = 0
    inside = frame[frame["step"] >= start]
    return (
        inside.groupby(keys, dropna=False, sort=False, observed=True)[metric].mean().reset_index()
    )


def runScores(result: ResultLike, steps: int | None, percent: float | None) -> Any:
    """Each run's mean over the window of steps (runs first), NaN runs left out; None: no data."""
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


def bootstrap_interval(
    scores: Any, confidence: float, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """The seeded percentile-bootstrap interval of the mean of scores."""
    import numpy as np  # lazy: importing pyexp stays numpy-free

    boot = _boot(np, scores, samples, np.random.default_rng(seed))
    return _interval(np, boot, confidence)


def _boot(np: Any, scores: Any, samples: int, rng: Any) -> Any:
    return scores[rng.integers(0, scores.size, (samples, scores.size))].mean(axis=1)


def _interval(np: Any, boot: Any, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def _rank(
    np: Any, scored: list, prefer: str, confidence: float, samples: int, seed: int
) -> list[Ranked]:
    if prefer not in ("big", "small"):
        raise ValueError(f"prefer must be 'big' or 'small', got {prefer!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not scored:
        return []
    rng = np.random.default_rng(seed)
    boots = [_boot(np, s, samples, rng) for _, s in scored]
    means = np.array([s.mean() for _, s in scored])
    order = np.argsort(-means if prefer == "big" else means, kind="stable")
    best = boots[order[0]]
    out = []
    for i in order:
        low, high = _interval(np, boots[i], confidence)
        d_low, d_high = _interval(np, boots[i] - best, confidence)
        item, scores = scored[i]
        tied = d_low <= 0 <= d_high
        out.append(Ranked(item, scores.size, float(means[i]), low, high, tied))
    return out
