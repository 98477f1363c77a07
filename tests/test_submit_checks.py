"""What pyexp-submit refuses before anything runs, instead of failing index by index: a program
that cannot be found, folders that cannot be written, and save paths another experiment file
already saves to (also across submissions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import no_slurm_env

from pyexp.cli.submit import main as submit_main
from pyexp.config import getConfig


class Folder:
    """A project: config.json (a command that succeeds) and experiment files under experiments/."""

    def __init__(self, root, **config) -> None:
        self.root = root
        (root / "config.json").write_text(json.dumps({"command": "true {index}", **config}))

    def experiment(self, rel: str, meta: dict, **fields) -> str:
        path = self.root / "experiments" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**fields, "metaParameters": meta}))
        return str(path)

    def submit(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")} | no_slurm_env()
        argv = [sys.executable, "-m", "pyexp", "submit", *args, "--runs", "1", "--local"]
        return subprocess.run(argv, cwd=self.root, env=env, capture_output=True, text=True)


def _refused(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1 and run.stderr.startswith("pyexp-submit: "), run.stdout + run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    return run.stderr


# ---------------------------------------------------------------- the command's program


def test_a_misspelt_program_is_refused_at_submit(tmp_path):
    folder = Folder(tmp_path, command="pyhton main.py -i {index}")
    exp = folder.experiment("mc/a.json", {"alpha": [0.1, 0.2]})
    said = _refused(folder.submit(exp))
    assert "the command's program 'pyhton' is not in" in said and "nor on PATH" in said
    assert "did you mean 'python" in said and "fix 'command' in config.json" in said
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_a_program_found_only_beside_the_python_that_runs_pyexp_passes(tmp_path, monkeypatch):
    # The venv's own scripts (pyexp-run here) are first on the tasks' PATH, even if not on ours.
    folder = Folder(tmp_path, command="pyexp-run --help {index}")
    exp = folder.experiment("mc/a.json", {"alpha": [0.1]})
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    run = folder.submit(exp)
    assert "is not in" not in run.stderr, run.stderr


def test_a_program_path_must_exist_and_be_executable(tmp_path):
    folder = Folder(tmp_path, command="./bin/train.sh {index}")
    exp = folder.experiment("mc/a.json", {"alpha": [0.1]})
    script = tmp_path / "bin" / "train.sh"
    assert f"program {script} does not exist" in _refused(folder.submit(exp))
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    assert f"program {script} is not an executable file" in _refused(folder.submit(exp))
    script.chmod(0o755)
    run = folder.submit(exp)
    assert run.returncode == 0, run.stderr


def test_with_setup_lines_a_missing_program_is_a_warning_on_the_cluster(
    project,
    capsys,
):
    (project["root"] / "config.json").write_text(json.dumps({"command": "pyhton {index}"}))
    getConfig.cache_clear()
    with open(project["cluster"]) as f:
        cluster = json.load(f)
    argv = [project["exp"], "--runs", "1", "--cluster", project["cluster"]]
    assert submit_main(argv) == 1  # no setup line could put it on PATH: refused
    assert "'pyhton' is not in" in capsys.readouterr().err
    with open(project["cluster"], "w") as f:
        json.dump({**cluster, "setup": ["module load python/3.11"]}, f)
    assert submit_main([*argv, "--local"]) == 1  # here, this PATH is the tasks' PATH
    assert "'pyhton' is not in" in capsys.readouterr().err
    assert submit_main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'pyhton' is not in" in err
    assert "warning" in err and "not refused: the cluster's setup lines may put it on PATH" in err


# ---------------------------------------------------------------- folders that cannot be written


@pytest.mark.parametrize("key", ["save_path", "log_path", "state_path"])
def test_a_folder_that_cannot_be_written_is_refused_in_one_line(tmp_path, tmpfs, key):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    value = str(tmpfs / "here") + ("/{name}/{params}/{run}" if key == "save_path" else "")
    folder = Folder(tmp_path, **{key: value})
    exp = folder.experiment("mc/a.json", {"alpha": [0.1]})
    said = _refused(folder.submit(exp))
    assert f"{key} folder {tmpfs / 'here'}" in said and "cannot be written" in said
    assert f"({tmpfs} is not writable)" in said and f"point {key} in config.json elsewhere" in said


# ---------------------------------------------------------------- save paths that meet


def test_two_files_in_one_folder_sharing_save_paths_are_refused_across_submissions(tmp_path):
    folder = Folder(tmp_path)
    a = folder.experiment("mc/sarsa.json", {"alpha": [0.1, 0.5]}, agent="SARSA")
    b = folder.experiment("mc/q.json", {"alpha": [0.5, 1.0]}, agent="Q")
    assert folder.submit(a).returncode == 0
    said = _refused(folder.submit(b))
    assert said.startswith(f"pyexp-submit: {b}: its save paths meet those of {a}")
    assert "results/mc/alpha-0.5/0" in said and "(e.g. {agent})" in said and "'name'" in said
    assert not (tmp_path / "results" / "mc" / "alpha-1.0").exists()  # nothing of b ran
    # The same file again, and an edited sweep of it, pass.
    assert folder.submit(a).returncode == 0
    folder.experiment("mc/sarsa.json", {"alpha": [0.1, 0.5, 0.25]}, agent="SARSA")
    assert folder.submit(a).returncode == 0
    # A way out: a name of its own.
    folder.experiment("mc/q.json", {"alpha": [0.5, 1.0]}, agent="Q", name="mc-q")
    assert folder.submit(b).returncode == 0


def test_an_agent_in_save_path_tells_them_apart(tmp_path):
    folder = Folder(tmp_path, save_path="results/{name}/{agent}/{params}/{run}")
    a = folder.experiment("mc/sarsa.json", {"alpha": [0.5]}, agent="SARSA")
    b = folder.experiment("mc/q.json", {"alpha": [0.5]}, agent="Q")
    assert folder.submit(a).returncode == 0
    run = folder.submit(b)
    assert run.returncode == 0, run.stderr


def test_the_same_float_written_two_ways_is_the_same_save_path(tmp_path):
    folder = Folder(tmp_path)
    a = folder.experiment("mc/a.json", {"alpha": [1e-05]})
    b = tmp_path / "experiments" / "mc" / "b.json"
    b.write_text('{"metaParameters": {"alpha": [0.00001, 0.1]}}')
    assert folder.submit(a).returncode == 0
    said = _refused(folder.submit(str(b)))
    assert f"meet those of {a}" in said and "alpha-1e-05" in said


def test_sweeps_in_one_folder_that_share_no_save_path_pass(tmp_path):
    folder = Folder(tmp_path)
    a = folder.experiment("mc/a.json", {"alpha": [0.1]})
    b = folder.experiment("mc/b.json", {"alpha": [0.2]})
    assert folder.submit(a).returncode == 0
    run = folder.submit(b)
    assert run.returncode == 0, run.stderr


def test_two_files_in_one_submission_that_meet_are_refused(tmp_path):
    folder = Folder(tmp_path)
    a = folder.experiment("mc/a.json", {"alpha": [0.1]})
    b = folder.experiment("mc/b.json", {"alpha": [0.1]})
    run = folder.submit(a, b)  # the first file owns them; the second is refused
    assert run.returncode == 1 and run.stdout.startswith(f"{a}: ran 1 indices")
    said = run.stderr.splitlines()[-1]
    assert said.startswith(f"pyexp-submit: {b}: its save paths meet those of {a}")


def test_a_registered_file_that_was_removed_is_forgotten(tmp_path):
    folder = Folder(tmp_path)
    a = folder.experiment("mc/a.json", {"alpha": [0.1]})
    b = folder.experiment("mc/b.json", {"alpha": [0.1]})
    assert folder.submit(a).returncode == 0
    os.unlink(a)
    run = folder.submit(b)
    assert run.returncode == 0, run.stderr
