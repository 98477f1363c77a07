"""Differential tests: what PyExpUtils 3.2.3 reads and writes, pyexp reads the same way."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pyexputils_ref as ref
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pyexp import ExperimentDescription, ResultsError, getBest, loadResults
from pyexp.config import load_config
from pyexp.experiment import paramsString

KEYS = st.sampled_from(["a", "b", "lr", "x_y", "Z", "units"])
SCALARS = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(alphabet="pqr", max_size=2),
)
LITERALS = st.lists(SCALARS, min_size=1, max_size=3)  # a list inside a sweep list: one value


def _values() -> st.SearchStrategy:
    return st.one_of(SCALARS, st.lists(st.one_of(SCALARS, LITERALS), min_size=1, max_size=3))


def _arrays(depth: int) -> st.SearchStrategy:
    """A fixed array of structures. Its elements hold no plain nested dict: PyExpUtils 3.2.3
    drops such a dict's key (set_at_path), a difference the README lists."""
    inner = _values() if depth == 0 else st.one_of(_values(), _arrays(depth - 1))
    return st.lists(st.dictionaries(KEYS, inner, min_size=1, max_size=3), min_size=1, max_size=3)


def pyexputils_dicts(depth: int) -> st.SearchStrategy:
    """metaParameters in the syntax PyExpUtils reads: constants, sweeps, nested dicts, arrays."""
    value = _values()
    if depth > 0:
        value = st.one_of(value, pyexputils_dicts(depth - 1).filter(bool), _arrays(depth - 1))
    return st.dictionaries(KEYS, value, max_size=4)


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=pyexputils_dicts(2))
def test_permutations_and_params_strings_equal_pyexputils(meta):
    n = ref.numPermutations(meta)
    assume(n <= 300)
    exp = ExperimentDescription({"name": "diff", "metaParameters": copy.deepcopy(meta)})
    assert exp.numPermutations() == n
    theirs = [ref.getPermutation(meta, i) for i in range(n)]
    ours = [exp.getPermutation(i) for i in range(n)]
    assert sorted(map(canonical, ours)) == sorted(map(canonical, theirs))
    assert sorted(map(paramsString, ours)) == sorted(map(ref.hyphenatedStringify, theirs))
    by_params = {canonical(p): paramsString(p) for p in ours}
    for params in theirs:  # the same permutation gets the same folder, byte for byte
        assert by_params[canonical(params)] == ref.hyphenatedStringify(params)


def test_pyexputils_own_ann_sweep():
    # PyExpUtils' tests/sweeps/ann.json shape: a two-layer list whose first layer sweeps.
    meta = {"layers": [{"units": [10, 100, 1000], "act": "relu"}, {"units": 32, "act": "relu"}]}
    exp = ExperimentDescription({"name": "ann", "metaParameters": meta})
    assert exp.numPermutations() == ref.numPermutations(meta) == 3
    assert exp.interpolateSavePath(2, key="{params}") == (
        "layers.[0].act-relu_layers.[0].units-1000_layers.[1].act-relu_layers.[1].units-32"
    )


@settings(max_examples=200, deadline=None)
@given(meta=pyexputils_dicts(2))
def test_reference_matches_the_real_pyexputils_when_installed(meta):
    permute = pytest.importorskip("PyExpUtils.utils.permute")
    pdict = pytest.importorskip("PyExpUtils.utils.dict")
    sweeps = {"metaParameters": meta}
    n = permute.getNumberOfPermutations(sweeps)
    assume(n <= 100)
    assert n == ref.numPermutations(meta)
    for i in range(n):
        theirs = permute.getParameterPermutation(copy.deepcopy(sweeps), i).get("metaParameters", {})
        assert theirs == ref.getPermutation(meta, i)
        assert pdict.hyphenatedStringify(theirs) == ref.hyphenatedStringify(theirs)


# ---------------------------------------------------------------- PyExpUtils' CSV results

SWEEP = {"name": "csv", "metaParameters": {"alpha": [0.1, 0.5], "layers": [{"units": [8, 16]}]}}


def _csv_experiment(tmp_path, d=SWEEP) -> ExperimentDescription:
    config = json.dumps({"save_path": "results/{name}"})  # PyExpUtils CSV: one file for all
    (tmp_path / "config.json").write_text(config)
    return ExperimentDescription(
        copy.deepcopy(d), config=load_config(str(tmp_path / "config.json"))
    )


def _write_rows(path: str, rows: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.writelines(rows)


def test_pyexputils_csv_results_load_by_parameter_columns_and_run(tmp_path):
    exp = _csv_experiment(tmp_path)
    path = str(tmp_path / "results/csv/returns.csv")
    rows = []
    for p in range(4):
        params = exp.getPermutation(p)
        for run in (1, 0, 2):  # appended in any order, as array tasks finish
            rows.append(ref.csvRow(params, run, [p * 10 + run, p * 10 + run + 0.5]))
    _write_rows(path, rows)
    results = list(loadResults(exp, "returns.csv"))
    assert [r.runs() for r in results] == [3, 3, 3, 3]
    for p, r in enumerate(results):
        np.testing.assert_array_equal(r.load()[:, 0], [p * 10, p * 10 + 1, p * 10 + 2])
        np.testing.assert_allclose(r.mean(), [p * 10 + 1, p * 10 + 1.5])
    assert getBest(results, prefer="big").idx == 3
    assert [r.runs() for r in loadResults(exp, "returns.csv", runs=2)] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("other", "match"),
    [
        ({"layers": [{"units": [8, 16]}]}, r"returns\.csv: no row's parameter columns \(layers"),
        (
            {"alpha": [0.1], "gamma": 0.9, "layers": [{"units": [8]}]},
            r"returns\.csv:1: not a PyExpUtils results row.*'1\.0', not a run number",
        ),
        ({"alpha": [0.2, 0.3], "layers": [{"units": [8, 16]}]}, r"no row's parameter columns"),
    ],
)
def test_csv_of_another_experiment_is_a_clear_error(tmp_path, other, match):
    exp = _csv_experiment(tmp_path)
    path = str(tmp_path / "results/csv/returns.csv")
    _write_rows(path, [ref.csvRow(exp.getPermutation(p), 0, [1.0, 2.0]) for p in range(4)])
    changed = _csv_experiment(tmp_path, {"name": "csv", "metaParameters": other})
    with pytest.raises(ResultsError, match=match) as err:
        next(loadResults(changed, "returns.csv")).load()
    assert "\n" not in str(err.value)
