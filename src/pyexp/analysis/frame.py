"""loadFrame: an experiment's stored metric as a pandas (the optional [frame] extra) or polars
([polars]) DataFrame.

Rows are the completed (parameters, run) of the store (a record whose completion record is
missing is left out: its index is not done), filtered by parameter before any data is read
where the store's files are indexed. Columns are built from numpy arrays, never row by row:
the metric is one concatenation of the runs' arrays, a parameter column repeats each run's value
(numbers as numbers; strings, lists and parameters some settings lack as categories), `run` and
`step` are int32. Reads never write: a read-only store loads.
"""

from __future__ import annotations

from dataclasses import dataclass
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

BACKENDS = ("pandas", "polars")


def stored(exp: ExperimentDescription, metric: str, where: dict | None = None) -> list[Record]:
    """The latest record of each completed (params, run) of exp holding metric and matching
    where (as whereParametersEqual), ordered by parameters, then run."""
    dirs = state_dirs(exp)
    done = CompletionRecords(dirs.done).completed(compact=False)
    match = (lambda params: _partialEqual(where, params)) if where else None
    records = latest(dirs.store, done, match)
    chosen = [r for r in records.values() if r.metric(metric) is not None]
    return sorted(chosen, key=lambda r: (_setting(r), r.meta["run"]))


def loadFrame(
    exp: ExperimentDescription, metric: str, where: dict | None = None, backend: str = "pandas"
) -> Any:
    """One row per (parameters, run[, step]) of metric: a column per parameter (dotted names),
    `run`, `step` for curves, and the metric. where: only these parameter values (dotted or
    nested keys, equal as in whereParametersEqual), chosen before data is read. backend:
    'pandas' (a pandas.DataFrame) or 'polars' (a polars.DataFrame)."""
    if backend not in BACKENDS:
        raise ValueError(f"loadFrame: backend must be one of {BACKENDS}, got {backend!r}")
    module = _backend(backend)
    import numpy as np  # lazy: importing pyexp stays numpy-free

    columns = frame_columns(np, stored(exp, metric, where), metric)
    return _to_pandas(module, columns) if backend == "pandas" else _to_polars(module, columns)


def _backend(name: str) -> Any:
    try:
        return __import__(name)  # lazy: an optional extra
    except ImportError:
        extra = "frame" if name == "pandas" else name
        raise ImportError(
            f"loadFrame(backend={name!r}) needs {name}: pip install 'pyexp-utils[{extra}]'"
        ) from None


@dataclass(frozen=True)
class Categories:
    """A column as codes (int, -1 where absent) into values: one entry per row."""

    codes: Any
    values: list


def frame_columns(np: Any, records: list[Record], metric: str) -> dict[str, Any]:
    """The frame's columns (numpy arrays, or Categories) from records of metric."""
    arrays = [_array(np, r, metric) for r in records]
    if not arrays:
        return {"run": np.array([], dtype=np.int64), metric: np.array([])}
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    settings, codes = _settings(records)
    columns: dict[str, Any] = {
        name: _repeat(np, column, codes, lengths) for name, column in _params(np, settings).items()
    }
    runs = np.fromiter((r.meta["run"] for r in records), dtype=np.int32, count=len(records))
    columns["run"] = np.repeat(runs, lengths)  # int32: half the traffic of int64
    if any(a.ndim for a in arrays):
        columns["step"] = _steps(np, lengths)
    columns[metric] = np.concatenate([a.reshape(-1) for a in arrays])
    return columns


def _setting(record: Record) -> str:
    """The record's setting: its key without the run (the key is the params' hash, then run)."""
    return record.meta["key"].rpartition("-")[0]


def _settings(records: list[Record]) -> tuple[list[dict], list[int]]:
    """The distinct params of records (in order of first sight) and each record's position."""
    seen: dict[str, int] = {}
    settings, codes = [], []
    for record in records:
        setting = _setting(record)
        if setting not in seen:
            seen[setting] = len(settings)
            settings.append(record.meta["params"])
        codes.append(seen[setting])
    return settings, codes


def _array(np: Any, record: Record, metric: str) -> Any:
    dtype, shape, data = record.metric(metric)
    if len(shape) > 1:
        raise ResultsError(
            f"metric {metric!r} of {record.meta['key']} has shape {tuple(shape)}: loadFrame "
            "takes scalars and curves; load it with loadResults(exp, name)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


_ABSENT = object()


def _params(np: Any, settings: list[dict]) -> dict[str, Any]:
    """Per dotted parameter name, its value in each setting: a numpy array of numbers, or
    Categories (strings, lists as tuples, mixed kinds, or absent in some settings)."""
    flats = [dict(flat_items(params)) for params in settings]
    names = sorted({name for flat in flats for name in flat})
    return {name: _column(np, [flat.get(name, _ABSENT) for flat in flats]) for name in names}


def _column(np: Any, values: list) -> Any:
    kinds = {type(v) for v in values}
    if kinds in ({int}, {float}, {bool}, {int, float}):
        return np.array(values)
    keys = [tuple(v) if isinstance(v, list) else v for v in values]
    index: dict = {}
    for key in keys:
        if key is not _ABSENT:
            index.setdefault((type(key), key), len(index))  # 1 and True stay apart
    codes = [-1 if k is _ABSENT else index[(type(k), k)] for k in keys]
    return Categories(np.array(codes, dtype=np.int32), [k for _, k in index])


def _repeat(np: Any, column: Any, codes: list[int], lengths: Any) -> Any:
    """A setting column repeated out to one entry per row."""
    at = np.array(codes, dtype=np.int64)
    if isinstance(column, Categories):
        return Categories(np.repeat(column.codes[at], lengths), column.values)
    return np.repeat(column[at], lengths)


def _steps(np: Any, lengths: Any) -> Any:
    if (lengths == lengths[0]).all():
        return np.tile(np.arange(lengths[0], dtype=np.int32), len(lengths))
    return np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])


def _to_pandas(pd: Any, columns: dict[str, Any]) -> pandas.DataFrame:
    out = {}
    for name, column in columns.items():
        if isinstance(column, Categories):
            column = _pandas_categories(pd, column)
        out[name] = column
    return pd.DataFrame(out, copy=False)


def _pandas_categories(pd: Any, column: Categories) -> Any:
    """A Categorical (NaN where absent); objects where values compare equal (1 and True)."""
    index = pd.Index(column.values, dtype=object, tupleize_cols=False)
    if index.is_unique:
        return pd.Categorical.from_codes(column.codes, index)
    import numpy as np

    values = np.empty(len(column.values) + 1, dtype=object)  # codes of -1 pick the last: None
    for i, value in enumerate(column.values):
        values[i] = value  # one by one: a tuple stays one value
    return values[column.codes]


def _to_polars(pl: Any, columns: dict[str, Any]) -> Any:
    out = {}
    for name, column in columns.items():
        if isinstance(column, Categories):
            column = _polars_categories(pl, column)
        out[name] = column
    return pl.DataFrame(out)


def _polars_categories(pl: Any, column: Categories) -> Any:
    """A polars column of the categories' values (null where absent), Categorical for strings."""
    codes = pl.Series(column.codes).replace(-1, None)
    if all(isinstance(v, str) for v in column.values):
        values = pl.Series(column.values, dtype=pl.String)
        return values.gather(codes).cast(pl.Categorical)
    values = pl.Series(column.values, dtype=pl.Object)
    return values.gather(codes)
