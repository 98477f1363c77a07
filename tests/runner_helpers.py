"""What the runner tests share: a project that starts pyexp-run processes, and small waits."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from conftest import no_slurm_env, write_config, write_experiment

from pyexp.config import load_config
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.runner import CommandTemplate, Runner
from pyexp.state.layout import state_dirs
from pyexp.state.leases import CLOCK_SKEW, RETAIN_LEASES, TOMBSTONE, is_tombstone
from pyexp.state.ledger import Ledger, LedgerEntry, new_entry_id
from pyexp.state.records import CompletionRecords

RUN = [sys.executable, "-m", "pyexp.cli.run"]


class Project:
    """A tmp project: config.json, experiments, and pyexp-run processes pointed at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = write_config(root, {"state_path": "state", "log_path": "logs"})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYEXP_"))}
        self.env = {
            **env,
            **no_slurm_env(),
            "PYEXP_CONFIG": str(self.config),
            "PYEXP_LEASE_SECONDS": "2",
            "PYEXP_GRACE_SECONDS": "5",
        }

    def experiment(self, name: str, meta: dict, folder: str = "experiments") -> Path:
        return write_experiment(self.root, {"metaParameters": meta}, f"{folder}/{name}.json")

    def load(self, path: Path) -> ExperimentDescription:
        return loadExperiment(str(path), config=load_config(str(self.config)))

    def start(self, *args: str, env: dict | None = None, cwd: Path | None = None):
        return subprocess.Popen(
            [*RUN, *map(str, args)],
            env={**self.env, **(env or {})},
            cwd=cwd or self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        proc = self.start(*args, **kwargs)
        out, err = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def complete(self, path: Path, index: int) -> bool:
        exp = self.load(path)
        records = CompletionRecords(state_dirs(exp).done)
        return records.is_complete(exp.getPermutation(index), exp.getRun(index))

    def attempts(self, path: Path) -> list[dict]:
        folder = Path(state_dirs(self.load(path)).attempts)
        return (
            [json.loads(p.read_text()) for p in sorted(folder.glob("*"))] if folder.exists() else []
        )

    def log(self, path: Path, index: int) -> str:
        """Every attempt of the index's work as its logs hold it: headers and all lines."""
        from pyexp.state.index_logs import attempts_of

        found = attempts_of(self.load(path), index, keep=10**9)
        return "".join("\n".join([a.header, *a.tail]) + "\n" for a in found)

    def leases(self, path: Path) -> list[str]:
        folder = Path(state_dirs(self.load(path)).leases)
        markers = folder.glob("*.lease") if folder.exists() else []
        return sorted(p.name for p in markers if not is_tombstone(str(p)))  # held, not done


def wait_for(predicate, timeout: float = 10.0, every: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(every)


def sh(script: str, *args: object) -> str:
    """A command template running script under sh with args as $1, $2, ..."""
    return shlex.join(["sh", "-c", script, "sh", *map(str, args)])


def write_entry(project: Project, path: Path, tasks: list[list[int]], **fields) -> str:
    exp = project.load(path)
    entry = LedgerEntry(
        id=new_entry_id(),
        experiment=str(path),
        fingerprint=exp.fingerprint(),
        snapshot=json.loads(json.dumps(exp.description)),
        runs=1,
        tasks=tasks,
        **fields,
    )
    ledger = Ledger(state_dirs(exp).ledger)
    ledger.write(entry)
    return ledger.path(entry.id)


def in_process_runner(project: Project, path: Path, command: str, parallel: int = 3):
    exp = project.load(path)
    out = io.StringIO()
    return Runner(exp, CommandTemplate(command), parallel=parallel, out=out), out


def age_tombstones(folder: Path) -> int:
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
