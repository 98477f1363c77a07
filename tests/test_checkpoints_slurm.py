"""Checkpoints on the real local Slurm: long runs continue across 1-minute jobs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_project
from slurm_helpers import wait_gone

from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.attempts import CONTINUING, STALLED, Attempts
from pyexp.state.layout import state_dirs

pytestmark = pytest.mark.slurm

TRAIN = Path(__file__).parent / "data" / "train_checkpointed.py"
TIME_SECONDS, LEAD_SECONDS, STEP_SECONDS = 60, 15, 0.5


class LongRun:
    """One index of the checkpointing training loop, under 1-minute tasks with a 15 s lead."""

    def __init__(self, root: Path, steps: int, *extra: str) -> None:
        self.root, self.history = root, root / "history"
        self.state = str(root / ".pyexp")
        command = shlex.join(
            [sys.executable, str(TRAIN), str(steps), str(STEP_SECONDS), "4", str(self.history)]
        )
        config = {"command": f"{command} {' '.join(extra)}".strip(), "state_path": self.state}
        meta = {"name": "long", "metaParameters": {"x": [1]}}
        self.experiment = write_project(root, meta, config, "experiments/long.json")
        self.config = root / "config.json"
        self.cluster = root / "minute.json"
        cluster = {
            "time_hours": TIME_SECONDS / 3600,
            "mem_per_core_gb": 0.25,
            "indices_per_task": 1,
            "signal_lead_seconds": LEAD_SECONDS,
            "account_required": False,
        }
        self.cluster.write_text(json.dumps(cluster))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
        self.env.update(PYEXP_CONFIG=str(self.config), PYEXP_LEASE_SECONDS="5")

    def pyexp(self, *args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "pyexp", *args]
        return subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True)

    def submit(self, *args: str) -> subprocess.CompletedProcess:
        where = ("--runs", "1", "--cluster", str(self.cluster), "--indices-per-task", "1")
        return self.pyexp("submit", str(self.experiment), *where, *args)

    def status(self) -> dict:
        result = self.pyexp("status", str(self.experiment), "--json")
        return json.loads(result.stdout)[0]

    def rounds(self, most: int, *args: str) -> int:
        """Submit again whenever our jobs are gone, until nothing is left to submit."""
        for n in range(most):
            wait_gone(self.state, time.monotonic() + 3 * TIME_SECONDS)
            result = self.submit(*args)
            if "nothing to submit" in result.stdout:
                return n
            assert result.returncode in (0, 3), result.stderr
        pytest.fail(f"not finished after {most} rounds: {self.status()}")

    def lines(self, word: str) -> list[int]:
        text = self.history.read_text() if self.history.exists() else ""
        return [int(x.split()[2]) for x in text.splitlines() if x.split()[1:2] == [word]]

    def attempts(self) -> list[str]:
        return [outcome for _, outcome, _ in Attempts(self.dirs().attempts).names()]

    def dirs(self):
        config = load_config(str(self.config))
        return state_dirs(loadExperiment(str(self.experiment), config=config))


def test_an_index_needing_3x_the_time_limit_completes_across_jobs_never_charged(tmp_path):
    usable = TIME_SECONDS - LEAD_SECONDS
    steps = int(3 * usable / STEP_SECONDS)  # more than 3 tasks' time before the warning
    run = LongRun(tmp_path, steps)
    seen_continuing = False
    for _ in range(12):
        wait_gone(run.state, time.monotonic() + 3 * TIME_SECONDS)
        report = run.status()
        seen_continuing |= bool(report["continuing_indices"])
        if report["done"] == 1:
            break
        result = run.submit("--max-attempts", "1")
        assert result.returncode == 0, result.stderr
    report = run.status()
    assert report["done"] == 1 and report["failed"] == 0 and report["failing"] == 0, report
    starts, saves = run.lines("start"), run.lines("save")
    assert len(starts) >= 3, starts  # across at least 3 jobs
    assert starts[0] == 0 and starts == sorted(starts)  # never went backwards
    assert all(s in saves for s in starts[1:])  # each resumed from a step it had saved
    assert run.history.read_text().count(" done\n") == 1  # recorded done exactly once
    assert set(run.attempts()) == {CONTINUING}, run.attempts()  # never charged
    assert seen_continuing
    assert not list(Path(run.dirs().checkpoints).glob("*"))  # removed once done


def test_a_checkpoint_that_never_progresses_is_given_up_after_max_attempts(tmp_path):
    run = LongRun(tmp_path, 10**6, "--stall")
    run.rounds(6, "--max-attempts", "2")
    report = run.status()
    assert report["failed"] == 1 and report["done"] == 0, report
    assert sorted(run.attempts()) == [CONTINUING, STALLED, STALLED]
