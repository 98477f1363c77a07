"""listIndices and listMissingResults: from completion records, or from result files."""

from __future__ import annotations

import builtins
import json
import os

import pytest
from conftest import write_experiment

from pyexp import listIndices, listMissingResults, loadExperiment
from pyexp.config import load_config
from pyexp.standing.missing import permutation_hashes
from pyexp.state import records
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords

SWEEP = {
    "name": "mc",
    "agent": "SARSA",
    "metaParameters": {"alpha": [1.0, 0.5], "optimizer": {"beta": [0.9, 0.99], "name": "adam"}},
}


@pytest.fixture
def config(tmp_path):
    return load_config(None, cwd=str(tmp_path))


def load_written(tmp_path, d: dict, config, name: str = "exp.json"):
    path = write_experiment(tmp_path, d, f"experiments/mc/{name}")
    return loadExperiment(str(path), config=config)


def mark(exp, *indices: int) -> None:
    recs = CompletionRecords(state_dirs(exp).done)
    for i in indices:
        recs.mark_complete(exp.getPermutation(i), exp.getRun(i))


def test_list_indices(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    assert listIndices(exp) == [0, 1, 2, 3]
    assert listIndices(exp, runs=3) == list(range(12))


def test_everything_missing_without_records(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    assert listMissingResults(exp) == [0, 1, 2, 3]
    assert listMissingResults(exp, runs=2) == list(range(8))


def test_missing_is_what_has_no_record(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    mark(exp, 0, 3, 6)
    assert listMissingResults(exp, runs=2) == [1, 2, 4, 5, 7]
    assert listMissingResults(exp, runs=1) == [1, 2]
    assert listMissingResults(exp, runs=3) == [1, 2, 4, 5, 7, 8, 9, 10, 11]


def test_a_folder_without_a_record_is_still_missing(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    exp.buildSaveContext(0).ensureExists()  # killed at its time limit: folder, no record
    assert listMissingResults(exp) == [0, 1, 2, 3]


def test_adding_a_sweep_value_keeps_finished_work_done(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    done = {1: exp.getPermutation(1), 6: exp.getPermutation(6)}  # (1.0, 0.99) r0; (0.5, 0.9) r1
    mark(exp, 1, 6)
    assert listMissingResults(exp, runs=2) == [0, 2, 3, 4, 5, 7]

    grown = json.loads(json.dumps(SWEEP))
    grown["metaParameters"]["alpha"] = [1.0, 0.75, 0.5]
    exp2 = load_written(tmp_path, grown, config)  # same file, one more value
    assert state_dirs(exp2) == state_dirs(exp)
    n = exp2.numPermutations()
    assert n == 6
    # The finished permutations moved to new indices and are still done.
    new_1 = [i for i in range(n) if exp2.getPermutation(i) == done[1]][0]
    new_6 = [i for i in range(n) if exp2.getPermutation(i) == done[6]][0] + n
    assert (new_1, new_6) == (1, 10)
    assert listMissingResults(exp2, runs=2) == [i for i in range(12) if i not in (new_1, new_6)]


def test_records_are_per_experiment_file(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    other = load_written(tmp_path, SWEEP, config, name="other.json")
    mark(exp, 0, 1)
    assert listMissingResults(exp) == [2, 3]
    assert listMissingResults(other) == [0, 1, 2, 3]


def test_many_records_folded_still_answer_correctly(tmp_path, config, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 10)
    exp = load_written(tmp_path, SWEEP, config)
    mark(exp, *range(0, 40, 3))
    expected = [i for i in range(40) if i % 3]
    assert listMissingResults(exp, runs=10) == expected  # folds
    assert [n for n in os.listdir(state_dirs(exp).done) if n not in ("segments", "durations")] == []
    assert listMissingResults(exp, runs=10) == expected  # from the segment


def test_permutation_hashes_follow_index_order(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    from pyexp import paramsHash

    assert permutation_hashes(exp) == [paramsHash(exp.getPermutation(i)) for i in range(4)]


# ---------------------------------------------------------------- metadata calls


class Calls:
    """Counts filesystem metadata calls made through os (and open)."""

    def __init__(self, monkeypatch) -> None:
        self.counts: dict[str, int] = {}
        for name in ("listdir", "scandir", "stat", "lstat"):
            self._wrap(monkeypatch, os, name)
        self._wrap(monkeypatch, builtins, "open")

    def _wrap(self, monkeypatch, module, name) -> None:
        real = getattr(module, name)

        def counted(*args, **kwargs):
            self.counts[name] = self.counts.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def test_record_mode_reads_a_bounded_number_of_entries(tmp_path, config, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 10)
    exp = load_written(tmp_path, SWEEP, config)
    runs = 100
    mark(exp, *range(0, 4 * runs, 2))
    listMissingResults(exp, runs=runs)  # folds
    calls = Calls(monkeypatch)
    assert listMissingResults(exp, runs=runs) == list(range(1, 4 * runs, 2))
    assert calls["scandir"] + calls["listdir"] <= 2  # the records folder and its segments
    assert calls["open"] <= 2
    assert calls["stat"] == 0 and calls["lstat"] == 0


def make_results(exp, runs: int, with_file: set[int], folder_only: set[int]) -> None:
    for i in range(exp.numPermutations() * runs):
        ctx = exp.buildSaveContext(i)
        if i in with_file:
            with open(ctx.ensureExists("returns.npy"), "w") as f:
                f.write("x")
        elif i in folder_only:
            ctx.ensureExists()


def test_result_file_mode_answers_from_files(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    make_results(exp, 3, with_file={0, 5, 6, 11}, folder_only={1, 7})
    assert listMissingResults(exp, runs=3, result_file="returns.npy") == [1, 2, 3, 4, 7, 8, 9, 10]
    mark(exp, 1)  # records are not consulted in this mode
    assert 1 in listMissingResults(exp, runs=3, result_file="returns.npy")
    assert listMissingResults(exp, runs=3, result_file="other.npy") == list(range(12))


def test_result_file_mode_with_no_results_tree(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    assert listMissingResults(exp, runs=2, result_file="returns.npy") == list(range(8))


def test_result_file_mode_lists_each_folder_once_and_stats_nothing(tmp_path, config, monkeypatch):
    exp = load_written(tmp_path, SWEEP, config)
    runs = 25
    total = exp.numPermutations() * runs
    with_file = set(range(0, total, 3))
    folder_only = set(range(1, total, 7)) - with_file
    make_results(exp, runs, with_file, folder_only)
    existing = set()
    for i in with_file | folder_only:
        folder = exp.buildSaveContext(i).resolve()
        while len(folder) > len(exp.config.save_path.split("{")[0]):
            existing.add(folder)
            folder = os.path.dirname(folder)
    parents = {
        os.path.dirname(exp.buildSaveContext(i).resolve("returns.npy")) for i in range(total)
    }

    calls = Calls(monkeypatch)
    missing = listMissingResults(exp, runs=runs, result_file="returns.npy")
    assert missing == [i for i in range(total) if i not in with_file]
    listings = calls["listdir"] + calls["scandir"]
    assert listings <= len(existing) + 2  # folders that were never made cost nothing
    assert listings <= len(parents) + 2
    assert calls["stat"] == 0 and calls["lstat"] == 0 and calls["open"] == 0


def test_result_file_mode_shared_folder_is_listed_once(tmp_path, monkeypatch):
    config = load_config(
        str(_write(tmp_path / "config.json", {"save_path": "results/{name}/{params}"}))
    )
    exp = load_written(tmp_path, {**SWEEP, "metaParameters": {"alpha": [1.0, 0.5]}}, config)
    for i in (0,):
        with open(exp.buildSaveContext(i).ensureExists("returns.npy"), "w") as f:
            f.write("x")
    calls = Calls(monkeypatch)
    # Every run of a permutation shares one folder: one listing each, not one per index.
    assert listMissingResults(exp, runs=50, result_file="returns.npy") == list(range(1, 100, 2))
    assert calls["listdir"] + calls["scandir"] <= 3
    assert calls["stat"] == 0


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_records_of_removed_values_and_extra_runs_are_ignored(tmp_path, config):
    exp = load_written(tmp_path, SWEEP, config)
    mark(exp, 0, 2, 5, 13)  # 13: run 3
    shrunk = json.loads(json.dumps(SWEEP))
    shrunk["metaParameters"]["alpha"] = [0.5]  # index 2 (alpha 0.5, beta 0.9) is now index 0
    exp2 = load_written(tmp_path, shrunk, config)
    assert listMissingResults(exp2, runs=2) == [1, 2, 3]


def test_equal_params_at_two_indices_share_one_record(tmp_path, config):
    exp = load_written(tmp_path, {"name": "d", "metaParameters": {"a": [1, 1, 2]}}, config)
    mark(exp, 0)
    assert listMissingResults(exp) == [2]
