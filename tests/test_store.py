"""The results store: pyexp.save() inside an index, shards safe under crashes, completion and
data in agreement, loadFrame and loadResults on the store."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runner_helpers import Project, age_tombstones

import pyexp
from pyexp.errors import ResultsError
from pyexp.state.layout import state_dirs
from pyexp.state.leases import sweep_tombstones
from pyexp.state.store import SHARDS, ShardWriter, compact, encode, latest, read_file, shard_names

pd = pytest.importorskip("pandas")

# Saves a 5-step curve (index * 10 + step) and a scalar per index; more per argv.
SAVER = """\
import sys
import numpy as np
import pyexp
index = int(sys.argv[1])
pyexp.save("returns", np.arange(5.0) + 10 * index)
pyexp.save("final", float(index))
for step in range(3):
    pyexp.save("episodes", step)
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    project = Project(tmp_path)
    monkeypatch.setenv("PYEXP_CONFIG", str(project.config))
    pyexp.getConfig.cache_clear()
    return project


def saver(project: Project, body: str = SAVER) -> str:
    script = project.root / "saver.py"
    script.write_text(body)
    return shlex.join([sys.executable, str(script)]) + " {index}"


def sweep(project: Project) -> Path:
    return project.experiment("sweep", {"alpha": [0.1, 0.2], "opt": {"beta": [1, 2]}})


def test_saves_of_a_command_land_in_one_shard_and_load_as_a_frame(project):
    path = sweep(project)
    result = project.run(path, "--indices", "0-7", "--command", saver(project))
    assert result.returncode == 0, result.stderr
    exp = project.load(path)
    store = state_dirs(exp).store
    assert len(shard_names(store)) == 1 and shard_names(store)[0].endswith(".sealed")
    assert not os.listdir(os.path.join(store, SHARDS, "..", SHARDS))[0].startswith(".")
    frame = pyexp.loadFrame(exp, "returns")
    assert list(frame.columns) == ["alpha", "opt.beta", "run", "step", "returns"]
    assert len(frame) == 8 * 5
    row = frame[(frame.alpha == 0.2) & (frame["opt.beta"] == 1) & (frame.run == 1)]
    index = 2 + 4 * 1
    assert list(row.returns) == list(np.arange(5.0) + 10 * index)
    assert list(row.step) == [0, 1, 2, 3, 4]
    final = pyexp.loadFrame(exp, "final")
    assert list(final.columns) == ["alpha", "opt.beta", "run", "final"] and len(final) == 8
    episodes = pyexp.loadFrame(exp, "episodes")  # three scalar saves: a 3-step curve
    assert list(episodes[episodes.run == 0].episodes[:3]) == [0, 1, 2]


def test_load_frame_filters_by_parameter_dotted_or_nested(project):
    path = sweep(project)
    assert project.run(path, "--indices", "0-7", "--command", saver(project)).returncode == 0
    exp = project.load(path)
    dotted = pyexp.loadFrame(exp, "final", where={"opt.beta": 2, "alpha": 0.1})
    nested = pyexp.loadFrame(exp, "final", where={"opt": {"beta": 2}, "alpha": 0.1})
    assert sorted(dotted.final) == sorted(nested.final) == [1.0, 5.0]


def test_load_results_reads_a_metric_of_the_store_unchanged_for_users(project):
    path = sweep(project)
    assert project.run(path, "--indices", "0-7", "--command", saver(project)).returncode == 0
    exp = project.load(path)
    results = list(pyexp.loadResults(exp, "returns"))
    assert len(results) == 4
    assert results[1].load().shape == (2, 5) and results[1].runs() == 2
    assert list(results[1].load()[1]) == list(np.arange(5.0) + 50)
    best = pyexp.getBest(results, prefer="big")
    assert best.params == exp.getPermutation(3)
    assert results[0].paths() == [results[0].path] == [state_dirs(exp).store]


def test_a_stored_metric_loads_where_params_make_no_folder_name(project):
    long = ["x" * 200, "y" * 200]  # {params} over 255 bytes: no save path, the store works
    path = project.experiment("long", {"a": long, "b": long})
    body = "import pyexp\npyexp.save('final', 1.5)\n"
    assert project.run(path, "--indices", "0-3", "--command", saver(project, body)).returncode == 0
    exp = project.load(path)
    results = list(pyexp.loadResults(exp, "final"))
    assert [r.load().tolist() for r in results] == [[1.5]] * 4
    assert len(pyexp.loadFrame(exp, "final", where={"a": long[1]})) == 2


