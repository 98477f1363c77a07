"""Results API: lazy, cached loading, reducers, filters and getBest."""

from __future__ import annotations

import builtins
import logging
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pyexp.analysis import filters as analysis
from pyexp.analysis.filters import (
    find,
    getBest,
    sliceOverParameter,
    splitOverParameter,
    whereParameterEquals,
    whereParameterGreaterEq,
)
from pyexp.analysis.results import Result, ResultView, loadResults
from pyexp.config import load_config
from pyexp.errors import ResultsError
from pyexp.experiment import ExperimentDescription

SWEEP = {
    "name": "results-test",
    "agent": "SARSA",
    "metaParameters": {
        "alpha": [1.0, 0.5, 0.25, 0.125],
        "optimizer": {"name": "adam", "beta": [0.9, 0.99]},
        "hidden": [[32, 32]],
    },
}
CONDITIONAL = {
    "name": "conditional",
    "agent": "SARSA",
    "metaParameters": {
        "alpha": [1.0, 0.5],
        "features": {"$choice": [{"kind": "tiles", "tiles": [8, 16]}, {"kind": "raw"}]},
        "hidden": [[32, 32], [64]],
    },
}


def _experiment(tmp_path, d: dict = SWEEP) -> ExperimentDescription:
    return ExperimentDescription(d, config=load_config(None, cwd=str(tmp_path)))


def _index(exp: ExperimentDescription, params: dict) -> int:
    """The permutation index whose params equal params."""
    matches = [i for i in range(exp.numPermutations()) if exp.getPermutation(i) == params]
    assert len(matches) == 1, params
    return matches[0]


def _save(result: Result, data, tmp_path) -> None:
    """Write data at result.path in the format its suffix says."""
    assert result.path.startswith(str(tmp_path))
    os.makedirs(os.path.dirname(result.path), exist_ok=True)
    if result.path.endswith(".npy"):
        np.save(result.path, np.asarray(data))
    elif result.path.endswith(".npz"):
        np.savez(result.path, **data)
    elif result.path.endswith(".csv"):
        np.savetxt(result.path, np.asarray(data), delimiter=",")
    else:
        with open(result.path, "wb") as f:
            pickle.dump(data, f)


def _pickleLoader(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.fixture
def exp(tmp_path) -> ExperimentDescription:
    return _experiment(tmp_path)


@pytest.fixture
def counters(monkeypatch) -> dict[str, int]:
    """Count calls to builtins.open, os.stat and numpy.load from here on."""
    counts = {"open": 0, "stat": 0, "np.load": 0}

    def counting(key, fn):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", counting("open", builtins.open))
    monkeypatch.setattr(os, "stat", counting("stat", os.stat))
    monkeypatch.setattr(np, "load", counting("np.load", np.load))
    return counts


# --- loadResults and Result ----------------------------------------------------------------


def test_loadResults_yields_one_result_per_permutation_with_its_runs(exp, tmp_path):
    results = list(loadResults(exp, "returns.npy", runs=2))
    assert [r.idx for r in results] == list(range(8))
    for r in results:
        assert r.exp is exp
        assert r.params == exp.getPermutation(r.idx)
        assert r.path == exp.buildSaveContext(r.idx).resolve("returns.npy")
        assert r.paths() == [r.path, exp.buildSaveContext(r.idx + 8).resolve("returns.npy")]
        assert r.path.startswith(str(tmp_path))
    assert len({p for r in results for p in r.paths()}) == 16


def test_loadResults_is_lazy_and_opens_no_file(exp, counters):
    results = loadResults(exp, "returns.npy", runs=3)
    assert iter(results) is results
    touched = [(r.path, r.params, r.paths()) for r in results]
    assert len(touched) == 8
    assert counters == {"open": 0, "stat": 0, "np.load": 0}
    assert not os.path.exists(os.path.dirname(touched[0][0]))


def test_loadResults_rejects_unknown_suffix_without_loader(exp):
    with pytest.raises(ValueError, match="loader"):
        loadResults(exp, "returns.pkl")
    with pytest.raises(ValueError, match="runs"):
        loadResults(exp, "returns.npy", runs=0)


def test_import_does_not_import_numpy():
    code = "import sys, pyexp.analysis.results; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("returns.npy", np.arange(6.0).reshape(3, 2)),
        ("returns.csv", np.arange(6.0).reshape(3, 2)),
        ("returns.npz", {"returns": np.arange(3.0), "steps": np.array([1, 2, 3])}),
    ],
)
def test_load_reads_builtin_formats(exp, tmp_path, filename, data):
    result = next(loadResults(exp, filename))
    _save(result, data, tmp_path)
    loaded = result.load()
    if isinstance(data, dict):
        assert isinstance(loaded, dict) and set(loaded) == set(data)
        for key in data:
            np.testing.assert_array_equal(loaded[key], [data[key]])
    else:
        np.testing.assert_array_equal(loaded, [data])  # runs first


