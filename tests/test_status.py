"""pyexp-status at a glance: bar and percentages, jobs, runtimes, ETA, -v, --by, --watch, scale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_garbage_ledger_entry, write_project

from pyexp.cli.args import GAVE_UP
from pyexp.cli.status import LIST_LIMIT
from pyexp.cli.status import main as status_main
from pyexp.config import getConfig, load_config
from pyexp.experiment import loadExperiment
from pyexp.standing.reconcile import (
    DONE,
    FAILED_OUT,
    FAILING,
    MISSING,
    STATUSES,
    QueueSnapshot,
    classify,
)
from pyexp.state import records
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.leases import IndexLeases
from pyexp.state.ledger import Ledger, LedgerEntry, local_job_id, new_entry_id
from pyexp.state.records import CompletionRecords, record_key

SWEEP = {"name": "sweep", "metaParameters": {"lr": [0.1, 0.01, 0.001], "opt": ["sgd", "adam"]}}
HUGE = {"name": "huge", "metaParameters": {f"k{j:02d}": list(range(10)) for j in range(12)}}


def _project(root, sweep):
    path = write_project(root, sweep, path=f"experiments/{sweep['name']}.json")
    getConfig.cache_clear()
    return str(path), loadExperiment(str(path), load_config(root / "config.json"))


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A 6-permutation sweep (lr x opt) in a project folder of its own."""
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "config.json"))
    yield _project(tmp_path, SWEEP)
    getConfig.cache_clear()


def _key(exp, i):
    return record_key(exp.getPermutation(i), exp.getRun(i))


def _done(exp, i, duration=10.0):
    CompletionRecords(state_dirs(exp).done).mark_complete(
        exp.getPermutation(i), exp.getRun(i), {"index": i, "duration": duration}
    )


def _fail(exp, i, times, log=None):
    for t in range(times):
        info = {"exit_code": 3, "log": log} if log else {"exit_code": 3}
        Attempts(state_dirs(exp).attempts).record(_key(exp, i), FAILED, info, f"9_{t}_{i}")


def _entry(exp, tasks, job_id):
    entry = LedgerEntry(new_entry_id(), exp.path, exp.fingerprint(), exp.description, 1, tasks)
    ledger = Ledger(state_dirs(exp).ledger)
    ledger.write(entry)
    ledger.mark_submitted(entry, job_id)
    return entry


def _json(path, *flags, capsys=None):
    code = status_main([path, "--runs", "2", *flags, "--json"])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == (GAVE_UP if report["failed"] else 0)  # failed for good: exit 3
    return report


def test_status_json_carries_counts_percentages_runtimes_and_failures(sweep, capsys, tmp_path):
    path, exp = sweep
    for i, d in ((0, 4.0), (1, 6.0), (2, 20.0)):
        _done(exp, i, d)
    log = tmp_path / "3.log"
    log.write_text("=== t pyexp-run index=3\nTraceback (most recent call last):\nValueError: nan\n")
    _fail(exp, 3, 1, str(log))  # failing: one failure, attempts left
    _fail(exp, 4, 3)  # failed: gave up
    report = _json(path, "--no-slurm", capsys=capsys)
    counts = {s: report[s] for s in ("done", "running", "queued", "failing", "failed", "missing")}
    assert counts == {"done": 3, "running": 0, "queued": 0, "failing": 1, "failed": 1, "missing": 7}
    assert report["total"] == 12 and report["percent"]["done"] == 25.0
    assert report["runtime"] == {"indices": 3, "median": 6.0, "p90": 20.0}
    assert report["eta"] is None  # nothing runs
    assert report["jobs"] == [] and report["queue_known"] is False  # --no-slurm: not asked
    (failing,) = report["failing_indices"]
    assert failing["index"] == 3 and failing["attempts"] == 1 and failing["exit_code"] == 3
    assert failing["tail"][-1] == "ValueError: nan"
    assert [f["index"] for f in report["failed_indices"]] == [4]
    assert report["failed_indices"][0]["attempts"] == 3


