"""pyexp-submit against a fake Slurm (PYEXP_SBATCH, PYEXP_SQUEUE, PYEXP_SCONTROL)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time

import pytest
from conftest import FAKE_PERMUTATIONS as N

from pyexp.cli.submit import main
from pyexp.config import getConfig
from pyexp.errors import SlurmError
from pyexp.experiment import loadExperiment
from pyexp.indexset import IndexSet
from pyexp.scheduler import planner, slurm
from pyexp.scheduler import submit as submit_module
from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.local import LocalBackend
from pyexp.scheduler.submit import SubmitBusy, check_runnable, permutations_of, submit_lock
from pyexp.standing.reconcile import to_submit
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import SUBMITTED, UNCONFIRMED, Ledger, is_local_job
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.settings import read_settings


def _submit(project, *extra, farm=False):
    """pyexp-submit with static bundles of one index per task, unless farm is asked for."""
    static = [] if farm or "--workers" in extra else ["--indices-per-task", "1"]
    return main([project["exp"], "--runs", "1", "--cluster", project["cluster"], *static, *extra])


def _exp(project):
    return loadExperiment(project["exp"])


def _ledger(project):
    return Ledger(state_dirs(_exp(project)).ledger).entries()


def _sbatch_calls(project):
    jobs = project["fake"] / "jobs.txt"
    return jobs.read_text().splitlines() if jobs.exists() else []


def _still_missing(project):
    return list(to_submit(_exp(project), 1, slurm.queue_snapshot()))


def _stderr_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("pyexp-submit: ") and err.count("\n") == 1, err
    return err


def test_submits_one_array_per_sbatch_and_records_it(project, capsys):
    assert _submit(project) == 0
    out = capsys.readouterr().out
    assert "submitted 30 indices as 3 arrays to tiny (job 1000, 1001, 1002)" in out
    entries = _ledger(project)
    assert [e.state for e in entries] == [SUBMITTED] * 3
    assert sorted(e.job_id for e in entries) == ["1000", "1001", "1002"]
    assert sorted(i for e in entries for i in e.indices()) == list(range(N))
    assert all(len(e.tasks) <= 10 for e in entries)  # MaxArraySize 11 from scontrol
    assert all(e.command == "true {index}" and e.runs == 1 for e in entries)
    with open(entries[0].script) as f:
        script = f.read()
    assert f"--job-name={entries[0].job_name}" in script and "--array=0-9%3" in script
    assert os.path.isdir(project["root"] / "logs" / "experiments" / "sweep")


def test_second_submit_right_after_submits_nothing(project, capsys):
    assert _submit(project) == 0
    assert _submit(project) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("sweep.json: nothing to submit")
    assert len(_sbatch_calls(project)) == 3


def test_refusal_halfway_keeps_accepted_arrays_and_leaves_the_rest_missing(
    project, capsys, monkeypatch
):
    monkeypatch.setenv("FAKE_SBATCH_MODE", "refuse_after:1")
    assert _submit(project) == 1
    err = _stderr_line(capsys)
    assert "sbatch failed (exit 1): sbatch: error: Batch job submission failed" in err
    assert "1 of 3 arrays submitted, the others' indices stay missing" in err
    assert len(os.listdir(state_dirs(_exp(project)).scripts)) == 1
    (entry,) = _ledger(project)
    assert entry.state == SUBMITTED and entry.job_id == "1000"
    assert _still_missing(project) == sorted(set(range(N)) - set(entry.indices()))
    monkeypatch.setenv("FAKE_SBATCH_MODE", "accept")
    assert _submit(project) == 0
    assert sorted(i for e in _ledger(project) for i in e.indices()) == list(range(N))
    assert _still_missing(project) == []


def test_hanging_sbatch_times_out_with_one_line(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_MODE", "hang")
    monkeypatch.setenv("PYEXP_SLURM_TIMEOUT", "1")
    start = time.monotonic()
    assert _submit(project) == 1
    assert time.monotonic() - start < 10
    err = _stderr_line(capsys)
    assert "sbatch did not answer within 1 s" in err and "0 of 3 arrays submitted" in err
    assert "kept in case it was queued" in err
    (entry,) = _ledger(project)  # kept: if it was queued after all, squeue shows it
    assert entry.state == UNCONFIRMED and entry.job_id is None
    pid = int((project["fake"] / "sbatch.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung sbatch was killed, not left behind
    assert _still_missing(project) == list(range(N))


def test_garbage_from_sbatch_is_an_error(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_MODE", "garbage")
    assert _submit(project) == 1
    assert "sbatch printed 'Submitted batch job 1234', not a job id" in _stderr_line(capsys)
    assert [e.state for e in _ledger(project)] == [UNCONFIRMED]


def test_sbatch_losing_its_answer_keeps_the_entry_pending(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_MODE", "socket")
    assert _submit(project) == 1
    assert "Socket timed out" in _stderr_line(capsys)
    assert [e.state for e in _ledger(project)] == [UNCONFIRMED]  # squeue decides next time


def test_unreachable_slurm_changes_nothing(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "fail")
    assert _submit(project) == 1
    assert "squeue failed (exit 1): slurm_load_jobs error" in _stderr_line(capsys)
    assert _ledger(project) == [] and not os.path.exists(state_dirs(_exp(project)).scripts)
    assert _sbatch_calls(project) == []


def test_missing_sbatch_command(project, capsys, monkeypatch):
    monkeypatch.setenv("PYEXP_SBATCH", str(project["root"] / "nowhere" / "sbatch"))
    assert _submit(project) == 1
    assert "sbatch: command not found" in _stderr_line(capsys)
    assert _ledger(project) == []


def test_dry_run_prints_plan_writes_scripts_and_no_ledger(project, capsys):
    assert _submit(project, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run, would submit 30 indices as 3 arrays on tiny" in out
    assert "array 0: --array=0-9%3  10 tasks  10 indices (0..9)  <= 10 core-hours" in out
    assert "total: 3 arrays, 30 tasks, 30 indices, <= 30 core-hours" in out
    folder = os.path.join(state_dirs(_exp(project)).scripts, "dry-run")
    scripts = os.listdir(folder)
    assert len(scripts) == 3 and all(s.endswith(".sbatch") for s in scripts)
    assert "#SBATCH --array=0-9%3" in out and "exec " in out  # the first script, in full
    assert _submit(project, "--dry-run") == 0  # a second dry run replaces the first's scripts
    assert len(os.listdir(folder)) == 3 and not set(os.listdir(folder)) & set(scripts)
    assert _ledger(project) == [] and _sbatch_calls(project) == []
    assert "squeue not reachable" not in out


def test_dry_run_without_slurm_still_plans_and_says_so(project, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "fail")
    assert _submit(project, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would submit 30 indices" in out
    assert "squeue" not in out  # nothing of this experiment's was ever on Slurm: not asked
    assert _ledger(project) == [] and _sbatch_calls(project) == []
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "accept")
    assert _submit(project) == 0
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "fail")
    capsys.readouterr()
    assert _submit(project, "--dry-run", "--runs", "2") == 0
    out = capsys.readouterr().out
    assert "would submit 60 indices" in out  # run 0's arrays may have left: not subtracted
    assert "note: squeue not reachable: queued work not subtracted" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--command", "echo {nope}"], "unknown placeholder {nope}"),
        (["--command", "echo 'unclosed"], "No closing quotation"),
    ],
)
def test_a_command_the_tasks_would_refuse_is_refused_before_submitting(
    project, capsys, extra, message
):
    assert _submit(project, *extra) == 1
    assert message in _stderr_line(capsys)
    assert _ledger(project) == [] and _sbatch_calls(project) == []


def test_an_invalid_save_path_is_refused_at_planning_time(project, capsys):
    with open(project["exp"], "w") as f:
        json.dump({"name": "sweep", "metaParameters": {"p": ["ok", "x/y"]}}, f)
    assert _submit(project, "--dry-run") == 1
    err = _stderr_line(capsys)
    assert "index 1: parameter p='x/y' would add path components" in err
    assert _submit(project) == 1
    capsys.readouterr()
    assert _ledger(project) == [] and _sbatch_calls(project) == []


def test_two_permutations_sharing_a_save_path_are_refused_at_planning_time(project, capsys):
    with open(project["exp"], "w") as f:
        json.dump({"name": "sweep", "metaParameters": {"p": [0.1, "0.1", 0.2]}}, f)
    assert _submit(project, "--dry-run") == 1
    err = _stderr_line(capsys)
    assert "indices 0 and 1 have the same save path" in err and "{params_hash}" in err
    assert _ledger(project) == [] and _sbatch_calls(project) == []


def test_runs_without_run_in_the_save_path_get_a_one_line_warning(project, capsys):
    project["root"].joinpath("config.json").write_text(
        json.dumps({"command": "true {index}", "save_path": "results/{name}/{params}"})
    )
    argv = [project["exp"], "--cluster", project["cluster"], "--dry-run"]
    assert main([*argv, "--runs", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning:" in err and "2 runs but save_path" in err
    assert main([*argv, "--runs", "1"]) == 0
    assert capsys.readouterr().err == ""


def test_two_submits_at_once_submit_each_index_once(project):
    env = {**os.environ, "FAKE_SBATCH_DELAY": "0.3"}
    argv = [sys.executable, "-m", "pyexp.cli.submit", project["exp"], "--runs", "1"]
    argv += ["--cluster", project["cluster"]]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("nothing to submit" in out for out in outs) == 1
    assert len(_sbatch_calls(project)) == 1  # one farm array
    indices = [i for e in _ledger(project) for i in e.indices()]
    assert sorted(indices) == list(range(N))


def test_submit_lock_held_by_another_submit_is_a_clear_error(tmp_path):
    path = str(tmp_path / "state" / "submit.lock")
    held, release = threading.Event(), threading.Event()

    def other_submit():
        with submit_lock(path, timeout=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_submit)
    thread.start()
    try:
        assert held.wait(5)
        busy = pytest.raises(SubmitBusy, match="still holds .*submit.lock after 0.5 s")
        with busy, submit_lock(path, timeout=0.5):
            pass
    finally:
        release.set()
        thread.join()
    with submit_lock(path, timeout=1):  # free again once the other is done
        pass


def test_done_and_given_up_indices_are_not_submitted(project, capsys):
    exp = _exp(project)
    dirs = state_dirs(exp)
    records = CompletionRecords(dirs.done)
    for i in range(N - 1):
        records.mark_complete(exp.getPermutation(i), exp.getRun(i))
    last = record_key(exp.getPermutation(N - 1), 0)
    for _ in range(3):
        Attempts(dirs.attempts).record(last, FAILED, {"exit_code": 1})
    # cron hears it: exit 3, and the first line names the count and the command that lists them
    assert _submit(project) == 3
    out, err = capsys.readouterr()
    assert "nothing to submit" in out
    assert err == (
        f"pyexp-submit: {project['exp']}: 1 index failed for good (attempts exhausted), not "
        f"resubmitted; see pyexp-status {project['exp']} -v, then fix and pass --retry-failed\n"
    )
    assert _submit(project, "--retry-failed") == 0
    assert "submitted 1 index as 1 array" in capsys.readouterr().out
    assert [e.indices() for e in _ledger(project)] == [[N - 1]]


def test_no_command_is_an_error(project, capsys):
    (project["root"] / "config.json").write_text("{}")
    getConfig.cache_clear()
    assert _submit(project) == 1
    assert "no command to run: pass --command" in _stderr_line(capsys)
    assert _submit(project, "--command", "echo {index}") == 0
    assert {e.command for e in _ledger(project)} == {"echo {index}"}


@pytest.mark.parametrize(
    "argv",
    [
        ["x.json", "--runs", "0"],
        ["x.json", "--runs", "1", "--parallel", "2"],
        ["x.json", "--runs", "1", "--max-attempts", "0"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyexp-submit: ") and err.count("\n") == 1, err


def test_without_runs_a_never_submitted_experiment_is_refused_with_one_line(project, capsys):
    assert main([project["exp"], "--cluster", project["cluster"]]) == 1
    assert "never submitted, so how many runs? pass --runs N" in _stderr_line(capsys)
    assert _sbatch_calls(project) == []


def test_runs_default_to_the_last_submission(project, capsys):
    assert main([project["exp"], "--runs", "2", "--cluster", project["cluster"]]) == 0
    assert "submitted 60 indices" in capsys.readouterr().out
    assert main([project["exp"], "--cluster", project["cluster"], "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("nothing to submit")


def test_account_is_required_on_alliance_clusters(project, capsys):
    code = main([project["exp"], "--runs", "1", "--cluster", "fir"])
    assert code == 1 and "needs an account" in _stderr_line(capsys)
    assert main([project["exp"], "--runs", "1", "--cluster", "fir", "--dry-run"]) == 0


def _settings(project):
    return read_settings(state_dirs(loadExperiment(project["exp"])).settings)


def _grow_sweep(project, n):
    with open(project["exp"], "w") as f:
        json.dump({"name": "sweep", "metaParameters": {"x": list(range(n))}}, f)


def test_the_cluster_is_remembered_like_the_runs(project, capsys, monkeypatch):
    assert _submit(project) == 0  # to tiny.json, by path
    assert _settings(project) == {"runs": 1, "cluster": project["cluster"]}
    capsys.readouterr()
    _grow_sweep(project, N + 5)
    monkeypatch.chdir(project["fake"])  # cron runs elsewhere, without --cluster or $CC_CLUSTER
    assert main([project["exp"], "--indices-per-task", "1", "--dry-run"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first == (
        f"{project['exp']}: cluster {project['cluster']}, remembered from its last submission "
        "(--cluster NAME|PATH replaces it)"
    )
    assert second.endswith("dry run, would submit 5 indices as 1 array on tiny:")
    monkeypatch.setenv("CC_CLUSTER", "fir")  # a login node's default does not override it either
    assert main([project["exp"], "--indices-per-task", "1", "--dry-run"]) == 0
    assert "would submit 5 indices as 1 array on tiny:" in capsys.readouterr().out


def test_another_cluster_replaces_the_remembered_one(project, capsys):
    assert _submit(project) == 0
    other = project["root"] / "other.json"
    other.write_text(json.dumps({"time_hours": 2}))
    _grow_sweep(project, N + 5)
    assert main([project["exp"], "--cluster", str(other), "--indices-per-task", "1"]) == 0
    assert "submitted 5 indices as 1 array to other" in capsys.readouterr().out
    _grow_sweep(project, N + 7)
    assert main([project["exp"], "--indices-per-task", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{project['exp']}: cluster {other}, remembered")
    assert "submitted 2 indices as 1 array to other" in out[1]


def test_without_a_remembered_cluster_nothing_changes(project, capsys):
    assert main([project["exp"], "--runs", "1", "--dry-run"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("dry run, would submit 30 indices as 1 array on local:")
    assert _submit(project, "--local") == 0  # a --local run goes to no cluster: nothing to keep
    assert "cluster" not in _settings(project)


def test_a_remembered_cluster_file_that_is_gone_is_one_line(project, capsys):
    assert _submit(project) == 0
    os.unlink(project["cluster"])
    assert main([project["exp"], "--dry-run"]) == 1
    line = _stderr_line(capsys)
    assert "cannot read cluster config" in line and "settings.json" in line
    assert line.endswith("--cluster NAME|PATH replaces it)\n")


def _trillium_like(project, monkeypatch, **config):
    """A cluster whose compute nodes cannot write $HOME, the project's state under $HOME."""
    cluster = project["root"] / "trill.json"
    fields = {"time_hours": 1, "readonly_on_compute": ["HOME", "PROJECT"]}
    cluster.write_text(json.dumps(fields))
    (project["root"] / "config.json").write_text(json.dumps({"command": "true {index}", **config}))
    getConfig.cache_clear()
    monkeypatch.setenv("HOME", str(project["root"]))
    monkeypatch.setenv("SCRATCH", str(project["root"] / "scratch"))
    monkeypatch.delenv("PROJECT", raising=False)
    return str(cluster)