def test_a_failed_index_stores_nothing_and_a_rerun_replaces_nothing_twice(project):
    path = sweep(project)
    body = SAVER + "sys.exit(3 if index == 1 else 0)\n"
    assert project.run(path, "--indices", "0-1", "--command", saver(project, body)).returncode
    exp = project.load(path)
    frame = pyexp.loadFrame(exp, "final")
    assert list(frame.final) == [0.0]
    assert [r.meta["key"] for r in latest(state_dirs(exp).store).values()] == [frame_key(exp, 0)]


def frame_key(exp, index: int) -> str:
    from pyexp.state.records import record_key

    return record_key(exp.getPermutation(index), exp.getRun(index))


KILLER = """\
import os, signal, sys
from pyexp.state import records
from pyexp.cli.run import main

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

records.CompletionRecords.mark_complete = die
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_data_and_completion_leaves_the_index_missing_and_unseen(project):
    path = sweep(project)
    killer = project.root / "killer.py"
    killer.write_text(KILLER)
    cmd = saver(project)
    proc = subprocess.run(
        [sys.executable, str(killer), str(path), "--indices", "0", "--command", cmd],
        env=project.env,
        cwd=project.root,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL
    exp = project.load(path)
    assert len(latest(state_dirs(exp).store)) == 1  # the data is in the store ...
    assert pyexp.listMissingResults(exp, runs=1)[0] == 0  # ... the index is not done ...
    assert len(pyexp.loadFrame(exp, "final")) == 0  # ... so no reader shows it
    assert list(pyexp.loadResults(exp, "final", runs=1))[0].load() is None
    # Its tombstone (written before the record) answers "done" to runners until it is swept,
    # two lease durations plus a minute later; then it runs again.
    assert age_tombstones(Path(state_dirs(exp).leases)) == 1
    assert sweep_tombstones(state_dirs(exp).leases) == 1
    assert project.run(path, "--indices", "0", "--command", cmd).returncode == 0
    assert list(pyexp.loadFrame(exp, "final").final) == [0.0]  # the rerun's, once


TEARER = """\
import os, signal, sys
from pyexp.state import store
from pyexp.cli.run import main

calls = []
whole = store._write_all

