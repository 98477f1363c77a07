"""loadFrame: an experiment's stored metric as a pandas DataFrame (the optional [frame] extra).

Rows are the completed (parameters, run) of the store (a record whose completion record is
missing is left out: its index is not done), filtered by parameter before any data is decoded.
Reads never write: a read-only store loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyexp.analysis.filters import _partialEqual
from pyexp.errors import ResultsError
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords
from pyexp.state.store import Record, latest
from pyexp.sweep import flat_items

if TYPE_CHECKING:
    import pandas

    from pyexp.experiment import ExperimentDescription


def stored(exp: ExperimentDescription, metric: str, where: dict | None = None) -> list[Record]:
    """The latest record of each completed (params, run) of exp holding metric and matching
    where (as whereParametersEqual), ordered by parameters, then run."""
    dirs = state_dirs(exp)
    done = CompletionRecords(dirs.done).completed(compact=False)
    records = latest(dirs.store, done)
    chosen = [
        r
        for r in records.values()
        if r.metric(metric) is not None and (not where or _partialEqual(where, r.meta["params"]))
    ]
    return sorted(chosen, key=lambda r: (r.meta["key"].rsplit("-", 1)[0], r.meta["run"]))


def loadFrame(
    exp: ExperimentDescription, metric: str, where: dict | None = None
) -> pandas.DataFrame:
    """One row per (parameters, run[, step]) of metric: a column per parameter (dotted names),
    `run`, `step` for curves, and the metric. where: only these parameter values (dotted or
    nested keys, equal as in whereParametersEqual), chosen before any data is decoded."""
    try:
        import pandas as pd  # lazy: an optional extra
    except ImportError:
        raise ImportError("loadFrame needs pandas: pip install 'pyexp-utils[frame]'") from None
    import numpy as np  # lazy: importing pyexp stays numpy-free

    records = stored(exp, metric, where)
    arrays = [_array(np, r, metric) for r in records]
    if not arrays:
        return pd.DataFrame({"run": np.array([], dtype=np.int64), metric: np.array([])})
    curves = any(a.ndim for a in arrays)
    lengths = np.array([a.size for a in arrays])
    columns: dict[str, Any] = {
        name: np.repeat(_column(np, values), lengths) for name, values in _params(records).items()
    }
    runs = np.array([r.meta["run"] for r in records], dtype=np.int32)  # int32: half the traffic
    columns["run"] = np.repeat(runs, lengths)
    if curves:
        columns["step"] = _steps(np, lengths)
    columns[metric] = np.concatenate([a.reshape(-1) for a in arrays])
    return pd.DataFrame(columns, copy=False)


def _array(np: Any, record: Record, metric: str) -> Any:
    dtype, shape, data = record.metric(metric)
    if len(shape) > 1:
        raise ResultsError(
            f"metric {metric!r} of {record.meta['key']} has shape {tuple(shape)}: loadFrame "
            "takes scalars and curves; load it with loadResults(exp, name)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _params(records: list[Record]) -> dict[str, list]:
    """Per dotted parameter name, its value in each record (None where a record lacks it)."""
    flats = [dict(flat_items(r.meta["params"])) for r in records]
    names = sorted({name for flat in flats for name in flat})
    return {name: [flat.get(name) for flat in flats] for name in names}


def _column(np: Any, values: list) -> Any:
    kinds = {type(v) for v in values}
    if len(kinds) == 1 and kinds <= {int, float, bool, str}:
        return np.array(values)
    out = np.empty(len(values), dtype=object)  # mixed, lists (as tuples), or absent (None)
    out[:] = [tuple(v) if isinstance(v, list) else v for v in values]
    return out


def _steps(np: Any, lengths: Any) -> Any:
    if (lengths == lengths[0]).all():
        return np.tile(np.arange(lengths[0], dtype=np.int32), len(lengths))
    return np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