def test_state_under_a_root_compute_nodes_cannot_write_is_refused(project, capsys, monkeypatch):
    cluster = _trillium_like(project, monkeypatch)
    assert main([project["exp"], "--runs", "1", "--cluster", cluster]) == 1
    line = _stderr_line(capsys)
    assert line.startswith(f"pyexp-submit: {project['root'] / 'config.json'}: state_path ")
    assert "read-only on trill's compute nodes" in line
    assert line.endswith("set state_path to a folder under $SCRATCH\n")
    assert _sbatch_calls(project) == []
    assert main([project["exp"], "--runs", "1", "--cluster", cluster, "--dry-run"]) == 0
    assert "warning: " in capsys.readouterr().err  # a dry run says so and still plans
    assert main([project["exp"], "--runs", "1", "--cluster", cluster, "--local"]) == 0


def test_state_on_scratch_beside_a_read_only_home_is_submitted(
    project, capsys, monkeypatch, tmp_path_factory
):
    scratch = tmp_path_factory.mktemp("scratch")  # the project stays under $HOME
    cluster = _trillium_like(
        project, monkeypatch, state_path=str(scratch / "state"), log_path=str(scratch / "logs"),
        save_path=str(scratch / "results/{name}/{params}/{run}"),
    )  # fmt: skip
    monkeypatch.setenv("SCRATCH", str(scratch))
    assert main([project["exp"], "--runs", "1", "--cluster", cluster]) == 0
    assert capsys.readouterr().err == "" and len(_sbatch_calls(project)) == 1


