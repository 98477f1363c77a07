"""plotSensitivity: mean over runs with stderr bands, matplotlib only when asked for."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pyexp import ExperimentDescription, loadResults, plotSensitivity
from pyexp.config import load_config

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SWEEP = {"name": "plot", "metaParameters": {"alpha": [0.1, 0.5, 1.0], "lambda": [0.0, 0.9]}}


def test_lines_are_means_over_runs_with_stderr_bands(tmp_path):
    exp = ExperimentDescription(SWEEP, config=load_config(None, cwd=str(tmp_path)))
    n = exp.numPermutations()
    for idx in range(n * 3):
        params, run = exp.getPermutation(idx), exp.getRun(idx)
        curve = np.full(10, params["alpha"] + params["lambda"] + run)
        np.save(exp.buildSaveContext(idx).ensureExists("returns.npy"), curve)
    fig, ax = plt.subplots()
    plotSensitivity(loadResults(exp, "returns.npy", runs=3), "alpha", by="lambda", ax=ax)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["lambda=0.0", "lambda=0.9"]
    np.testing.assert_allclose(lines[0].get_xdata(), [0.1, 0.5, 1.0])
    np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 2.4, 2.9])  # + mean run 1
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.max() - band.min(), 0.9 + 2 / np.sqrt(3))  # stderr of runs 0, 1, 2
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    plt.close(fig)


def test_missing_results_are_left_out_and_nothing_is_raised(tmp_path):
    exp = ExperimentDescription(SWEEP, config=load_config(None, cwd=str(tmp_path)))
    np.save(exp.buildSaveContext(0).ensureExists("returns.npy"), np.ones(3))
    fig, ax = plt.subplots()
    plotSensitivity(loadResults(exp, "returns.npy", runs=1), "alpha", ax=ax)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [0.1])
    plt.close(fig)


def test_submit_and_run_paths_never_import_matplotlib():
    code = (
        "import sys, pyexp, pyexp.cli.submit, pyexp.cli.run, pyexp.analysis.results; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_list_valued_parameter_is_a_labelled_category_axis(tmp_path):
    sweep = {"name": "lists", "metaParameters": {"hidden": [[64, 64], [32]], "alpha": [0.1, 1.0]}}
    exp = ExperimentDescription(sweep, config=load_config(None, cwd=str(tmp_path)))
    for idx in range(exp.numPermutations()):
        params = exp.getPermutation(idx)
        level = len(params["hidden"]) + params["alpha"]
        np.save(exp.buildSaveContext(idx).ensureExists("returns.npy"), np.full(4, level))
    fig, ax = plt.subplots()
    results = loadResults(exp, "returns.npy", runs=1)
    plotSensitivity(results, "hidden", by="alpha", prefer="small", ax=ax)
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_xdata(), [0, 1])  # file order: [64, 64], then [32]
    np.testing.assert_allclose(lines[1].get_ydata(), [3.0, 2.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[64, 64]", "[32]"]
    plotSensitivity(loadResults(exp, "returns.npy", runs=1), "alpha", by="hidden", ax=ax)
    assert "hidden=[64, 64]" in [line.get_label() for line in ax.get_lines()]
    with pytest.raises(ValueError, match="logx needs numbers"):
        plotSensitivity(loadResults(exp, "returns.npy", runs=1), "hidden", ax=ax, logx=True)
    plt.close(fig)
