"""pyexp's own files at rest: nothing per index once a sweep is done and the next pyexp-submit
has folded what its tasks left (state/footprint.py, state/task_logs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_project

from pyexp.cli.logs import _lines
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.leases import CLOCK_SKEW, RETAIN_LEASES, TOMBSTONE, is_tombstone

INDICES = 40
COMMAND = "sh -c 'echo output of $0; test $0 != 7' {index}"  # index 7 fails


def _project(root: Path) -> Path:
    config = {"state_path": "state", "log_path": "logs", "command": COMMAND}
    return write_project(root, {"metaParameters": {"i": list(range(INDICES))}}, config)


def _submit(path: Path, *flags: str) -> None:
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "1", "--local"]
    env = {**os.environ, "PYEXP_LEASE_SECONDS": "2"}
    subprocess.run([*argv, *flags], env=env, cwd=path.parent, capture_output=True, check=False)


def _files(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for top in ("state", "logs"):
        for p in (root / top).rglob("*"):
            if p.is_file() and "/store" not in str(p):
                kind = p.parent.name
                out[kind] = out.get(kind, 0) + 1
    return out


def _age_tombstones(folder: Path) -> int:
    """Make every tombstone (of a 2 s lease) look written RETAIN_LEASES leases plus the skew
    ago (as if the time had passed); how many."""
    old = time.time() - RETAIN_LEASES * 2 - CLOCK_SKEW - 5
    aged = 0
    for p in folder.glob("*.lease"):
        if is_tombstone(str(p)):
            p.write_bytes(TOMBSTONE + f"{old:.3f} elsewhere 2\n".encode())
            os.utime(p, (old, old))
            aged += 1
    return aged


@pytest.mark.parametrize("flags", [["--indices-per-task", "1"], ["--workers", "3"]])
def test_a_finished_sweep_leaves_no_file_per_index_once_folded(tmp_path, flags):
    path = _project(tmp_path)
    _submit(path, *flags)
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    leases = Path(state_dirs(exp).leases)
    assert _age_tombstones(leases) == INDICES - 1  # one per completed index, until swept
    _submit(path, *flags)  # the writer at rest (index 7 is retried: it fails again)
    _age_tombstones(leases)
    _submit(path, *flags)
    files = _files(tmp_path)
    per_index = {k: v for k, v in files.items() if v >= INDICES // 4}
    assert per_index == {}, files  # no folder holds a file per index
    # What is left grows with rounds (a ledger entry, script, archive pair, failed attempt of
    # index 7 per submit), not with indices.
    assert sum(files.values()) <= 8 * 3, files
    # Every index's output is still found, by its parameters and run, through the archives.
    for i in (0, 7, INDICES - 1):
        text = "\n".join(_lines(exp, i, 5))
        assert f"output of {i}" in text, text