def test_load_uses_the_given_loader(exp, tmp_path):
    result = list(loadResults(exp, "returns.pkl", loader=_pickleLoader))[3]
    _save(result, {"curve": [1, 2, 3]}, tmp_path)
    np.testing.assert_array_equal(result.load()["curve"], [[1, 2, 3]])


def test_load_reads_once_and_caches(exp, tmp_path, counters):
    result = next(loadResults(exp, "returns.npy"))
    _save(result, [1.0, 2.0, 3.0], tmp_path)
    first = result.load()
    os.remove(result.path)
    assert result.load() is first
    np.testing.assert_array_equal(first, [[1.0, 2.0, 3.0]])
    assert counters["np.load"] == 1


def test_missing_file_gives_none_and_logs_once(exp, caplog):
    result = list(loadResults(exp, "returns.npy", runs=1))[5]
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        assert result.load() is None
        assert result.load() is None
    records = [r for r in caplog.records if r.name == "pyexp.results"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert result.path in records[0].getMessage()
    assert "1 run(s) missing (0)" in records[0].getMessage()


@pytest.mark.parametrize("filename", ["returns.npy", "returns.npz", "returns.csv"])
def test_corrupt_file_gives_none_and_logs_once(exp, tmp_path, caplog, filename):
    result = next(loadResults(exp, filename))
    os.makedirs(os.path.dirname(result.path))
    with open(result.path, "wb") as f:
        f.write(b"\x00\x01 not a result")
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        assert result.load() is None
        assert result.load() is None
    records = [r for r in caplog.records if r.name == "pyexp.results"]
    assert len(records) == 1
    assert result.path in records[0].getMessage()


def test_failing_loader_gives_none_not_an_exception(exp, tmp_path, caplog):
    def broken(path):
        raise EOFError("truncated")

    result = next(loadResults(exp, "returns.pkl", runs=1, loader=broken))
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        assert result.load() is None
    assert "truncated" in caplog.text


# --- reducer ---------------------------------------------------------------------------------


def test_reducer_chains_over_the_base_cache(exp, tmp_path, counters):
    result = list(loadResults(exp, "returns.npy"))[2]
    _save(result, [1.0, 2.0, 3.0], tmp_path)
    doubled = result.reducer(lambda a: a * 2)
    total = doubled.reducer(np.sum)
    assert isinstance(doubled, ResultView) and isinstance(total, ResultView)
    assert total.load() == 12.0
    np.testing.assert_array_equal(doubled.load(), [[2.0, 4.0, 6.0]])
    np.testing.assert_array_equal(result.load(), [[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(doubled.mean(), [2.0, 4.0, 6.0])
    assert counters["np.load"] == 1
    for attr in ("path", "params", "idx", "exp"):
        assert getattr(total, attr) == getattr(result, attr)


def test_reducer_is_not_applied_to_missing_data(exp):
    def explode(data):
        raise AssertionError("fn called on missing data")

    view = next(loadResults(exp, "returns.npy")).reducer(explode).reducer(explode)
    assert view.load() is None


# --- getBest ---------------------------------------------------------------------------------

CURVES = {  # alpha -> curve, all with optimizer.beta 0.9; other permutations stay missing
    1.0: [9, 9, 0, 0, 0],  # mean all 3.6, last 3 0.0, last 1 0
    0.5: [0, 0, 0, 0, 5],  # mean all 1.0, last 3 1.67, last 1 5
    0.25: [2, 2, 2, 2, 2],  # mean 2 everywhere
    0.125: [0, 0, 9, 9, -1],  # mean all 3.4, last 3 5.67, last 1 -1
}


@pytest.fixture
def curves(exp, tmp_path) -> list[Result]:
    results = list(loadResults(exp, "returns.npy"))
    for alpha, curve in CURVES.items():
        params = {"alpha": alpha, "hidden": [32, 32], "optimizer": {"beta": 0.9, "name": "adam"}}
        _save(results[_index(exp, params)], np.asarray(curve, dtype=float), tmp_path)
    return results


def _alpha(result) -> float:
    return result.params["alpha"]


def test_getBest_windows_and_comparator(curves):
    assert _alpha(getBest(curves)) == 0.5
    assert _alpha(getBest(curves, steps=1)) == 0.125
    assert _alpha(getBest(curves, percent=0.6)) == 1.0  # ceil(0.6 * 5) = 3 steps
    assert _alpha(getBest(curves, percent=0.3)) == 1.0  # ceil(1.5) = 2 steps, not 1
    assert _alpha(getBest(curves, percent=0.2)) == 0.125  # exactly 1 step
    assert _alpha(getBest(curves, percent=1.0)) == 0.5
    assert _alpha(getBest(curves, comparator=lambda a, b: a > b)) == 1.0
    assert _alpha(getBest(curves, steps=1, comparator=lambda a, b: a > b)) == 0.5


def test_getBest_skips_missing_and_says_where_it_looked_when_all_missing(exp, curves, caplog):
    missing = [r for r in curves if r.params["optimizer"]["beta"] == 0.99]
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        with pytest.raises(ResultsError) as none:
            getBest(missing)
        # a missing result first must not become the best
        assert _alpha(getBest(missing + curves)) == 0.5
    assert len(caplog.records) == 4
    said = str(none.value)
    assert "\n" not in said and "no result could be loaded from 4 permutation(s)" in said
    assert missing[0].path in said
    with pytest.raises(ResultsError, match="no results given"):
        getBest(iter([]))


def test_getBest_warns_once_per_process_that_it_minimises(curves, monkeypatch):
    monkeypatch.setattr(analysis, "_warned_default", False)
    with pytest.warns(UserWarning, match="smallest.*3.2.3's code picked the biggest") as caught:
        getBest(curves)
        getBest(curves)
        windowed = getBest(curves, percent=0.2)
    assert len(caught) == 1 and caught[0].filename == __file__ and _alpha(windowed) == 0.125
    monkeypatch.setattr(analysis, "_warned_default", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getBest(curves, prefer="small")
        getBest(curves, prefer="big")
        getBest(curves, comparator=lambda a, b: a < b)


def test_getBest_works_on_views(curves):
    negated = [r.reducer(lambda a: -a) for r in curves]
    best = getBest(negated)
    assert isinstance(best, ResultView) and _alpha(best) == 1.0


def test_getBest_percent_tolerates_float_rounding(exp, tmp_path):
    a, b = list(loadResults(exp, "returns.npy"))[:2]
    _save(a, [100.0] * 18 + [0.0] * 7, tmp_path)  # last 7 of 25: mean 0; last 8: 12.5
    _save(b, [1.0] * 25, tmp_path)
    assert 25 * 0.28 > 7  # float product slightly above 7: must still mean 7 steps
    assert getBest([a, b], percent=0.28) is a


def test_getBest_means_over_every_column_of_2d_data(exp, tmp_path):
    a, b = list(loadResults(exp, "returns.npy"))[:2]
    _save(a, [[0.0, 10.0]] * 4, tmp_path)  # column 0 smallest, overall mean 5
    _save(b, [[1.0, 1.0]] * 4, tmp_path)  # overall mean 1
    assert getBest([a, b]) is b
    assert getBest([a, b], steps=2) is b


def test_getBest_skips_nan_means(exp, tmp_path):
    a, b = list(loadResults(exp, "returns.npy"))[:2]
    _save(a, [np.nan, 0.0], tmp_path)
    _save(b, [3.0, 3.0], tmp_path)
    assert getBest([a, b]) is b
    assert getBest([a, b], comparator=lambda x, y: x > y) is b


def test_getBest_rejects_bad_windows(curves):
    with pytest.raises(ValueError):
        getBest(curves, steps=2, percent=0.5)
    with pytest.raises(ValueError):
        getBest(curves, steps=0)
    with pytest.raises(ValueError):
        getBest(curves, percent=0)
    with pytest.raises(ValueError):
        getBest(curves, percent=1.5)


def test_getBest_on_dict_data_says_to_use_a_reducer(exp, tmp_path):
    result = next(loadResults(exp, "returns.npz"))
    _save(result, {"returns": np.arange(3.0)}, tmp_path)
    with pytest.raises(TypeError, match="reducer"):
        getBest([result])
    assert getBest([result.reducer(lambda d: d["returns"])]).idx == result.idx


# --- grouping and filtering ------------------------------------------------------------------


@pytest.fixture
def noLoads(monkeypatch):
    """Fail the test if anything loads a result."""

    def refuse(self):
        raise AssertionError("loaded a result")

    monkeypatch.setattr(Result, "load", refuse)


def test_splitOverParameter_groups_by_nested_value_without_loading(exp, noLoads):
    results = list(loadResults(exp, "returns.npy", runs=2))
    groups = splitOverParameter(results, "optimizer.beta")
    assert list(groups) == [0.9, 0.99]
    for beta, group in groups.items():
        assert len(group) == 4
        assert all(r.params["optimizer"]["beta"] == beta for r in group)
    alphas = splitOverParameter(iter(results), "alpha")
    assert sorted(alphas) == [0.125, 0.25, 0.5, 1.0]
    assert all(len(group) == 2 for group in alphas.values())


def test_splitOverParameter_keys_lists_as_tuples_and_leaves_out_lacking(tmp_path, noLoads):
    exp = _experiment(tmp_path, CONDITIONAL)
    results = list(loadResults(exp, "returns.npy"))
    hidden = splitOverParameter(results, "hidden")
    assert set(hidden) == {(32, 32), (64,)}
    assert sum(len(g) for g in hidden.values()) == len(results) == 12
    tiles = splitOverParameter(results, "features.tiles")
    assert set(tiles) == {8, 16}
    assert sum(len(g) for g in tiles.values()) == 8  # the 4 'raw' results lack tiles


def test_sliceOverParameter_keeps_everything_else_fixed(exp, noLoads):
    results = list(loadResults(exp, "returns.npy", runs=2))
    anchor = results[_index(exp, {**exp.getPermutation(0), "alpha": 0.5})]
    sliced = sliceOverParameter(results, anchor, "alpha")
    assert sorted(sliced) == [0.125, 0.25, 0.5, 1.0]
    for alpha, r in sliced.items():
        assert r.params["alpha"] == alpha
        assert r.params["optimizer"] == anchor.params["optimizer"]
    assert sliced[0.5] is anchor
    betas = sliceOverParameter(results, anchor, "optimizer.beta")
    assert sorted(betas) == [0.9, 0.99]
    assert all(r.params["alpha"] == 0.5 for r in betas.values())


def test_find_matches_all_parameters_but_ignored(exp, tmp_path, noLoads):
    results = list(loadResults(exp, "returns.npy"))
    target = results[5]
    assert find(results, target) is target
    other = _experiment(tmp_path, {**SWEEP, "name": "other"})
    same_params = list(loadResults(other, "returns.npy"))[5]
    assert find(results, same_params) is target
    first_beta = find(results, target, ignore=["alpha"])
    assert first_beta.params["optimizer"] == target.params["optimizer"]
    assert first_beta.idx == min(
        r.idx for r in results if r.params["optimizer"] == target.params["optimizer"]
    )
    first_alpha = find(results, target, ignore=["optimizer.beta"])
    assert first_alpha.params["alpha"] == target.params["alpha"]
    assert find(results, target, ignore=["optimizer"]) is first_alpha
    assert find(results, target, ignore=["alpha", "optimizer"]) is results[0]
    unmatched = list(loadResults(_experiment(tmp_path, CONDITIONAL), "returns.npy"))[0]
    assert find(results, unmatched) is None


def test_find_takes_a_dict_of_parameters_nested_or_dotted(exp, noLoads):
    results = list(loadResults(exp, "returns.npy"))
    target = results[5]
    assert find(results, dict(target.params)) is target
    dotted = {"alpha": target.params["alpha"], "hidden": [32, 32], "optimizer.name": "adam"}
    dotted["optimizer.beta"] = target.params["optimizer"]["beta"]
    assert find(results, dotted) is target
    loose = {"alpha": target.params["alpha"], "optimizer": {"beta": 0.99, "name": "adam"}}
    assert find(results, loose) is None  # every parameter must match: `hidden` is not given
    assert find(results, loose, ignore=["hidden"]).params["optimizer"]["beta"] == 0.99


def test_find_works_on_views(exp, noLoads):
    views = [r.reducer(np.mean) for r in loadResults(exp, "returns.npy")]
    assert find(views, views[3]) is views[3]


def test_where_filters_are_lazy(exp, noLoads):
    consumed = []

    def source():
        for r in loadResults(exp, "returns.npy"):
            consumed.append(r.idx)
            yield r

    equal = whereParameterEquals(source(), "alpha", 0.5)
    greater = whereParameterGreaterEq(source(), "alpha", 0.5)
    assert consumed == []
    assert next(equal).params["alpha"] == 0.5
    assert next(greater).params["alpha"] >= 0.5
    assert len(consumed) < 2 * exp.numPermutations()


def test_whereParameterEquals_with_dotted_names_and_lacking_params(tmp_path, noLoads):
    exp = _experiment(tmp_path, CONDITIONAL)
    results = list(loadResults(exp, "returns.npy"))
    tiles8 = list(whereParameterEquals(results, "features.tiles", 8))
    assert len(tiles8) == 8  # 4 with tiles 8 + 4 'raw' lacking tiles
    assert {r.params["features"].get("tiles") for r in tiles8} == {8, None}
    raw = list(whereParameterEquals(results, "features.kind", "raw"))
    assert len(raw) == 4 and all(r.params["features"] == {"kind": "raw"} for r in raw)
    assert len(list(whereParameterEquals(results, "hidden", [64]))) == 6
    assert len(list(whereParameterEquals(results, "nothere", 1))) == 12
    assert len(list(whereParameterEquals(results, "alpha.below", 1))) == 12


def test_whereParameterGreaterEq_with_dotted_names_and_lacking_params(tmp_path, noLoads):
    exp = _experiment(tmp_path, CONDITIONAL)
    results = list(loadResults(exp, "returns.npy"))
    kept = list(whereParameterGreaterEq(results, "features.tiles", 16))
    assert {r.params["features"].get("tiles") for r in kept} == {16, None}
    assert len(kept) == 8
    big = list(whereParameterGreaterEq(results, "alpha", 0.75))
    assert len(big) == 6 and all(r.params["alpha"] == 1.0 for r in big)


# --- runs: a Result is a permutation with all its runs ----------------------------------------


def _save_runs(exp, p: int, curves: list, filename: str = "returns.npy") -> None:
    n = exp.numPermutations()
    for run, curve in enumerate(curves):
        path = exp.buildSaveContext(p + run * n).ensureExists(filename)
        np.save(path, np.asarray(curve, dtype=float))


def test_getBest_picks_the_best_mean_over_runs_not_a_lucky_run(exp):
    _save_runs(exp, 0, [[0.0], [10.0], [10.0]])  # one lucky run, mean 6.67
    _save_runs(exp, 1, [[2.0], [2.0], [2.0]])  # steady, mean 2
    results = list(loadResults(exp, "returns.npy", runs=3))[:2]
    assert min(results[0].load().ravel()) < min(results[1].load().ravel())
    assert getBest(results).idx == 1
    assert getBest(results, prefer="big").idx == 0
    assert results[1].runs() == 3
    np.testing.assert_allclose(results[0].stderr(), [np.std([0, 10, 10], ddof=1) / np.sqrt(3)])


def test_uneven_runs_are_nan_padded_with_one_warning(exp, caplog):
    _save_runs(exp, 0, [[1.0, 2.0, 3.0], [3.0]])
    _save_runs(exp, 1, [[1.0], [1.0, 1.0]])
    results = list(loadResults(exp, "returns.npy", runs=2))
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        data = results[0].load()
        results[1].load()
    np.testing.assert_array_equal(data, [[1.0, 2.0, 3.0], [3.0, np.nan, np.nan]])
    np.testing.assert_array_equal(results[0].mean(), [2.0, 2.0, 3.0])
    assert sum("uneven" in r.getMessage() for r in caplog.records) == 1


def test_missing_runs_are_left_out_with_one_line(exp, caplog):
    n = exp.numPermutations()
    np.save(exp.buildSaveContext(n).ensureExists("returns.npy"), np.ones(2))  # run 1 only
    result = next(loadResults(exp, "returns.npy", runs=3))
    with caplog.at_level(logging.WARNING, logger="pyexp.results"):
        assert result.runs() == 1
    assert [r.getMessage().split(": ", 1)[1][:25] for r in caplog.records] == [
        "2 run(s) missing (0,2), e"
    ]


def test_runs_default_to_the_submitted_runs_then_to_those_found(exp):
    from pyexp.state.layout import state_dirs
    from pyexp.state.records import CompletionRecords
    from pyexp.state.settings import remember

    for p in range(exp.numPermutations()):
        _save_runs(exp, p, [[1.0], [2.0], [3.0]])
    assert {r.runs() for r in loadResults(exp, "returns.npy")} == {3}  # found on disk
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 1)
    assert {r.runs() for r in loadResults(exp, "returns.npy")} == {2}  # records: runs 0-1
    remember(state_dirs(exp).settings, runs=1)
    assert {r.runs() for r in loadResults(exp, "returns.npy")} == {1}  # as submitted
    assert {r.runs() for r in loadResults(exp, "returns.npy", runs=3)} == {3}


def test_whereParametersEqual_matches_nested_and_dotted_keys(tmp_path, noLoads):
    from pyexp.analysis.filters import whereParametersEqual

    exp = _experiment(tmp_path, CONDITIONAL)
    results = list(loadResults(exp, "returns.npy"))
    kept = list(whereParametersEqual(results, {"alpha": 0.5, "features": {"tiles": 8}}))
    assert {(r.params["alpha"], r.params["features"].get("tiles")) for r in kept} == {
        (0.5, 8),
        (0.5, None),
    }
    assert len(list(whereParametersEqual(results, {"features.kind": "raw"}))) == 4


def test_getBest_rejects_bad_prefer(curves):
    with pytest.raises(ValueError, match="prefer"):
        getBest(curves, prefer="largest")
    with pytest.raises(ValueError, match="not both"):
        getBest(curves, prefer="big", comparator=lambda a, b: a > b)
