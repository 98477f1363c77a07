"""Checkpoints: a folder per (parameters, run) that survives attempts; stops that saved continue."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import Project, wait_for

from pyexp.standing.reconcile import CONTINUING as CONTINUING_STATUS
from pyexp.standing.reconcile import FAILED_OUT, classify
from pyexp.standing.slurm_states import QueueSnapshot
from pyexp.state import checkpoints
from pyexp.state.attempts import CONTINUING, STALLED, TIMEOUT
from pyexp.state.layout import state_dirs
from pyexp.state.records import record_key

TRAIN = Path(__file__).parent / "data" / "train_checkpointed.py"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def train(history: Path, total: int = 1000, seconds: float = 0.02, every: int = 5, *extra) -> str:
    return shlex.join(
        [sys.executable, str(TRAIN), str(total), str(seconds), str(every), str(history), *extra]
    )


def saves(history: Path, index: int = 0) -> list[int]:
    lines = history.read_text().splitlines() if history.exists() else []
    return [int(x.split()[2]) for x in lines if x.startswith(f"{index} save ")]


def folder(project: Project, exp: Path, index: int) -> Path:
    e = project.load(exp)
    key = record_key(e.getPermutation(index), e.getRun(index))
    return Path(checkpoints.folder_of(state_dirs(e).checkpoints, key))


def stopped_run(project: Project, exp: Path, command: str, history: Path, signum=signal.SIGUSR1):
    """One pyexp-run of index 0, stopped by signum once the command saved a new step."""
    before = len(saves(history))
    runner = project.start(exp, "--indices", "0", "--command", command)
    wait_for(lambda: len(saves(history)) > before + 1, timeout=30)
    runner.send_signal(signum)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 128 + signum, err
    return err


def standing(project: Project, exp: Path, max_attempts: int = 3):
    return classify(project.load(exp), 1, QueueSnapshot(), max_attempts)


def test_a_stop_after_saving_is_continuing_and_the_next_attempt_resumes_where_it_saved(project):
    exp = project.experiment("long", {"a": [1, 2]})
    history = project.root / "history"
    command = train(history)
    err = stopped_run(project, exp, command, history)
    assert "1 continuing" in err
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == CONTINUING and attempt["checkpoint_mark"].startswith("step:")
    s = standing(project, exp, max_attempts=1)
    assert 0 in s.indices(CONTINUING_STATUS) and not s.indices(FAILED_OUT)  # never charged
    assert (folder(project, exp, 0) / checkpoints.STATE_FILE).exists()
    stopped_run(project, exp, command, history, signal.SIGTERM)  # preemption, scancel
    last = saves(history)[-1]
    done = project.run(exp, "--indices", "0", "--command", train(history, total=last + 3))
    assert done.returncode == 0, done.stderr
    starts = [int(x.split()[2]) for x in history.read_text().splitlines() if " start " in x]
    assert len(starts) == 3 and starts[0] == 0 and starts == sorted(starts)  # never backwards
    assert project.complete(exp, 0) and standing(project, exp).counts()["done"] == 1
    assert not folder(project, exp, 0).exists()  # removed once done


def test_a_command_that_never_saves_is_recorded_timeout(project):
    exp = project.experiment("never", {"a": [1]})
    started = project.root / "started"
    command = shlex.join(["sh", "-c", 'touch "$0"; exec sleep 30', str(started)])
    runner = project.start(exp, "--indices", "0", "--command", command)
    wait_for(started.exists)
    runner.send_signal(signal.SIGUSR1)
    runner.communicate(timeout=30)
    [attempt] = project.attempts(exp)
    assert attempt["outcome"] == TIMEOUT and "checkpoint_mark" not in attempt
    assert not folder(project, exp, 0).exists()  # nothing saved: no folder left behind


def test_a_checkpoint_that_never_progresses_is_charged_after_max_attempts(project):
    exp = project.experiment("stall", {"a": [1]})
    history = project.root / "history"
    command = train(history, every=2) + " --stall"
    outcomes = []
    for _ in range(3):
        stopped_run(project, exp, command, history)
        outcomes = [a["outcome"] for a in sorted(project.attempts(exp), key=lambda a: a["time"])]
    assert outcomes == [CONTINUING, STALLED, STALLED]
    assert 0 in standing(project, exp, max_attempts=2).indices(FAILED_OUT)
    assert 0 in standing(project, exp, max_attempts=3).indices("failing")


def test_sigkill_while_saving_leaves_the_previous_complete_checkpoint(tmp_path):
    saver = (
        "import os, pyexp\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    pyexp.save_checkpoint({'step': i, 'blob': bytes([i % 256]) * 3_000_000}, step=i)\n"
    )
    env = {**os.environ, "PYEXP_CHECKPOINT_DIR": str(tmp_path)}
    halves = 0
    for delay in (0.2, 0.35, 0.5, 0.65, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", saver], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        halves += any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # killed mid-save
        loader = (
            "import pyexp\n"
            "s = pyexp.load_checkpoint()\n"
            "assert s['blob'] == bytes([s['step'] % 256]) * 3_000_000\n"
            "print(s['step'])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", loader], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) >= 1
        checkpoints.prepare(str(tmp_path))  # the next attempt starts without the half save
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert halves >= 1


def test_checkpoint_folder_that_cannot_be_created_fails_that_index_in_one_line(project):
    exp = project.experiment("ro", {"a": [1, 2]})
    assert project.run(exp, "--indices", "0-1", "--command", "false").returncode == 1
    root = Path(state_dirs(project.load(exp)).checkpoints)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("not a folder")  # as a read-only or full filesystem would refuse it
    # Work with an earlier attempt: the runner prepares its folder before the command starts.
    result = project.run(exp, "--indices", "0-1", "--command", "true")
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if "checkpoint folder" in x]
    assert len(lines) == 2 and str(folder(project, exp, 0)) in result.stderr
    assert all(a["outcome"] == "failed" for a in project.attempts(exp))


def test_a_fresh_index_gets_its_checkpoint_folder_on_first_use_not_before(project):
    exp = project.experiment("lazy", {"a": [1, 2, 3, 4, 5]})
    seen = project.root / "seen"
    use = (
        "import os, sys, pyexp\n"
        "before = os.path.isdir(os.environ['PYEXP_CHECKPOINT_DIR'])\n"
        "after = os.path.isdir(pyexp.checkpoint_dir())\n"
        "open(sys.argv[1], 'a').write('%s %s\\n' % (before, after))\n"
    )
    command = shlex.join([sys.executable, "-c", use, str(seen)])
    assert project.run(exp, "--indices", "0-2", "--command", command).returncode == 0
    assert seen.read_text().splitlines() == ["False True"] * 3
    root = Path(state_dirs(project.load(exp)).checkpoints)
    assert not root.exists() or not list(root.iterdir())  # done: removed when the run ended
    if root.exists():
        root.rmdir()
    root.write_text("not a folder")  # a fresh index whose folder cannot be made fails alone
    out = project.run(exp, "--indices", "3-4", "--command", command)
    assert out.returncode == 1 and "2 failed" in out.stderr, out.stderr
    logs = "".join(p.read_text() for p in (project.root / "logs").rglob("*.log"))
    assert logs.count("the checkpoint folder cannot be created") == 2


def test_a_checkpoint_of_other_parameters_is_never_loaded(project):
    exp = project.experiment("edit", {"a": [1, 2]})
    history = project.root / "history"
    stopped_run(project, exp, train(history), history)
    project.experiment("edit", {"a": [5, 1, 2]})  # index 0 now means a=5
    fresh = project.root / "fresh"
    out = project.run(exp, "--indices", "0", "--command", train(fresh, total=3))
    assert out.returncode == 0, out.stderr
    assert fresh.read_text().splitlines()[0] == "0 start 0"  # a=5 started afresh
    loaded = project.root / "loaded"
    show = f"import pyexp; open({str(loaded)!r}, 'w').write(str(pyexp.load_checkpoint()))"
    again = project.run(
        exp, "--indices", "1", "--command", shlex.join([sys.executable, "-c", show])
    )
    assert again.returncode == 0, again.stderr
    assert loaded.read_text() == str({"step": saves(history)[-1]})  # a=1 finds its own


def test_keep_checkpoints_in_config_keeps_the_folder_of_a_done_index(project):
    project.config.write_text(
        json.dumps({"state_path": "state", "log_path": "logs", "keep_checkpoints": True})
    )
    exp = project.experiment("keep", {"a": [1]})
    history = project.root / "history"
    assert (
        project.run(exp, "--indices", "0", "--command", train(history, total=4, every=2)).returncode
        == 0
    )
    assert (folder(project, exp, 0) / checkpoints.STATE_FILE).exists()


def test_checkpoint_dir_outside_an_index_is_a_one_line_error(monkeypatch):
    import pyexp

    monkeypatch.delenv("PYEXP_CHECKPOINT_DIR", raising=False)
    with pytest.raises(pyexp.PyExpError, match="PYEXP_CHECKPOINT_DIR"):
        pyexp.checkpoint_dir()


CLAIMER = """\
import os, signal, sys, pyexp
path, out, indices = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
for job in pyexp.claim(path, runs=1, indices=indices):
    with job:
        assert pyexp.checkpoint_dir() == job.checkpoint_dir
        state = pyexp.load_checkpoint({"step": 0})
        with open(out, "a") as f:
            f.write(f"{job.index} {state['step']}\\n")
        if indices:  # the first worker: saves, then is preempted
            pyexp.save_checkpoint({"step": 5}, step=5, fraction=0.5)
            os.kill(os.getpid(), signal.SIGTERM)
