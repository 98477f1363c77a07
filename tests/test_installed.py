"""The installed package is the product: a wheel built from this checkout, installed into a fresh
venv outside it, run from a bare environment (`env -i HOME=... PATH=/usr/bin:/bin`) the way cron
and Slurm jobs run it, with its console scripts called by full path.

The wheel and the venv are built once per session (pip takes the dependencies from its index or
cache). The Slurm test runs only when the Slurm tests are asked for (see conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "pyexp"
BARE = {"HOME": os.environ.get("HOME", "/"), "PATH": "/usr/bin:/bin"}  # as `env -i` leaves it
# Not part of the package: what a checkout accumulates besides its sources.
JUNK = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pyexp",
    "results",
    "logs",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
)


def _source_files() -> set[str]:
    """Every file of the package in the checkout, as the wheel names it (pyexp/...)."""
    found = set()
    for folder, dirs, files in os.walk(PACKAGE, followlinks=True):  # templates/ is a symlink
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = Path(folder).relative_to(PACKAGE.parent)
        found |= {(rel / f).as_posix() for f in files if not f.endswith(".pyc")}
    return found


def _modules(files: set[str]) -> set[str]:
    return {
        f.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for f in files
        if f.endswith(".py")
    }


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a clean copy of the checkout (no stale build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    copy = tmp / "checkout"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=JUNK)
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(copy)]
    subprocess.run(argv, check=True, capture_output=True)
    (built,) = tmp.glob("pyexp_utils-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv outside the checkout with the wheel (and its dependencies) installed."""
    where = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    return where


def bare(argv: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """argv run from a bare environment, as cron runs it."""
    argv = [str(a) for a in argv]
    return subprocess.run(argv, cwd=cwd, env=BARE, capture_output=True, text=True, **kwargs)


def test_the_wheel_holds_every_module_and_data_file_of_the_checkout(wheel):
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("pyexp/")}
    assert shipped == _source_files()
    assert {"pyexp/runner/loop.py", "pyexp/templates/array.sbatch.j2"} <= shipped
    assert "pyexp/cluster_configs/local.json" in shipped


def test_every_module_imports_from_the_installed_wheel(venv, tmp_path):
    code = (
        "import importlib, pkgutil, pyexp\n"
        "names = [m.name for m in pkgutil.walk_packages(pyexp.__path__, 'pyexp.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(pyexp.__file__); print(*names, sep='\\n')\n"
    )
    done = bare([venv / "bin" / "python", "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, *names = done.stdout.split()
    assert where.startswith(str(venv))  # not the checkout
    assert {"pyexp", *names} == _modules(_source_files())


def _example(tmp_path: Path) -> Path:
    copy = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", copy, ignore=JUNK)
    return copy


def test_the_example_sweep_runs_to_done_from_a_bare_environment(venv, tmp_path):
    # No `python` on /usr/bin:/bin (or one without pyexp): the command's `python main.py` must
    # be the venv's, found because the runner puts its own Python's folder first on PATH.
    system = shutil.which("python", path=BARE["PATH"])
    assert system is None or bare([system, "-c", "import pyexp"], tmp_path).returncode != 0
    examples = _example(tmp_path)
    submit = bare([venv / "bin" / "pyexp-submit", "experiments/mc/sarsa.json", "--runs", "1",
                   "--local"], cwd=examples, timeout=600)  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status = bare([venv / "bin" / "pyexp-status", "experiments/mc/sarsa.json", "--json",
                   "--no-slurm"], cwd=examples)  # fmt: skip
    (report,) = json.loads(status.stdout)
    assert report["done"] == report["total"] == 48, report
    logs = bare([venv / "bin" / "pyexp-logs", "experiments/mc/sarsa.json", "5"], cwd=examples)
    assert f"python={venv}/bin/python" in logs.stdout, logs.stdout + logs.stderr


@pytest.mark.slurm
def test_a_sweep_submitted_to_slurm_from_a_bare_environment_runs_to_done(venv, tmp_path):
    root = tmp_path / "project"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "wheel.json").write_text(
        json.dumps({"name": "wheel", "metaParameters": {"x": list(range(6))}})
    )
    # The job notes which Python ran it and which pyexp it imported.
    (root / "job.py").write_text(
        "import os, sys, pyexp\n"
        "out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ran', sys.argv[1])\n"
        "os.makedirs(os.path.dirname(out), exist_ok=True)\n"
        "open(out, 'w').write(sys.executable + ' ' + pyexp.__file__)\n"
    )
    (root / "config.json").write_text(json.dumps({"command": "python job.py {index}"}))
    argv = [venv / "bin" / "pyexp-submit", "experiments/wheel.json", "--runs", "1"]
    submit = bare([*argv, "--cluster", "local", "--indices-per-task", "3"], cwd=root)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "submitted 6 indices" in submit.stdout
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = bare([venv / "bin" / "pyexp-status", "experiments/wheel.json", "--json"], root)
        (report,) = json.loads(status.stdout)
        if report["done"] == 6 or report["failed"] or report["failing"]:
            break
        time.sleep(1)
    assert report["done"] == 6, report
    ran = {p.name: p.read_text().split() for p in (root / "ran").iterdir()}
    assert sorted(ran) == [str(i) for i in range(6)]
    for python, module in ran.values():
        assert python == f"{venv}/bin/python" and module.startswith(str(venv))