def test_status_text_first_lines_are_bar_and_counts_and_v_shows_log_tail(sweep, capsys, tmp_path):
    path, exp = sweep
    for i in range(3):
        _done(exp, i)
    log = tmp_path / "3.log"
    log.write_text("=== t pyexp-run index=3\nloss went to nan\n")
    _fail(exp, 3, 2, str(log))
    assert status_main([path, "--runs", "1", "--no-slurm", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 3/6 done (50.0%) [{'#' * 20}{'!' * 7}{'.' * 13}]"
    assert lines[1].split("  ")[1:4] == ["done 3 (50.0%)", "running 0", "held 0"]
    assert "failing (attempts left) 1 (16.7%)" in lines[1]
    assert any("index 3: failing, 2 attempts, last failed (exit 3)" in x for x in lines)
    assert "      | loss went to nan" in lines


def test_verbose_lists_are_capped_and_say_so(sweep, capsys, tmp_path, monkeypatch):
    path, _ = sweep
    many = {"name": "many", "metaParameters": {"x": list(range(LIST_LIMIT + 10))}}
    path, exp = _project(tmp_path, many)
    for i in range(LIST_LIMIT + 10):
        _fail(exp, i, 3)
    assert status_main([path, "--runs", "1", "--no-slurm", "-v"]) == GAVE_UP
    out = capsys.readouterr().out
    assert f"failed: first {LIST_LIMIT} of {LIST_LIMIT + 10} indices shown" in out
    assert out.count(": failed, 3 attempts") == LIST_LIMIT


def test_by_breaks_the_counts_down_by_a_parameters_values(sweep, capsys):
    path, exp = sweep
    # Permutations: lr-major, opt fastest: 0=(0.1,sgd) 1=(0.1,adam) 2=(0.01,sgd) ...
    _done(exp, 0)
    _done(exp, 2)
    _fail(exp, 1, 3)
    _fail(exp, 3, 3)
    _fail(exp, 7, 1)  # run 1 of (0.1, adam)
    report = _json(path, "--no-slurm", "--by", "opt", capsys=capsys)
    rows = {r["value"]: r for r in report["by"]["rows"]}
    assert set(rows) == {'"sgd"', '"adam"'}
    assert (rows['"adam"']["failed"], rows['"adam"']["failing"], rows['"adam"']["missing"]) == (
        2,
        1,
        3,
    )
    assert (rows['"sgd"']["done"], rows['"sgd"']["missing"]) == (2, 4)
    assert status_main([path, "--runs", "2", "--no-slurm", "--by", "opt"]) == GAVE_UP
    table = capsys.readouterr().out.splitlines()
    head = next(n for n, line in enumerate(table) if line.split()[:1] == ["opt"])
    assert table[head + 1].split() == ['"sgd"', "2", "0", "0", "0", "0", "0", "0", "4"]
    assert table[head + 2].split() == ['"adam"', "0", "0", "0", "0", "0", "1", "2", "3"]


def test_by_an_unknown_parameter_is_a_one_line_error(sweep, capsys):
    path, _ = sweep
    assert status_main([path, "--runs", "1", "--no-slurm", "--by", "momentum"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--by momentum" in err


def test_eta_only_while_something_runs(sweep, capsys):
    path, exp = sweep
    _done(exp, 0, 30.0)
    _done(exp, 1, 60.0)
    assert _json(path, "--no-slurm", capsys=capsys)["eta"] is None
    leases = IndexLeases(state_dirs(exp).leases, 60, job="77_0")
    assert leases.try_take(_key(exp, 2)) and leases.try_take(_key(exp, 3))
    try:
        eta = _json(path, "--no-slurm", capsys=capsys)["eta"]
        assert status_main([path, "--runs", "2", "--no-slurm"]) == 0
        text = capsys.readouterr().out
    finally:
        leases.release()
    # 10 left (12 - 2 done) x median 45 s / 2 running.
    assert (eta["remaining"], eta["running"], eta["median"]) == (10, 2, 45.0)
    assert eta["seconds"] == 225.0
    assert "ETA ~3:45: 10 left x median 45.0 s / 2 running now" in text


def test_without_squeue_one_line_says_so_and_queued_work_is_not_missing(
    sweep, capsys, monkeypatch, tmp_path
):
    path, exp = sweep
    _entry(exp, [[0, 1], [2]], job_id="4242")
    monkeypatch.setenv("PYEXP_SQUEUE", str(tmp_path / "no-such-squeue"))
    assert status_main([path, "--runs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    (said,) = [line for line in out if line.startswith("  squeue")]
    assert "not found on PATH" in said
    report = _json(path, capsys=capsys)
    assert (report["queued"], report["missing"], report["queue_known"]) == (3, 9, False)
    assert report["jobs"] == ["4242"]


def test_squeue_is_asked_only_while_slurm_may_hold_work_of_the_experiment(
    sweep, capsys, monkeypatch, tmp_path
):
    path, exp = sweep
    _entry(exp, [[0, 1]], job_id="local-123")  # a --local run: nothing of it is on Slurm
    calls = tmp_path / "calls"
    fake = tmp_path / "squeue"
    fake.write_text(f"#!/bin/sh\necho asked >> {calls}\n[ -e {tmp_path}/answer ] || sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PYEXP_SQUEUE", str(fake))
    monkeypatch.setenv("PYEXP_SACCT", str(tmp_path / "no-sacct"))
    started = time.monotonic()
    report = _json(path, capsys=capsys)
    assert time.monotonic() - started < 30 and not calls.exists()
    assert report["queue_known"] and report["queue_problem"] is None
    (tmp_path / "answer").touch()
    _entry(exp, [[2]], job_id="4244")  # on Slurm: asked (it answers: the array has left)
    report = _json(path, capsys=capsys)
    assert calls.read_text() == "asked\n" and report["queue_known"]


def test_squeue_that_fails_is_named_and_queued_stays_unknown(sweep, capsys, monkeypatch, tmp_path):
    path, exp = sweep
    _entry(exp, [[0, 1]], job_id="4243")
    fake = tmp_path / "squeue"
    fake.write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact controller' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PYEXP_SQUEUE", str(fake))
    report = _json(path, capsys=capsys)
    assert "Unable to contact" in report["queue_problem"]
    assert (report["queued"], report["missing"]) == (2, 10)


def test_jobs_are_the_arrays_squeue_still_shows(sweep, capsys, monkeypatch, tmp_path):
    path, exp = sweep
    running = _entry(exp, [[0], [1]], job_id="501")
    ended = _entry(exp, [[2]], job_id="502")
    fake = tmp_path / "squeue"
    lines = f"501_0|{running.job_name}|RUNNING\\n502_0|{ended.job_name}|COMPLETED\\n"
    fake.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PYEXP_SQUEUE", str(fake))
    monkeypatch.setenv("PYEXP_SACCT", str(tmp_path / "no-sacct"))
    report = _json(path, capsys=capsys)
    assert report["jobs"] == ["501"] and report["queue_known"] is True
    assert (report["queued"], report["missing"]) == (1, 11)


def test_watch_refreshes_until_interrupted_and_exits_0_quietly(sweep):
    path, _ = sweep
    cmd = [sys.executable, "-m", "pyexp.cli.status", path, "--no-slurm", "--watch", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    seen = ""
    while seen.count("done (") < 2 and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert seen.count("done (") >= 2
    assert proc.returncode == 0 and err == "", err


def test_huge_sweep_counts_from_the_done_set_and_places_folded_records_by_the_ledger(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "config.json"))
    path, exp = _project(tmp_path, HUGE)
    assert exp.numPermutations() == 10**12
    far = [7, 123_456_789_012, 10**12 - 1, 10**12 + 5]  # the last is run 1
    for i in far[:2]:
        _done(exp, i)
    monkeypatch.setattr(records, "COMPACT_AT", 1)
    CompletionRecords(state_dirs(exp).done).completed()  # folded: only their keys remain
    assert _entry(exp, [far[:2]], job_id=local_job_id("1"))
    for i in far[2:]:
        _done(exp, i)  # loose: its params are on record
    _fail(exp, 999_999_999_999 - 10**6, 3)  # never submitted and not loose: cannot be placed
    standing = classify(exp, 2, QueueSnapshot())
    assert list(standing.indices(DONE)) == far
    assert len(standing.indices(MISSING)) == 2 * 10**12 - 4
    assert not standing.indices(FAILED_OUT) and not standing.indices(FAILING)
    report = _json(path, "--no-slurm", "--by", "k11", capsys=capsys)
    assert (report["total"], report["done"], report["missing"]) == (2 * 10**12, 4, 2 * 10**12 - 4)
    rows = {r["value"]: r for r in report["by"]["rows"]}
    # The last key varies fastest: k11 of 7, 123456789012, 10^12-1 and 10^12+5 is 7, 2, 9, 5.
    assert (rows["2"]["done"], rows["2"]["missing"]) == (1, 2 * 10**11 - 1)
    assert (rows["0"]["done"], rows["0"]["missing"]) == (0, 2 * 10**11)
    assert sum(r["missing"] for r in rows.values()) == report["missing"]


def test_permutation_of_params_inverts_the_index_math(tmp_path):
    sweep = {
        "name": "inv",
        "metaParameters": {
            "alpha": [0.1, 1, 1.0, True],
            "net": {"$choice": [{"kind": "mlp", "width": [8, 16]}, {"kind": "cnn", "k": [3]}]},
            "layers": [{"units": [4, 8]}, {"units": 2}],
        },
    }
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "e.json").write_text(json.dumps(sweep))
    exp = loadExperiment(str(tmp_path / "e.json"), load_config(tmp_path / "config.json"))
    found = [exp.permutationOf(exp.getPermutation(p)) for p in range(exp.numPermutations())]
    assert found == list(range(exp.numPermutations()))
    assert exp.permutationOf({"alpha": 2, "net": {"kind": "mlp", "width": 8}}) is None


def test_to_submit_includes_failing_but_not_given_up(sweep):
    from pyexp.standing.reconcile import to_submit

    _, exp = sweep
    _fail(exp, 1, 1)
    _fail(exp, 2, 3)
    missing = to_submit(exp, 1, QueueSnapshot())
    assert list(missing) == [0, 1, 3, 4, 5] and os.sep


def test_one_status_reads_the_ledger_once(sweep, monkeypatch, capsys):
    path, exp = sweep
    _entry(exp, [[0, 1]], job_id="4242")  # submitted to Slurm, not settled: in doubt
    scans = []
    real = Ledger.scan
    monkeypatch.setattr(Ledger, "scan", lambda self: scans.append(1) or real(self))
    report = _json(path, "--no-slurm", capsys=capsys)
    assert len(scans) == 1 and report["queued"] == 2


def test_status_shows_counts_and_failed_indices_with_reason_and_log(sweep, capsys):
    path, exp = sweep
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 0)
    key = _key(exp, 2)
    attempts = Attempts(state_dirs(exp).attempts)
    for job in ("1_0", "2_0", "3_0"):
        attempts.record(key, FAILED, {"exit_code": 7, "log": "/logs/2.log"}, job)
    path = path

    assert status_main([path, "--runs", "1", "--no-slurm", "--json"]) == 3  # failed for good
    (report,) = json.loads(capsys.readouterr().out)
    assert {k: report[k] for k in ("done", "running", "queued", "failed", "missing")} == {
        "done": 1,
        "running": 0,
        "queued": 0,
        "failed": 1,
        "missing": 4,
    }
    (failed,) = report["failed_indices"]
    assert {k: failed[k] for k in ("index", "attempts", "outcome", "exit_code", "log")} == {
        "index": 2,
        "attempts": 3,
        "outcome": FAILED,
        "exit_code": 7,
        "log": "/logs/2.log",
    }

    assert status_main([path, "--runs", "1", "--no-slurm", "-v"]) == 3
    table = capsys.readouterr().out
    assert "index 2: failed, 3 attempts, last failed (exit 7); log: /logs/2.log" in table
    assert table.splitlines()[0].startswith(f"{path}: 1/6 done (16.7%) [")
    counts = [part.rsplit(" ", 2) for part in table.splitlines()[1].strip().split("  ")]
    assert [c[0].split(" ")[0] for c in counts] == list(STATUSES)


def test_status_of_a_broken_experiment_is_one_line(sweep, capsys):
    path, exp = sweep
    bad = Path(path).parent / "bad.json"
    bad.write_text('{"metaParameters": {"x": []}}')
    assert status_main([str(bad), "--no-slurm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyexp-status: ") and err.count("\n") == 1 and "x" in err


def test_status_verbose_names_who_runs_an_index(sweep, capsys):
    path, exp = sweep
    import socket

    leases = IndexLeases(state_dirs(exp).leases, 0.6, job="77_3")
    lease = leases.try_take(_key(exp, 4))
    while not os.path.exists(lease.path + ".info"):  # the job is known from the first beat
        time.sleep(0.02)
    try:
        path = path
        assert status_main([path, "--no-slurm", "-v"]) == 0
    finally:
        leases.release()
    line = f"index 4: running on {socket.gethostname()} pid {os.getpid()} job 77_3"
    assert line in capsys.readouterr().out


def test_bad_lease_seconds_is_a_one_line_error(sweep, capsys, monkeypatch):
    path, exp = sweep
    monkeypatch.setenv("PYEXP_LEASE_SECONDS", "abc")
    assert status_main([path, "--no-slurm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PYEXP_LEASE_SECONDS='abc'" in err


def test_status_rejects_zero_runs_in_one_line(sweep, capsys):
    path, exp = sweep
    with pytest.raises(SystemExit) as exit_info:
        status_main([path, "--runs", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pyexp-status: ") and err.count("\n") == 1 and "at least 1" in err


def test_unreadable_ledger_entry_is_named_in_one_line_by_status(sweep, capsys):
    path, exp = sweep
    bad = write_garbage_ledger_entry(exp)
    path = path
    assert status_main([path, "--no-slurm"]) == 0
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if "warning" in line]
    assert bad in warning and "unreadable ledger entry" in warning and "not in squeue" in warning
    assert status_main([path, "--no-slurm", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert len(report["problems"]) == 1 and report["missing"] == 6


def test_python_dash_m_status_runs_the_command(sweep):
    path, exp = sweep
    import subprocess
    import sys

    path = path
    for module in ("status", "run", "submit"):
        result = subprocess.run(
            [sys.executable, "-m", f"pyexp.cli.{module}", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "usage:" in result.stdout, module
    result = subprocess.run(
        [sys.executable, "-m", "pyexp.cli.status", path, "--no-slurm"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "missing" in result.stdout, result.stderr
