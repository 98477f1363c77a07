"""pyexp-run with real processes and real signals: leases, records, attempts, clean stops."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_config
from runner_helpers import RUN, Project, in_process_runner, sh, wait_for, write_entry

from pyexp.config import load_config
from pyexp.job_environment import EARLY_SIGNAL, PYTHON_ON_PATH
from pyexp.runner import (
    DEFAULT_GRACE_SECONDS,
    CommandTemplate,
    RunnerError,
    oom_kills,
    parse_indices,
)
from pyexp.state import task_logs
from pyexp.state.attempts import FAILED, LEASE_LOST, PREEMPTED, TIMEOUT
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.ledger import Ledger
from pyexp.state.records import CompletionRecords, record_key


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def has_line(path: Path, line: str) -> bool:
    return path.exists() and line in path.read_text().splitlines()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_eight_runners_run_each_of_500_indices_exactly_once(project):
    exp = project.experiment("many", {"a": list(range(25)), "b": list(range(20))})
    out = project.root / "ran.txt"
    command = sh('echo "$PYEXP_INDEX" >> "$1"', out)
    # A long enough lease that a starved heartbeat on a loaded machine is not taken over by age.
    slow = {"PYEXP_LEASE_SECONDS": "5"}
    procs = [
        project.start(exp, "--indices", "0-499", "--command", command, env=slow) for _ in range(8)
    ]
    done = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        done.append(int(err.splitlines()[-1].split()[1]))  # "pyexp-run: N done, ..."
    assert sum(done) == 500 and sum(n > 0 for n in done) > 1, done
    counts = Counter(int(x) for x in out.read_text().split())
    assert counts == Counter(range(500))
    assert all(project.complete(exp, i) for i in range(500))
    assert project.leases(exp) == []


def test_runner_killed_mid_index_leaves_it_missing_and_a_later_runner_completes_it(project):
    exp = project.experiment("kill", {"a": [1]})
    pidfile, mark = project.root / "pid", project.root / "mark"
    command = sh('[ -e "$2" ] && exit 0; touch "$2"; echo $$ > "$1"; exec sleep 30', pidfile, mark)
    runner = project.start(exp, "--indices", "0", "--command", command)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"))
    child = int(pidfile.read_text())
    runner.kill()
    runner.wait()
    wait_for(lambda: not alive(child), 5)  # the user's process dies with its runner
    assert not project.complete(exp, 0)
    assert project.attempts(exp) == []
    assert len(project.leases(exp)) == 1  # left behind, held by a dead pid

    start = time.monotonic()
    later = project.run(
        exp, "--indices", "0", "--command", command, env={"PYEXP_LEASE_SECONDS": "4"}
    )
    assert later.returncode == 0, later.stderr
    assert time.monotonic() - start < 3  # a dead holder on this host is taken over at once
    assert project.complete(exp, 0)
    assert project.leases(exp) == []


@pytest.mark.parametrize(
    ("signum", "outcome"), [(signal.SIGUSR1, TIMEOUT), (signal.SIGTERM, PREEMPTED)]
)
def test_stop_signal_forwards_sigterm_records_attempt_and_starts_nothing_new(
    project, signum, outcome
):
    exp = project.experiment("stop", {"a": [1, 2, 3]})
    starts, terms = project.root / "starts", project.root / "terms"
    script = (
        'trap "echo term >> \\"$1\\"; exit 0" TERM; echo "$PYEXP_INDEX" >> "$2"; sleep 30 & wait'
    )
    runner = project.start(exp, "--indices", "0-2", "--command", sh(script, terms, starts))
    wait_for(lambda: has_line(starts, "0"))
    runner.send_signal(signum)
    _, err = runner.communicate(timeout=15)
    assert runner.returncode == 128 + signum
    assert terms.read_text() == "term\n"
    assert starts.read_text() == "0\n"  # no new index started
    assert not project.complete(exp, 0)  # exit 0 after the signal does not count
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == outcome and attempt["index"] == 0 and attempt["exit_code"] == 0
    assert project.leases(exp) == []
    assert signal.Signals(signum).name in err


def test_child_ignoring_sigterm_is_killed_after_the_grace_period(project):
    exp = project.experiment("grace", {"a": [1]})
    starts = project.root / "starts"
    command = sh('trap "" TERM; echo go >> "$1"; exec sleep 30', starts)
    runner = project.start(
        exp, "--indices", "0", "--command", command, env={"PYEXP_GRACE_SECONDS": "0.5"}
    )
    wait_for(lambda: has_line(starts, "go"))
    start = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    runner.communicate(timeout=15)
    assert time.monotonic() - start < 3
    assert runner.returncode == 128 + signal.SIGTERM
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == PREEMPTED and attempt["exit_code"] == -signal.SIGKILL
    assert not project.complete(exp, 0) and project.leases(exp) == []


def test_nonzero_exit_records_a_failed_attempt_with_its_log(project):
    exp = project.experiment("fail", {"a": [1, 2]})
    result = project.run(exp, "--indices", "0", "--command", sh("echo oops; exit 3"))
    assert result.returncode == 1
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == FAILED and attempt["exit_code"] == 3 and attempt["index"] == 0
    assert attempt["host"] and attempt["duration"] >= 0 and "job" in attempt
    log = Path(attempt["log"]).read_text()
    assert log.startswith("=== ") and "index=0" in log and "oops\n" in log and "exit 3" in log
    assert Path(attempt["log"]).name.endswith("-0.log")  # the runner's first slot's log
    assert not project.complete(exp, 0) and project.leases(exp) == []


def test_unstartable_program_is_a_failed_attempt(project):
    exp = project.experiment("nosuch", {"a": [1]})
    result = project.run(exp, "--indices", "0", "--command", "no-such-program-pyexp {index}")
    assert result.returncode == 1
    [attempt] = project.attempts(exp)
    assert attempt["exit_code"] == 127 and "cannot start" in Path(attempt["log"]).read_text()


def test_crash_between_command_exit_and_record_leaves_the_index_missing(project):
    exp = project.experiment("crash", {"a": [1]})
    output = project.root / "output"
    command = sh('echo result > "$1"; kill -9 $PPID; exit 0', output)
    result = project.run(exp, "--indices", "0", "--command", command)
    assert result.returncode == -signal.SIGKILL
    assert output.read_text() == "result\n"  # the work happened...
    assert not project.complete(exp, 0)  # ...but is not counted
    assert project.run(exp, "--indices", "0", "--command", "true").returncode == 0
    assert project.complete(exp, 0)


def test_index_held_by_a_live_runner_is_left_to_it(project):
    exp = project.experiment("defer", {"a": [1, 2]})
    out = project.root / "ran"
    command = sh('echo "$PYEXP_INDEX" >> "$1"; [ "$PYEXP_INDEX" = 0 ] && sleep 1; exit 0', out)
    first = project.start(exp, "--indices", "0", "--command", command)
    wait_for(lambda: has_line(out, "0"))
    second = project.run(exp, "--indices", "0-1", "--command", command)
    first.communicate(timeout=10)
    assert first.returncode == 0 and second.returncode == 0
    assert sorted(out.read_text().split()) == ["0", "1"]
    assert "1 done, 1 already complete" in second.stderr


def test_experiment_edited_while_a_task_runs_each_index_runs_what_was_planned(project):
    exp = project.experiment("edit", {"x": [10, 20, 30, 40]})
    out, go = project.root / "ran.jsonl", project.root / "go"
    code = (
        "import json, os, sys, time\n"
        "from pyexp.experiment import loadExperiment\n"
        "e, i = loadExperiment(sys.argv[1]), int(sys.argv[2])\n"
        "while i == 0 and not os.path.exists(sys.argv[4]): time.sleep(0.02)\n"
        "row = dict(i=i, x=e.getPermutation(i)['x'], save=e.interpolateSavePath(i),\n"
        "           env=os.environ['PYEXP_SAVE_PATH'], path=e.path, arg=sys.argv[1])\n"
        "print(json.dumps(row), file=open(sys.argv[3], 'a'))\n"
    )
    command = shlex.join([sys.executable, "-c", code, "{experiment}", "{index}", str(out), str(go)])
    planned = project.load(exp)
    ledger = write_entry(project, exp, [[0, 1, 2, 3]], command=command)
    task = project.start("--ledger", ledger, "--task", "0")
    wait_for(lambda: list(project.root.glob("logs/**/tasks/*.idx")))
    exp.write_text(json.dumps({"metaParameters": {"x": [50, 10, 20, 40]}}))  # edited mid-task
    go.touch()
    _, err = task.communicate(timeout=60)
    assert task.returncode == 0, err
    rows = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["i"])
    assert [r["x"] for r in rows] == [10, 20, 30, 40]  # each index once, as planned
    for r in rows:
        assert r["save"] == r["env"] == planned.interpolateSavePath(r["i"])
        assert r["path"] == str(exp) and r["arg"].endswith(
            f"snapshots/{planned.fingerprint()}.json"
        )
    records = CompletionRecords(state_dirs(planned).done)
    assert all(records.is_complete(planned.getPermutation(i), 0) for i in range(4))
    assert not records.is_complete({"x": 50}, 0)  # recorded done only what ran


def test_index_whose_parameters_were_removed_is_skipped_with_one_line_and_never_recorded(project):
    exp = project.experiment("removed", {"x": [10, 20, 30, 40]})
    out = project.root / "ran"
    planned = project.load(exp)
    ledger = write_entry(project, exp, [[0, 1, 2, 3]], command=sh(f'echo "$PYEXP_INDEX" >> {out}'))
    exp.write_text(json.dumps({"metaParameters": {"x": [40, 25, 10]}}))  # 20, 30 removed
    result = project.run("--ledger", ledger, "--task", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().split()) == ["0", "3"]  # x=10 and x=40, under planned indices
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert skipped == [
        f"pyexp-run: index {i}: its parameters were removed from {exp}: skipped" for i in (1, 2)
    ]
    records = CompletionRecords(state_dirs(planned).done)
    done = [x for x in (10, 20, 30, 40) if records.is_complete({"x": x}, 0)]
    assert done == [10, 40]
    assert project.attempts(exp) == []


@pytest.mark.parametrize("damage", ["deleted", "not JSON"])
def test_task_runs_as_planned_when_the_experiment_file_is_gone_or_broken(project, damage):
    exp = project.experiment("gone", {"x": [10, 20]})
    out = project.root / "ran"
    ledger = write_entry(project, exp, [[0, 1]], command=sh(f'echo "$PYEXP_INDEX" >> {out}'))
    if damage == "deleted":
        exp.unlink()
    else:
        exp.write_text("{")
    result = project.run("--ledger", ledger, "--task", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().split()) == ["0", "1"]
    said = [line for line in result.stderr.splitlines() if "as submitted" in line]
    assert len(said) == 1 and str(exp) in said[0], result.stderr


def test_huge_edited_sweep_is_not_checked_for_removals(project, monkeypatch, capsys):
    from pyexp.runner import sweep_edits

    exp = project.experiment("huge", {"x": [10, 20, 30]})
    entry = Ledger(state_dirs(project.load(exp)).ledger).load(
        Path(write_entry(project, exp, [[0, 1, 2]])).stem
    )
    planned = project.load(exp)
    exp.write_text(json.dumps({"metaParameters": {"x": [10]}}))
    monkeypatch.setattr(sweep_edits, "MAX_CHECKED", 0)
    assert sweep_edits.still_swept(entry, planned, [0, 1, 2], sys.stdout) == [0, 1, 2]
    assert "sweeps 1 permutations" in capsys.readouterr().out


def test_ledger_task_runs_its_indices_cores_at_a_time(project):
    exp = project.experiment("par", {"a": [1, 2, 3, 4]})
    out = project.root / "events"
    script = 'echo "start $PYEXP_INDEX $PYEXP_EXPERIMENT" >> "$1"; sleep 0.5; echo end >> "$1"'
    ledger = write_entry(project, exp, [[0, 1], [2, 3]], command=sh(script, out), cores=2)
    result = project.run("--ledger", ledger, "--task", "1")
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert sorted(lines[:2]) == [f"start 2 {exp}", f"start 3 {exp}"]  # both before either ends
    assert [project.complete(exp, i) for i in range(4)] == [False, False, True, True]


def test_placeholder_values_never_reach_a_shell(project):
    folder = "experiments/x;$(touch pwned1)`touch pwned2`"
    meta = {"v": ["$(touch pwned3)", "; touch pwned4 #", "`touch pwned5`"]}
    exp = project.experiment("e", meta, folder=folder)
    out = project.root / "argv"
    code = (
        "import os, sys; "
        "print(sys.argv[1:], os.environ['PYEXP_SAVE_PATH'], file=open(sys.argv[1], 'a'))"
    )
    command = shlex.join([sys.executable, "-c", code, str(out), "{experiment}", "--e={experiment}"])
    work = project.root / "work"
    work.mkdir()
    result = project.run(exp, "--indices", "0-2", "--command", command, cwd=work)
    assert result.returncode == 0, result.stderr
    shell = sh('printf "%s\\n" "$2" >> "$1"', out, "{experiment}")
    assert project.run(exp, "--runs", "2", "--command", shell, cwd=work).returncode == 0
    assert not list(project.root.rglob("pwned*"))
    text = out.read_text()
    assert f"'{exp}', '--e={exp}'" in text and "$(touch pwned3)" in text
    assert text.count(f"{exp}\n") == 3  # indices 3-5 (run 1) through sh, verbatim


def test_missing_or_bad_command_is_a_one_line_error(project):
    exp = project.experiment("nocmd", {"a": [1]})
    result = project.run(exp, "--indices", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no command" in result.stderr
    bad = project.run(exp, "--indices", "0", "--command", "run {indx}")
    assert bad.returncode == 2 and "unknown placeholder {indx}" in bad.stderr


def test_command_comes_from_config_json(project):
    project.config.write_text(
        json.dumps({"state_path": "state", "log_path": "logs", "command": "true {index} {run}"})
    )
    exp = project.experiment("cfg", {"a": [1, 2]})
    assert project.run(exp, "--runs", "1").returncode == 0
    assert project.complete(exp, 0) and project.complete(exp, 1)


def test_command_template_fills_tokens_without_reparsing():
    template = CommandTemplate("python main.py -e {experiment} -i {index} --tag=r{run} '{{x}}'")
    argv = template.argv("a b;$(x).json", 7, 2)
    assert argv == ["python", "main.py", "-e", "a b;$(x).json", "-i", "7", "--tag=r2", "{x}"]
    for bad, message in [
        ("run {nope}", "unknown placeholder"),
        ("run {", "braces"),
        ("'", "quotation"),
    ]:
        with pytest.raises(RunnerError, match=message):
            CommandTemplate(bad)


def test_tilde_in_the_command_is_the_home_folder_as_in_a_shell(project, monkeypatch):
    monkeypatch.setenv("HOME", str(project.root / "home {x}"))
    argv = CommandTemplate("~/bin/run {index} a~b ~/{run}.txt").argv("e.json", 3, 1)
    home = str(project.root / "home {x}")
    assert argv == [f"{home}/bin/run", "3", "a~b", f"{home}/1.txt"]
    assert CommandTemplate("~no-such-user-here/x").argv("e", 0, 0) == ["~no-such-user-here/x"]
    # In a real run: the program itself lives under ~.
    tool = project.root / "home {x}" / "bin" / "tool"
    tool.parent.mkdir(parents=True)
    tool.write_text(f"#!/bin/sh\necho ran $1 >> {shlex.quote(str(project.root / 'ran'))}\n")
    tool.chmod(0o755)
    exp = project.experiment("home", {"a": [1, 2]})
    done = project.run(exp, "--runs", "1", "--command", "~/bin/tool {index}", env={"HOME": home})
    assert done.returncode == 0, done.stderr
    assert sorted((project.root / "ran").read_text().split()) == ["0", "1", "ran", "ran"]


def test_the_commands_python_is_the_one_running_pyexp_run_even_with_a_bare_path(project):
    exp = project.experiment("py", {"a": [1]})
    command = "python -c 'import sys; print(\"command python:\", sys.executable)'"
    bare = {"PATH": str(project.root / "empty")}  # no python anywhere on it
    done = project.run(exp, "--runs", "1", "--command", command, env=bare)
    assert done.returncode == 0, done.stderr
    log = project.log(exp, 0)
    here = os.path.dirname(sys.executable)  # the venv's bin, not resolved through its symlinks
    assert f"command python: {here}/python" in log.splitlines()
    assert f" python={sys.executable}" in log.splitlines()[0]  # the header says which ran
    # Turned off (cluster config "python_on_path": false), PATH is the job's own.
    off = project.run(exp, "--runs", "1", "--command", command, env={**bare, PYTHON_ON_PATH: "0"})
    assert off.returncode == 0 and project.complete(exp, 0)  # done already: nothing ran
    other = project.experiment("py2", {"a": [1]})
    off = project.run(other, "--runs", "1", "--command", command, env={**bare, PYTHON_ON_PATH: "0"})
    assert off.returncode == 1 and "cannot start 'python'" in project.log(other, 0)


def test_a_warning_signal_before_the_runner_was_up_starts_no_index_and_exits_stopped(project):
    exp = project.experiment("early", {"a": [1, 2]})
    done = project.run(exp, "--runs", "1", "--command", "true {index}", env={EARLY_SIGNAL: "USR1"})
    assert done.returncode == 128 + signal.SIGUSR1, done.stderr
    assert "before pyexp-run was up: starting no index" in done.stderr
    assert not project.complete(exp, 0) and project.attempts(exp) == []


def test_a_stop_signal_while_pyexp_run_starts_up_is_noted_and_starts_no_index(project):
    # Slurm's TERM or USR1 between exec and the runner's own signal watch: noted, not lost.
    exp = project.experiment("startup", {"a": [1, 2]})
    code = (
        "import os, signal, sys\n"
        "from pyexp.cli import run\n"
        "run._note_stop_signals()  # what main() does first\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        f"sys.exit(run.main([{str(exp)!r}, '--runs', '1', '--command', 'true {{index}}']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=project.env, capture_output=True, text=True
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "before pyexp-run was up: starting no index" in done.stderr
    assert not project.complete(exp, 0) and project.attempts(exp) == []


def test_parse_indices():
    assert parse_indices("0-3,7,2") == [0, 1, 2, 3, 7]
    for bad in ("3-1", "x", "-1", "1-"):
        with pytest.raises(RunnerError):
            parse_indices(bad)


def test_oom_kills_reads_this_process_cgroup(tmp_path):
    (tmp_path / "proc").write_text("0::/job_1/step_batch\n")
    events = tmp_path / "cg" / "job_1" / "step_batch"
    events.mkdir(parents=True)
    (events / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert oom_kills(str(tmp_path / "cg"), str(tmp_path / "proc")) == 2
    assert oom_kills(str(tmp_path / "nothing"), str(tmp_path / "proc")) is None


@pytest.mark.slurm
def test_slurm_job_overrunning_its_time_limit_stops_cleanly(project):
    exp = project.experiment("overrun", {"a": [1, 2]})
    starts, terms, log = project.root / "starts", project.root / "terms", project.root / "job.out"
    script = (
        'trap "echo term >> \\"$1\\"; exit 0" TERM; echo "$PYEXP_INDEX" >> "$2"; sleep 300 & wait'
    )
    ledger = write_entry(project, exp, [[0, 1]], command=sh(script, terms, starts))
    job = project.root / "job.sh"
    job.write_text(
        # Slurm may send the signal up to 60 s before its lead (sbatch(1)): a 2-minute limit with
        # a 30 s lead sends USR1 30-90 s after the start, never before the index is up.
        "#!/bin/bash\n#SBATCH --time=2\n#SBATCH --signal=B:USR1@30\n#SBATCH --array=0\n"
        f"#SBATCH --output={log}\n"
        f"exec {shlex.quote(sys.executable)} -m pyexp.cli.run --ledger {shlex.quote(ledger)}\n"
    )
    env = {**project.env, "PYEXP_GRACE_SECONDS": "5"}
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(job)], env=env, capture_output=True, text=True, check=True
    )
    job_id = submitted.stdout.strip().split(";")[0]
    squeue = ["squeue", "-h", "-j", job_id, "-o", "%i"]
    wait_for(lambda: not subprocess.run(squeue, capture_output=True, text=True).stdout, 200, 0.5)
    assert "SIGUSR1" in log.read_text()
    assert starts.exists() and terms.exists(), log.read_text()
    assert starts.read_text() == "0\n" and terms.read_text() == "term\n"
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == TIMEOUT and attempt["job"] == f"{job_id}_0"
    assert not project.complete(exp, 0) and project.leases(exp) == []


def test_in_process_run_with_a_config_object_restores_signal_handlers(project):
    import io

    from pyexp.runner import run_direct

    exp = project.experiment("inproc", {"a": [1, 2, 3]})
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    out = io.StringIO()
    status = run_direct(
        str(exp), "0-2", command="true", config=load_config(str(project.config)), out=out
    )
    assert status == 0 and "3 done" in out.getvalue()
    assert {s: signal.getsignal(s) for s in before} == before
    assert all(project.complete(exp, i) for i in range(3))


def test_indices_with_equal_parameters_never_run_at_the_same_time(project):
    path = project.experiment("dup", {"seed": [1, 1, 2]})
    log = project.root / "runs.txt"
    # Each run records its start and end; overlapping runs of one key would interleave.
    command = sh('echo "start $1" >> "$2"; sleep 0.3; echo "end $1" >> "$2"', "{index}", log)
    result = project.run(path, "--indices", "0-2", "--parallel", "3", "--command", command)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().split("\n")
    ran = [line.split()[1] for line in lines if line.startswith("start")]
    assert sorted(ran) in (["0", "2"], ["1", "2"])  # one of the equal pair; the other is done
    assert "1 already complete" in result.stderr


def test_unwritable_state_is_one_line_and_the_other_indices_go_on(project):
    path = project.experiment("ro", {"x": [0, 1]})
    done = Path(state_dirs(project.load(path)).done)
    log = project.root / "ends.txt"
    # Index 0 turns the records folder into a file: every completion write after that fails.
    script = 'if [ "$1" = 0 ]; then rm -rf "$3"; echo x > "$3"; fi; sleep "0.$1"; echo "$1" >> "$2"'
    command = sh(script, "{index}", log, done)
    result = project.run(path, "--indices", "0-1", "--parallel", "2", "--command", command)
    assert result.returncode == 1
    # Index 1 either ran (its record then failed) or was not started (its check failed):
    # either way it stays missing, index 0 was not killed, and each says so in one line.
    assert "0" in log.read_text().split()
    lines = [x for x in result.stderr.splitlines() if "cannot be" in x]
    assert sorted(x.split()[2] for x in lines) == ["0:", "1:"]
    assert {a["outcome"] for a in project.attempts(path)} == {FAILED}
    assert "Traceback" not in result.stderr


def test_stop_records_every_attempt_at_once_when_children_exited_before_the_signal(project):
    # scancel signals every process at once: the children may exit before the runner's
    # handler runs, and their SIGCHLD wake-up is consumed before the stop starts waiting.
    exp = project.experiment("race", {"a": [1, 2, 3]})
    pids = project.root / "pids"
    env = {k: v for k, v in project.env.items() if k != "PYEXP_GRACE_SECONDS"}
    runner = subprocess.Popen(
        [*RUN, str(exp), "--indices", "0-2", "--parallel", "3", "--command",
         sh('echo $$ >> "$1"; exec sleep 100', pids)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: pids.exists() and len(pids.read_text().split("\n")) == 4)
    children = [int(p) for p in pids.read_text().split()]
    runner.send_signal(signal.SIGSTOP)
    for child in children:
        os.kill(child, signal.SIGTERM)
    time.sleep(0.3)
    runner.send_signal(signal.SIGTERM)
    start = time.monotonic()
    runner.send_signal(signal.SIGCONT)
    _, err = runner.communicate(timeout=60)
    assert time.monotonic() - start < 1.5, err  # not the grace period
    assert runner.returncode == 128 + signal.SIGTERM
    attempts = project.attempts(exp)
    assert sorted(a["index"] for a in attempts) == [0, 1, 2]
    assert {(a["outcome"], a["exit_code"]) for a in attempts} == {(PREEMPTED, -signal.SIGTERM)}
    assert project.leases(exp) == []
    assert DEFAULT_GRACE_SECONDS <= 30 - 5  # a stop ends before Slurm's default KillWait


@pytest.mark.parametrize("runner_signalled", [True, False])
def test_command_killed_by_the_jobs_stop_signal_just_before_the_runner_is_not_a_failure(
    project, runner_signalled
):
    # scancel without a pause: the command dies of SIGTERM and is reaped before the runner's
    # own SIGTERM is handled. It is a preemption, not the user's failure; a command that dies
    # of SIGTERM while the runner is never told to stop is a failure.
    exp = project.experiment("cancelled", {"a": [1]})
    pids = project.root / "pids"
    runner = project.start(
        exp, "--indices", "0", "--command", sh('echo $$ >> "$1"; exec sleep 100', pids)
    )
    wait_for(lambda: pids.exists() and pids.read_text().strip())
    os.kill(int(pids.read_text()), signal.SIGTERM)
    if runner_signalled:
        time.sleep(0.3)
        runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=60)
    ((attempt),) = project.attempts(exp)
    assert attempt["outcome"] == (PREEMPTED if runner_signalled else FAILED), err
    assert runner.returncode == (128 + signal.SIGTERM if runner_signalled else 1)
    assert project.leases(exp) == []


def test_lease_lost_mid_run_kills_the_command_and_records_lease_lost(project):
    exp = project.experiment("lost", {"a": [1, 2]})
    pids = project.root / "pids"
    command = sh(
        'echo "$PYEXP_INDEX $$" >> "$1"; [ "$PYEXP_INDEX" = 0 ] && exec sleep 30; sleep 3', pids
    )
    runner = project.start(
        exp, "--indices", "0-1", "--parallel", "2", "--command", command,
        env={"PYEXP_LEASE_SECONDS": "1"},
    )  # fmt: skip
    wait_for(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2)
    child = dict(line.split() for line in pids.read_text().splitlines())["0"]
    loaded = project.load(exp)
    marker = Path(state_dirs(loaded).leases) / f"{record_key(loaded.getPermutation(0), 0)}.lease"
    marker.unlink()  # as if another runner had broken it and taken the index
    lost = time.monotonic()
    wait_for(lambda: not alive(int(child)), 5)
    assert time.monotonic() - lost < 2  # two heartbeats (1/3 s each) and a kill
    assert alive(runner.pid)  # the sibling index keeps running
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 1, err
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == LEASE_LOST and attempt["index"] == 0
    assert attempt["exit_code"] == -signal.SIGKILL
    assert not project.complete(exp, 0) and project.complete(exp, 1)
    assert "index 0: lease_lost" in err and "1 done" in err


def test_log_that_cannot_be_opened_fails_its_indices_with_the_reason(project):
    exp = project.experiment("badlog", {"a": [1, 2, 3]})
    log_dir = project.root / "logs" / "experiments" / "badlog"
    log_dir.mkdir(parents=True)
    (log_dir / "tasks").write_text("")  # the task logs' folder cannot be made
    result = project.run(exp, "--indices", "0-2", "--parallel", "3", "--command", "sleep 0.3")
    assert result.returncode == 1
    assert [project.complete(exp, i) for i in range(3)] == [False, False, False]
    attempts = project.attempts(exp)
    assert sorted(a["index"] for a in attempts) == [0, 1, 2]
    assert all(a["outcome"] == FAILED and a["exit_code"] is None for a in attempts)
    assert all("log cannot be written" in a["error"] for a in attempts)
    [line] = [x for x in result.stderr.splitlines() if "index 1:" in x]
    assert "File exists" in line or "Not a directory" in line
    assert project.leases(exp) == []


def failing_for(index: int, real):
    def write(*args, **kwargs):
        info = args[2] if len(args) > 2 else kwargs.get("info", {})
        if info.get("index") == index:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    return write


def test_completion_record_write_failure_fails_that_index_only(project):
    path = project.experiment("norec", {"a": [1, 2, 3]})
    runner, out = in_process_runner(project, path, "true")
    runner.records.mark_complete = failing_for(1, runner.records.mark_complete)
    assert runner.run(range(3)) == 1
    assert [project.complete(path, i) for i in range(3)] == [True, False, True]
    [attempt] = project.attempts(path)
    assert attempt["outcome"] == FAILED and attempt["index"] == 1 and attempt["exit_code"] == 0
    assert "No space left" in attempt["error"]
    assert "2 done" in out.getvalue() and project.leases(path) == []


def test_attempt_write_failure_fails_that_index_only(project):
    path = project.experiment("noatt", {"a": [1, 2, 3]})
    runner, out = in_process_runner(project, path, sh('[ "$PYEXP_INDEX" = 1 ] && exit 4; exit 0'))

    def record(key, outcome, info, attempt=None):
        raise OSError(28, "No space left on device")

    runner.attempts.record = record
    assert runner.run(range(3)) == 1
    assert [project.complete(path, i) for i in range(3)] == [True, False, True]
    [line] = [x for x in out.getvalue().splitlines() if "index 1:" in x]
    assert "unrecorded" in line and "No space left" in line and "stays missing" in line
    assert project.leases(path) == []


def test_ctrl_c_during_a_local_submit_is_one_line_and_records_the_stop(project):
    exp = project.experiment("ctrlc", {"a": [1, 2, 3, 4, 5, 6]})
    starts = project.root / "starts"
    command = sh('echo "$PYEXP_INDEX" >> "$1"; exec sleep 30', starts)
    argv = [str(exp), "--runs", "1", "--cluster", "local", "--local", "--parallel", "1"]
    argv += ["--command", command]
    submit = subprocess.Popen(
        [sys.executable, "-m", "pyexp.cli.submit", *argv],
        env=project.env, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # its own group, as a terminal's foreground job
    )  # fmt: skip
    wait_for(lambda: starts.exists() and starts.read_text().endswith("\n"), 30)
    os.killpg(submit.pid, signal.SIGINT)  # what Ctrl-C does
    out, err = submit.communicate(timeout=30)
    assert submit.returncode != 0 and "Traceback" not in out + err
    assert err.count("\n") == 1 and "interrupted" in err
    assert {a["outcome"] for a in project.attempts(exp)} == {PREEMPTED}
    assert len(starts.read_text().split()) < 6  # the queued tasks never started
    assert project.leases(exp) == []


def test_command_exiting_0_after_its_lease_was_lost_is_not_recorded_done(project):
    path = project.experiment("lost0", {"a": [1]})
    loaded = project.load(path)
    marker = Path(state_dirs(loaded).leases) / f"{record_key(loaded.getPermutation(0), 0)}.lease"
    runner, out = in_process_runner(project, path, sh('rm "$1"; sleep 1.5; exit 0', marker))
    runner.leases.duration = 1.0
    runner._kill_lost = lambda: None  # the loss is noticed too late to stop the command
    assert runner.run([0]) == 1
    [attempt] = project.attempts(path)
    assert attempt["outcome"] == LEASE_LOST and attempt["exit_code"] == 0
    assert not project.complete(path, 0)
    assert "index 0: lease_lost (exit 0" in out.getvalue()


def test_an_attempts_output_is_capped_head_and_tail_kept_with_the_cut_said(project):
    write_config(project.root, {"state_path": "state", "log_path": "logs", "max_log_bytes": 2000})
    exp = project.experiment("loud", {"a": [1]})
    loud = "print('first line'); print('x' * 999_999); print('last line')"
    command = shlex.join([sys.executable, "-c", loud])
    result = project.run(exp, "--indices", "0", "--command", command)
    assert result.returncode == 0, result.stderr
    log = project.log(exp, 0)
    assert "first line" in log and "last line" in log and "exit 0" in log
    assert "bytes of output cut here (max_log_bytes)" in log
    [path] = (project.root / "logs").rglob("tasks/*.log")
    assert path.stat().st_size < 3000  # 1 MB printed, about 2 kB kept


def test_logs_follow_the_work_after_a_sweep_edit_and_say_the_old_index(project):
    from pyexp.cli.logs import _lines

    exp = project.experiment("moved", {"a": [1, 2]})
    result = project.run(exp, "--indices", "0", "--command", sh('echo "ran with $1"', "{index}"))
    assert result.returncode == 0, result.stderr
    exp.write_text(json.dumps({"metaParameters": {"a": [0, 1, 2]}}))  # a=1 is index 1 now
    moved = "\n".join(_lines(project.load(exp), 1, 20))
    assert "1 attempt" in moved and "ran with 0" in moved
    assert "it ran as index 0, before the sweep was edited" in moved
    assert "no log yet" in "\n".join(_lines(project.load(exp), 0, 20))  # a=0 never ran


def test_a_sweep_leaves_no_file_per_index_in_its_logs(project):
    exp = project.experiment("few", {"a": list(range(30))})
    result = project.run(exp, "--indices", "0-29", "--parallel", "3", "--command", "true")
    assert result.returncode == 0, result.stderr
    files = [p for p in (project.root / "logs").rglob("*") if p.is_file()]
    assert len(files) <= 4  # three slot logs and one .idx, for 30 indices
    assert all("=== " in project.log(exp, i) for i in range(30))


def test_a_failed_attempt_names_where_its_output_starts_in_the_shared_slot_log(project):
    from pyexp.cli.status import _tail, _where

    exp = project.experiment("tails", {"a": [1, 2, 3]})
    command = sh('echo "out of $1"; exit 1', "{index}")
    result = project.run(exp, "--indices", "0-2", "--command", command)
    assert result.returncode == 1
    attempts = sorted(project.attempts(exp), key=lambda a: a["index"])
    assert len({a["log"] for a in attempts}) == 1  # one slot, one log
    loaded = project.load(exp)
    for a in attempts:  # pyexp-status -v shows each index's own tail, not the log's last
        assert f"out of {a['index']}" in _tail(*_where(a["log"], a["log_offset"], loaded, a["key"]))
    # Folded at rest into an archive: the same tails, found by key; the task's files are gone.
    assert task_logs.fold(log_dir(loaded), set(), []) == 2  # the slot log and the .idx
    assert not os.path.exists(attempts[0]["log"])
    for a in attempts:
        assert f"out of {a['index']}" in _tail(*_where(a["log"], a["log_offset"], loaded, a["key"]))
        assert f"out of {a['index']}" in project.log(exp, a["index"])