"""


def test_claim_jobs_checkpoint_and_a_continuing_index_is_claimed_first(project):
    exp = project.experiment("claimed", {"a": [1, 2, 3]})
    script, out = project.root / "claimer.py", project.root / "out"
    script.write_text(CLAIMER)

    def claim(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(script), str(exp), str(out), *args]
        return subprocess.run(argv, env=project.env, capture_output=True, text=True, timeout=60)

    first = claim("2")
    assert "1 continuing" in first.stderr, first.stderr
    assert [a["outcome"] for a in project.attempts(exp)] == [CONTINUING]
    second = claim()
    assert second.returncode == 0, second.stderr
    assert out.read_text().splitlines() == ["2 0", "2 5", "0 0", "1 0"]  # continuing first
    assert all(project.complete(exp, i) for i in range(3))
    assert not folder(project, exp, 2).exists()


def test_status_shows_continuing_indices_with_restarts_and_checkpoint_age(project):
    exp = project.experiment("shown", {"a": [1, 2]})
    history = project.root / "history"
    stopped_run(project, exp, train(history), history)
    stopped_run(project, exp, train(history), history)
    status = [sys.executable, "-m", "pyexp", "status", str(exp), "--no-slurm"]
    run = {"env": project.env, "capture_output": True, "text": True, "timeout": 60}
    report = json.loads(subprocess.run([*status, "--json"], **run).stdout)[0]
    assert report["continuing"] == 1 and report["failing"] == 0
    [row] = report["continuing_indices"]
    assert row["index"] == 0 and row["restarts"] == 2 and 0 <= row["checkpoint_age_seconds"] < 30
    assert row["progress"]["step"] == saves(history)[-1]
    text = subprocess.run(status, **run).stdout
    assert "index 0: continuing, 2 restarts so far, last checkpoint 0:0" in text
    assert f"at step {saves(history)[-1]}" in text


def test_keep_checkpoints_must_be_true_or_false(tmp_path):
    from pyexp.config import load_config
    from pyexp.errors import ConfigError

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"keep_checkpoints": "yes"}))
    with pytest.raises(ConfigError, match="'keep_checkpoints' must be true or false"):
        load_config(str(path))


def test_a_continuing_index_fits_by_the_time_its_saved_fraction_leaves():
    from pyexp.runner.pool import TimeBudget

    budget = TimeBudget(time.monotonic() + 100, index_minutes=2.5)  # 150 s estimated, 100 s left
    assert budget.refusal() is not None  # a new index does not fit
    assert budget.refusal(0.5) is None  # half done: 75 s left to do
    assert budget.refusal(0.2) is not None


def test_when_the_queue_has_room_for_some_continuing_indices_are_submitted_first():
    from pyexp.indexset import IndexSet
    from pyexp.scheduler.submit import continuing_first

    missing = IndexSet.span(0, 100)
    assert list(continuing_first(missing, IndexSet.of([50, 90]), 4)) == [0, 1, 50, 90]
    assert list(continuing_first(missing, IndexSet.of([50, 90, 95]), 2)) == [50, 90]