def test_state_on_purged_scratch_is_submitted_with_one_warning(project, capsys, monkeypatch):
    scratch = project["root"] / "scratch"
    cluster = project["root"] / "purged.json"
    cluster.write_text(json.dumps({"time_hours": 1, "purged_after_days": {"SCRATCH": 60}}))
    (project["root"] / "config.json").write_text(
        json.dumps({"command": "true {index}", "state_path": str(scratch / "state")})
    )
    getConfig.cache_clear()
    monkeypatch.setenv("SCRATCH", str(scratch))
    assert main([project["exp"], "--runs", "1", "--cluster", str(cluster)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pyexp-submit: warning: ") and "older than 60 days" in line
    assert len(_sbatch_calls(project)) == 1


def test_squeue_parsing():
    text = "\n".join(
        [
            "12_4|pyexp-aaa|RUNNING",
            "12_[5-9%2]|pyexp-aaa|PENDING",
            "13_[1,3,5-7]|pyexp-bbb|PENDING",
            "14_[0-6:3]|pyexp-ccc|PENDING",
            "15|pyexp-ddd|PENDING",
            "16_2|my|job|RUNNING",
            "",
            "garbage",
        ]
    )
    tasks = slurm.parse_squeue(text).tasks
    assert tasks[("aaa", 4)] == "RUNNING"
    assert sorted(t for e, t in tasks if e == "aaa") == [4, 5, 6, 7, 8, 9]
    assert sorted(t for e, t in tasks if e == "bbb") == [1, 3, 5, 6, 7]
    assert sorted(t for e, t in tasks if e == "ccc") == [0, 3, 6]
    assert {e for e, _ in tasks} == {"aaa", "bbb", "ccc"}
    with pytest.raises(SlurmError):
        slurm.parse_squeue("17_[x-y]|pyexp-eee|PENDING")


@pytest.mark.parametrize("out, job", [("123\n", "123"), ("456;cedar\n", "456")])
def test_job_id_parsing(out, job):
    assert slurm.parse_job_id(out) == job


@pytest.mark.parametrize("out", ["", "Submitted batch job 5", "12 13", "abc;x"])
def test_job_id_garbage(out):
    with pytest.raises(SlurmError, match="not a job id"):
        slurm.parse_job_id(out)


def test_max_array_size_and_grace_from_scontrol_or_none(project, monkeypatch):
    monkeypatch.setenv("FAKE_MAX_ARRAY", "5001")
    config = slurm.show_config()
    assert slurm.max_array_size(config) == 5001
    assert slurm.grace_seconds(config) == 30 - slurm.GRACE_MARGIN_SECONDS
    assert slurm.grace_seconds("KillWait = 2 sec") == 1
    monkeypatch.setenv("PYEXP_SCONTROL", str(project["root"] / "nowhere"))
    assert slurm.show_config() == ""
    assert slurm.max_array_size("") is None and slurm.grace_seconds("") is None


def test_script_stops_its_runner_within_killwait(project):
    assert main([project["exp"], "--runs", "1", "--cluster", "local", "--dry-run"]) == 0
    script = next((project["root"] / ".pyexp").rglob("dry-run/*.sbatch")).read_text()
    assert f"export PYEXP_GRACE_SECONDS={30 - slurm.GRACE_MARGIN_SECONDS}\n" in script


def test_local_runs_the_plan_here_through_the_runner(project, capsys):
    count = project["root"] / "count.txt"
    command = f"sh -c 'echo {{index}} >> \"$0\"' {count}"
    argv = [project["exp"], "--runs", "1", "--cluster", "local", "--local", "--parallel", "2"]
    assert main([*argv, "--command", command]) == 0
    assert "ran 30 indices locally in 6 tasks" in capsys.readouterr().out
    assert sorted(int(x) for x in count.read_text().split()) == list(range(N))
    entries = _ledger(project)
    assert {e.state for e in entries} == {SUBMITTED} and is_local_job(entries[0].job_id)
    scripts = state_dirs(_exp(project)).scripts  # pyexp-run is started here: no sbatch script
    assert {e.script for e in entries} == {""} and not os.path.exists(scripts)
    assert main([*argv, "--command", command]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert _sbatch_calls(project) == []


def test_local_runs_ask_squeue_only_while_slurm_may_hold_work_of_theirs(
    project, monkeypatch, capsys
):
    calls = project["fake"] / "squeue-calls.txt"
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "hang")  # no controller answers: squeue hangs
    local = [project["exp"], "--runs", "1", "--cluster", "local", "--local", "--parallel", "2"]
    started = time.monotonic()
    assert main([*local, "--dry-run"]) == 0 and main(local) == 0
    assert time.monotonic() - started < 30 and not calls.exists()
    monkeypatch.setenv("FAKE_SQUEUE_MODE", "accept")
    assert _submit(project, "--runs", "2") == 0  # run 1 goes to Slurm: now squeue is asked
    asked, _ = len(calls.read_text().splitlines()), capsys.readouterr()
    assert main([project["exp"], "--runs", "2", "--cluster", "local", "--local"]) == 0
    assert len(calls.read_text().splitlines()) > asked
    assert "nothing to submit" in capsys.readouterr().out  # Slurm's indices stay Slurm's


def test_local_failures_exit_1_and_say_where_the_logs_are(project, capsys):
    argv = [project["exp"], "--runs", "1", "--cluster", "local", "--local", "--parallel", "2"]
    argv += ["--command", "false"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    # The broken-command guard: the first tasks' five fast failures each, then no more tasks.
    assert "ran 10 of 30 indices locally in 6 tasks, 2 of them with failures (logs: " in out


def test_farm_dry_run_shows_the_choice_the_expected_cost_and_writes_one_script(project, capsys):
    assert _submit(project, "--dry-run", "--index-minutes", "6", farm=True) == 0
    out = capsys.readouterr().out
    assert "dry run, would submit 30 indices as 1 array on tiny" in out
    assert "mode: farm of 4 workers: 30 indices x ~6 min (--index-minutes 6) fill 4 tasks" in out
    assert "array 0: --array=0-3%3  4 workers  30 indices (0..29)  <= 4 core-hours" in out
    assert "expected: makespan ~60 min, ~3 core-hours (~6 min per index" in out
    assert "at most 2 h, 4 core-hours" in out  # 4 workers, 3 at a time: two waves of 1 h
    assert (
        "limits: no queue limit known (Slurm states none, no max_queued_jobs in tiny.json)" in out
    )
    assert "MaxArraySize 11" in out
    folder = os.path.join(state_dirs(_exp(project)).scripts, "dry-run")
    assert len(os.listdir(folder)) == 1 and _ledger(project) == []


def test_measured_durations_size_the_farm(project, capsys):
    exp = _exp(project)
    records = CompletionRecords(state_dirs(exp).done)
    for i in range(10):  # indices of 30 min each: 2 fit in an hour's task
        records.mark_complete(exp.getPermutation(i), 0, {"duration": 1800.0})
    assert _submit(project, "--dry-run", farm=True) == 0
    out = capsys.readouterr().out
    assert "would submit 20 indices" in out
    assert "20 indices x ~30 min (median of 10 done) fill 11 tasks" in out


def test_submits_only_what_fits_under_max_queued_jobs(project, capsys):
    path = project["root"] / "tiny.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "max_queued_jobs": 12}))
    assert _submit(project) == 0  # squeue shows 2 jobs of the user already: room for 10
    out = capsys.readouterr().out
    assert "submitted 10 indices as 1 array to tiny (job 1000); 20 indices wait for room" in out
    assert "(max_queued_jobs 12, 2 queued): the next run submits more" in out
    assert out.count("\n") == 1
    assert _submit(project) == 0  # now 12 queued: nothing fits
    out = capsys.readouterr().out
    assert "nothing submitted; 20 indices wait for room in the queue" in out
    assert len(_sbatch_calls(project)) == 1


def test_slurms_own_limit_wins_over_the_config(project, capsys, monkeypatch, tmp_path):
    sacctmgr = tmp_path / "sacctmgr"
    sacctmgr.write_text("#!/bin/sh\necho '5|'\n")
    sacctmgr.chmod(0o755)
    monkeypatch.setenv("PYEXP_SACCTMGR", str(sacctmgr))
    assert _submit(project) == 0
    out = capsys.readouterr().out
    assert "submitted 3 indices" in out and "(sacctmgr MaxSubmitJobs 5, 2 queued)" in out


@pytest.mark.parametrize(
    ("sacctmgr", "scontrol", "want"),
    [
        ("1000|200\n", "", (1000, 200, "sacctmgr")),
        ("|\n", "", None),  # no limit recorded: the config's fallback applies
        ("500|\n300|50\n", "", (300, 50, "sacctmgr")),  # several accounts: the tightest
        (
            None,
            "ClusterName=c Account=def-x UserName=u(1) ID=3 MaxJobs=N(2) MaxJobsAccrue= "
            "MaxSubmitJobs=1000(12) MaxWallPJ= GrpSubmitJobs=N(0)\n",
            (1000, None, "scontrol assoc_mgr"),
        ),
        (None, "You are not running a supported accounting_storage plugin\n", None),
    ],
)
def test_job_limits_from_sacctmgr_else_scontrol(sacctmgr, scontrol, want, monkeypatch, tmp_path):
    for name, text in (("sacctmgr", sacctmgr), ("scontrol", scontrol)):
        path = tmp_path / name
        path.write_text(
            f"#!/bin/sh\n{'exit 1' if text is None else f'printf %s {shlex.quote(text)}'}\n"
        )
        path.chmod(0o755)
        monkeypatch.setenv(f"PYEXP_{name.upper()}", str(path))
    limits = slurm.job_limits()
    got = None if limits is None else (limits.max_submit, limits.max_jobs, limits.source)
    assert got == want


def test_more_than_the_sane_bound_needs_yes(project, capsys, monkeypatch):
    monkeypatch.setattr(planner, "SANE_MISSING", 20)
    assert _submit(project) == 1
    err = _stderr_line(capsys)
    assert "30 missing indices, more than 20: a sweep this large is often a typo" in err
    assert "pass --yes" in err and _sbatch_calls(project) == []
    assert _submit(project, "--dry-run") == 0
    assert "note: " in capsys.readouterr().out  # the dry run answers and says so
    assert _submit(project, "--yes") == 0 and len(_sbatch_calls(project)) == 3


def test_save_paths_of_a_huge_sweep_are_checked_on_a_bounded_sample(project):
    exp = _exp(project)
    assert permutations_of(IndexSet.span(0, 10**12), N) == IndexSet.span(0, N)
    assert permutations_of(IndexSet([(28, 32), (45, 46)]), N) == IndexSet.of([28, 29, 0, 1, 15])
    assert check_runnable(exp, "true {index}", IndexSet.span(0, 10**12)) == []


def test_workers_and_static_bundles_exclude_each_other(project, capsys):
    assert main([project["exp"], "--workers", "2", "--indices-per-task", "3"]) == 2
    assert "exclude each other" in _stderr_line(capsys)


def test_the_local_backend_names_this_machine_and_bounds_only_what_runs_at_once():
    local = LocalBackend(load_cluster("local"), parallel=2)
    assert (local.name, local.cores, local.limits().room, local.limits().running) == (
        "local-machine", 1, None, 2,
    )  # fmt: skip


def test_one_submit_reads_the_ledger_once(project, monkeypatch):
    scans = []
    real = Ledger.scan
    monkeypatch.setattr(Ledger, "scan", lambda self: scans.append(1) or real(self))
    assert _submit(project) == 0 and len(scans) == 1
    assert _submit(project) == 0 and len(scans) == 2  # again, with the first one's arrays queued


def test_a_submitter_paused_after_its_fencing_check_sends_nothing_twice(project, monkeypatch):
    wanted = []  # at each check: what a submitter taking the lock right then would send

    def paused_past_its_lease(lock):
        wanted.append(set(_still_missing(project)))
        return True

    monkeypatch.setattr(submit_module, "still_holds", paused_past_its_lease)
    assert _submit(project) == 0
    arrays = sorted(_ledger(project), key=lambda e: e.created)
    assert len(arrays) == len(wanted) >= 3
    for checked, entry in zip(wanted, arrays, strict=True):
        assert not checked & set(entry.indices())  # the array sbatch sends next is in flight