def torn(fd, data):
    calls.append(1)
    if len(calls) == 3:  # the third index's record: half of it, then kill -9
        whole(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    whole(fd, data)

store._write_all = torn
sys.exit(main(sys.argv[1:]))
"""


def test_a_runner_killed_mid_append_leaves_a_shard_readers_read(project):
    path = sweep(project)
    tearer = project.root / "tearer.py"
    tearer.write_text(TEARER)
    cmd = saver(project)
    argv = [sys.executable, str(tearer), str(path), "--indices", "0-3", "--command", cmd]
    proc = subprocess.run(argv, env=project.env, cwd=project.root, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    exp = project.load(path)
    assert sorted(pyexp.loadFrame(exp, "final").final) == [0.0, 1.0]
    assert pyexp.listMissingResults(exp, runs=1) == [2, 3]
    assert project.run(path, "--indices", "0-3", "--command", cmd).returncode == 0
    assert sorted(pyexp.loadFrame(exp, "final").final) == [0.0, 1.0, 2.0, 3.0]
    assert len(shard_names(state_dirs(exp).store)) == 2  # the torn one is never appended to


def test_a_torn_tail_hides_no_complete_record_before_it(tmp_path):
    writer = ShardWriter(str(tmp_path))
    records = [encode({"key": f"k-{i}", "time": i}, bytes([i]) * 100) for i in range(3)]
    for record in records:
        writer.append(record)
    with open(writer.path, "ab") as f:
        f.write(records[0][:50])  # a writer killed mid-write
    assert [r.meta["key"] for r in read_file(writer.path)] == ["k-0", "k-1", "k-2"]
    with open(writer.path, "r+b") as f:  # a flipped bit in the last record: dropped, not raised
        f.seek(len(records[0]) + len(records[1]) + len(records[2]) - 1)
        f.write(b"\xff")
    assert [r.meta["key"] for r in read_file(writer.path)] == ["k-0", "k-1"]


def test_a_store_of_a_newer_format_is_refused_in_one_line(tmp_path):
    writer = ShardWriter(str(tmp_path))
    record = bytearray(encode({"key": "k-0", "time": 0}, b""))
    record[3] = 2
    writer.append(bytes(record))
    with pytest.raises(ResultsError, match="newer pyexp .*upgrade pyexp"):
        latest(str(tmp_path))


def test_compaction_merges_sealed_shards_into_one_and_keeps_open_ones(tmp_path):
    for i in range(3):
        writer = ShardWriter(str(tmp_path))
        writer.append(encode({"key": f"k-{i}", "time": i}, b"x"))
        writer.append(encode({"key": "k-0", "time": 10 + i}, b"y"))  # reruns of k-0
        writer.seal()
    open_writer = ShardWriter(str(tmp_path))
    open_writer.append(encode({"key": "k-9", "time": 1}, b"z"))
    before = {k: r.meta for k, r in latest(str(tmp_path)).items()}
    assert compact(str(tmp_path)) == 3
    assert len(shard_names(str(tmp_path))) == 2
    assert {k: r.meta for k, r in latest(str(tmp_path)).items()} == before
    open_writer.append(encode({"key": "k-8", "time": 1}, b"w"))  # still its own shard
    assert "k-8" in latest(str(tmp_path))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("pyexp.save('bad name', 1)", "must be an identifier"),
        ("pyexp.save('x', [1, 2]); pyexp.save('x', [1, 2, 3])", "differs from an earlier save"),
        ("pyexp.save('x', 'text')", "save numbers"),
    ],
)
def test_bad_saves_fail_the_index_in_one_line(project, body, message):
    path = sweep(project)
    cmd = saver(project, "import sys, pyexp\n" + body + "\n")
    result = project.run(path, "--indices", "0", "--command", cmd)
    assert result.returncode == 1
    assert message in project.log(path, 0)


def test_saving_outside_an_index_says_so(monkeypatch):
    monkeypatch.delenv("PYEXP_STAGING", raising=False)
    with pytest.raises(ResultsError, match="outside an index"):
        pyexp.save("returns", 1.0)


def test_nan_is_stored_with_one_warning(project):
    path = sweep(project)
    body = "import pyexp, warnings\npyexp.save('x', float('nan'))\npyexp.save('x', 1.0)\n"
    result = project.run(path, "--indices", "0", "--command", saver(project, body))
    assert result.returncode == 0
    exp = project.load(path)
    assert np.isnan(pyexp.loadFrame(exp, "x").x[0])
    log = project.log(path, 0)
    assert log.count("NaN or inf stored") == 1


CLAIMER = """\
import sys
import numpy as np
import pyexp
for job in pyexp.claim(sys.argv[1], runs=2):
    with job:
        pyexp.save("returns", np.full(4, float(job.index)))
        if job.index == 3:
            raise ValueError("boom")
"""


def test_claim_jobs_save_in_process_and_a_failed_job_stores_nothing(project):
    path = sweep(project)
    script = project.root / "claimer.py"
    script.write_text(CLAIMER)
    proc = subprocess.run(
        [sys.executable, str(script), str(path)], env=project.env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    exp = project.load(path)
    frame = pyexp.loadFrame(exp, "returns")
    assert len(frame) == 7 * 4
    assert sorted(set(frame.returns)) == [float(i) for i in range(8) if i != 3]
    assert len(shard_names(state_dirs(exp).store)) == 1


def test_reads_work_on_a_read_only_store(project):
    path = sweep(project)
    assert project.run(path, "--indices", "0-7", "--command", saver(project)).returncode == 0
    state = project.root / "state"
    modes = {p: p.stat().st_mode for p in state.rglob("*")}
    for p in [*modes, state]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        exp = project.load(path)
        assert len(pyexp.loadFrame(exp, "returns")) == 40
        assert list(pyexp.loadResults(exp, "returns"))[0].load().shape == (2, 5)
    finally:
        for p in [state, *modes]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.stat().st_mode for p in state.rglob("*")} == modes


# --- best parameters with uncertainty ------------------------------------------------------

NOISY = """\
import sys
import numpy as np
import pyexp
index = int(sys.argv[1])
params = pyexp.loadExperiment(sys.argv[2]).getPermutation(index)
rng = np.random.default_rng(index)
# alpha 0.1 and 0.2 are close (noise 1.0 apart 0.1), 0.9 is far worse (smaller is better)
noise = 1.0 if params["alpha"] < 0.5 else 0.01
pyexp.save("loss", params["alpha"] * np.ones(10) + rng.normal(0, noise, 10))
"""


def noisy(project: Project) -> tuple[Path, object]:
    path = project.experiment("noisy", {"alpha": [0.1, 0.2, 0.9]})
    script = project.root / "noisy.py"
    script.write_text(NOISY)
    cmd = shlex.join([sys.executable, str(script)]) + " {index} {experiment}"
    assert project.run(path, "--indices", "0-29", "--command", cmd).returncode == 0
    return path, project.load(path)


def test_rank_results_and_rank_frame_agree_seeded_with_ties_and_plot_bootstrap_bands(project):
    _, exp = noisy(project)
    ranked = pyexp.rankResults(pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5)
    again = pyexp.rankResults(pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5)
    figures = [[(r.mean, r.low, r.high, r.tied) for r in rs] for rs in (ranked, again)]
    assert figures[0] == figures[1]  # seeded: reproducible
    by_alpha = {r.result.params["alpha"]: r for r in ranked}
    assert by_alpha[0.9].tied is False and ranked[-1].result.params["alpha"] == 0.9
    assert by_alpha[0.1].tied and by_alpha[0.2].tied  # noise of 1.0 hides a gap of 0.1
    assert all(r.low <= r.mean <= r.high and r.runs == 10 for r in ranked)
    frame = pyexp.rankFrame(pyexp.loadFrame(exp, "loss"), "loss", prefer="small", percent=0.5)
    assert list(frame.columns) == ["alpha", "runs", "mean", "low", "high", "tied"]
    assert list(frame.alpha) == [r.result.params["alpha"] for r in ranked]
    assert np.allclose(frame["mean"], [r.mean for r in ranked])
    assert list(frame.tied) == [r.tied for r in ranked]
    best = pyexp.getBest(pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5)
    assert best.params["alpha"] == frame.alpha[0]
    plot_sensitivity_draws_bootstrap_bands(exp)


def plot_sensitivity_draws_bootstrap_bands(exp):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(pyexp.loadResults(exp, "loss"))
    fig, (a, b) = plt.subplots(1, 2)
    pyexp.plotSensitivity(results, "alpha", prefer="small", ax=a, band="bootstrap")
    pyexp.plotSensitivity(results, "alpha", prefer="small", ax=b)
    wide = a.collections[0].get_paths()[0].vertices[:, 1]
    narrow = b.collections[0].get_paths()[0].vertices[:, 1]
    assert wide.max() - wide.min() > narrow.max() - narrow.min()  # 95% CI beyond +-1 stderr
    plt.close(fig)


# --- files: compaction by pyexp-submit; old results adopted into the store ---------------


def test_pyexp_submit_merges_the_finished_shards_and_nothing_is_lost(project):
    path = sweep(project)
    submit = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "3", "--local"]
    cmd = ["--cluster", "local", "--indices-per-task", "2", "--command", saver(project)]
    first = subprocess.run([*submit, *cmd], env=project.env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    exp = project.load(path)
    store = state_dirs(exp).store
    assert len(shard_names(store)) == 6  # one per task
    before = pyexp.loadFrame(exp, "returns")
    again = subprocess.run([*submit, *cmd], env=project.env, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to submit" in again.stdout
    assert len(shard_names(store)) == 1
    assert pyexp.loadFrame(exp, "returns").equals(before) and len(before) == 12 * 5


def test_adopt_puts_old_npy_results_into_the_store(project):
    path = sweep(project)
    exp = project.load(path)
    for i in range(8):
        folder = Path(exp.interpolateSavePath(i))
        folder.mkdir(parents=True)
        np.save(folder / "returns.npy", np.arange(3.0) + i)
    adopt = [sys.executable, "-m", "pyexp.cli.adopt", str(path), "--runs", "2"]
    argv = [*adopt, "--result-file", "returns.npy", "--store", "returns"]
    result = subprocess.run(argv, env=project.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "adopted 8 of 8" in result.stdout
    frame = pyexp.loadFrame(exp, "returns")
    assert len(frame) == 8 * 3 and sorted(set(frame.returns)) == [float(x) for x in range(10)]
    old = [r.load() for r in pyexp.loadResults(exp, "returns.npy")]
    new = [r.load() for r in pyexp.loadResults(exp, "returns")]
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    assert len(shard_names(state_dirs(exp).store)) == 1


def test_import_pyexp_and_the_run_path_load_neither_numpy_nor_pandas():
    code = (
        "import sys, pyexp, pyexp.cli.run, pyexp.cli.submit, pyexp.runner.save, "
        "pyexp.state.store; print('numpy' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.split() == ["False", "False"]


def test_a_failed_append_is_cut_off_so_later_records_stay_readable(tmp_path, monkeypatch):
    from pyexp.state import store

    writer = ShardWriter(str(tmp_path))
    writer.append(encode({"key": "k-0", "time": 0}, b"a"))
    whole = store._write_all

    def no_space(fd, data):
        whole(fd, data[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_write_all", no_space)
    with pytest.raises(OSError):
        writer.append(encode({"key": "k-1", "time": 1}, b"b"))
    monkeypatch.setattr(store, "_write_all", whole)
    writer.append(encode({"key": "k-2", "time": 2}, b"c"))
    assert sorted(latest(str(tmp_path))) == ["k-0", "k-2"]


# --- indexed files: one setting reads only what it needs; loadFrame's columns -------------


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _store_of_curves(folder: str, settings: int, runs: int, steps: int, seal: bool) -> None:
    """settings x runs records of steps-long float64 curves, one shard per run."""
    from pyexp.state.records import record_key
    from pyexp.state.store import Record, fold

    for run in range(runs):
        writer = ShardWriter(folder)
        for s in range(settings):
            params = {"alpha": float(s), "name": f"s{s % 3}"}
            staged = Record({"name": "returns", "dtype": "<f8", "shape": [steps]},
                            memoryview(np.full(steps, s + run / 10)).cast("B"))  # fmt: skip
            meta = {"key": record_key(params, run), "params": params, "run": run, "time": 0}
            writer.append(fold([staged], meta, "test"))
        if seal:
            writer.seal()


def test_one_setting_of_an_indexed_store_reads_its_records_and_the_index_only(tmp_path):
    folder = str(tmp_path)
    _store_of_curves(folder, settings=50, runs=4, steps=1000, seal=True)
    assert compact(folder) == 4
    (merged,) = shard_names(folder)
    size = os.path.getsize(os.path.join(folder, SHARDS, merged))
    before = _bytes_read()
    one = latest(folder, match=lambda params: params["alpha"] == 7.0)
    spent = _bytes_read() - before
    assert sorted(r.meta["run"] for r in one.values()) == [0, 1, 2, 3]
    assert [float(np.frombuffer(r.data, "<f8")[0]) for r in one.values()] == [7.0, 7.1, 7.2, 7.3]
    assert spent < size / 10  # 4 of 200 records (32 KB) and the index, not the 1.6 MB file
    assert len(latest(folder)) == 200  # and the whole file still reads


def test_a_sealed_shard_is_indexed_an_open_one_is_scanned_and_both_filter_alike(tmp_path):
    sealed, open_ = tmp_path / "sealed", tmp_path / "open"
    _store_of_curves(str(sealed), settings=6, runs=2, steps=3, seal=True)
    _store_of_curves(str(open_), settings=6, runs=2, steps=3, seal=False)
    match = lambda params: params["name"] == "s1"  # noqa: E731
    got = [sorted(latest(str(f), match=match)) for f in (sealed, open_)]
    assert got[0] == got[1] and len(got[0]) == 4
    path = os.path.join(sealed, SHARDS, shard_names(str(sealed))[0])
    with open(path, "rb") as f:
        from pyexp.state.store import decode

        assert len(list(decode(f.read(), path))) == 6  # a format-1 reader stops at the index


def test_a_damaged_record_behind_an_index_is_read_the_slow_way(tmp_path):
    folder = str(tmp_path)
    _store_of_curves(folder, settings=4, runs=1, steps=100, seal=True)
    (name,) = shard_names(folder)
    path = os.path.join(folder, SHARDS, name)
    third = Path(path).read_bytes().split(b"PXR")[1:3]  # the first two records, headless
    with open(path, "r+b") as f:  # a flipped byte in the third record's data
        f.seek(sum(len(r) + 3 for r in third) + 900)
        f.write(b"\xff")
    assert len(read_file(path)) == 2  # as a scan sees it: every record before the damage
    assert len(read_file(path, match=lambda params: True)) == 2


def test_load_frame_columns_numbers_strings_and_absent_parameters(project):
    path = project.experiment(
        "mixed", {"agent": ["a", "b"], "opt": {"$choice": [{"lr": [0.1, 1]}, {"kind": "x"}]}}
    )
    body = "import pyexp\npyexp.save('final', 1.0)\n"
    assert project.run(path, "--indices", "0-5", "--command", saver(project, body)).returncode == 0
    exp = project.load(path)
    frame = pyexp.loadFrame(exp, "final")
    assert len(frame) == 6 and frame["agent"].dtype == "category"
    assert sorted(frame["opt.lr"].dropna().tolist()) == [0.1, 0.1, 1, 1]
    assert frame["opt.lr"].isna().sum() == 2 and frame["opt.kind"].isna().sum() == 4
    assert len(frame[frame.agent == "b"]) == 3
    ranked = pyexp.rankFrame(frame, "final", prefer="big")  # categories group as values do
    assert len(ranked) == 6 and ranked.tied.all()


def test_load_frame_with_polars_builds_the_same_table(project):
    pl = pytest.importorskip("polars")
    path = sweep(project)
    assert project.run(path, "--indices", "0-7", "--command", saver(project)).returncode == 0
    exp = project.load(path)
    pandas_frame = pyexp.loadFrame(exp, "returns")
    polars_frame = pyexp.loadFrame(exp, "returns", backend="polars")
    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame.columns == list(pandas_frame.columns)
    for name in pandas_frame.columns:  # column by column (to_pandas would need pyarrow)
        assert list(polars_frame[name]) == list(pandas_frame[name]), name
    with pytest.raises(ValueError, match="backend must be one of"):
        pyexp.loadFrame(exp, "returns", backend="arrow")


# --- getBest with a confidence interval ---------------------------------------------------


def test_get_best_with_ci_names_the_settings_it_cannot_tell_from_the_best(project):
    _, exp = noisy(project)
    plain = pyexp.getBest(pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5)
    assert not hasattr(plain, "tied")  # unchanged without ci
    best = pyexp.getBest(
        pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5, ci=0.95, bootstrap=5000
    )
    again = pyexp.getBest(
        pyexp.loadResults(exp, "loss"), prefer="small", percent=0.5, ci=0.95, bootstrap=5000
    )
    assert best.params == plain.params and best.params["alpha"] in (0.1, 0.2)
    other = {0.1: 0.2, 0.2: 0.1}[best.params["alpha"]]
    assert [r.params["alpha"] for r in best.tied] == [other]  # 0.9 is told apart
    assert best.interval == again.interval and best.interval[0] <= best.interval[1]
    assert [r.result.params["alpha"] for r in best.ranking][-1] == 0.9
    with pytest.raises(ValueError, match="not by a comparator"):
        pyexp.getBest(pyexp.loadResults(exp, "loss"), comparator=lambda a, b: a < b, ci=0.9)


# --- store_only: {params} too long for a folder is fine when no folder is made -------------


def test_store_only_submits_params_too_long_for_a_folder_and_a_save_path_is_still_refused(
    project,
):
    long = ["x" * 200, "y" * 200]
    path = project.experiment("long", {"a": long, "b": "z" * 100})  # {params}: 307 bytes
    submit = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "1", "--local"]
    submit += ["--cluster", "local"]
    cmd = ["--command", saver(project, "import pyexp\npyexp.save('final', 2.5)\n")]
    refused = subprocess.run([*submit, *cmd], env=project.env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "exceeds the filesystem's 255" in refused.stderr and "store_only" in refused.stderr
    config = {"state_path": "state", "log_path": "logs", "store_only": True}
    project.config.write_text(__import__("json").dumps(config))
    done = subprocess.run([*submit, *cmd], env=project.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    exp = pyexp.loadExperiment(str(path))
    assert list(pyexp.loadFrame(exp, "final").final) == [2.5, 2.5]
    assert not (project.root / "results").exists()


# --- scripts/bench_store.py: the same frame from .npy files; metadata calls per load ---------


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_loading_the_store_makes_as_many_metadata_calls_for_ten_times_the_runs(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import bench_store

    calls = {}
    for total in (200, 2000):
        root = tmp_path / str(total)
        written = bench_store.write_all(root, total, 5)  # checks the .npy way's frame is equal
        assert written["pyexp store"][0].startswith("1 ")  # one merged file
        calls[total] = [
            bench_store.metadata_calls(way, root, total // 100, False, tmp_path)
            for way in ("pyexp store", "one .npy per index")
        ]
    assert calls[200][0] == calls[2000][0] < 50, calls  # the store: bounded, whatever the runs
    assert calls[2000][1] >= 2000 * 3, calls  # one .npy per index: a few per file
