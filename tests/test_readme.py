"""The README's first command and its API example work as written."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import no_slurm_env

from pyexp.config import getConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(lang: str, after: str) -> str:
    start = README.index(after)
    return re.search(rf"```{lang}\n(.*?)```", README[start:], re.S).group(1)


def _expected(comment: str):
    for text in (comment, comment.split(", ", 1)[0]):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
    return None


@pytest.fixture
def examples(tmp_path, monkeypatch):
    """A copy of examples/ after the README's first command ran in it (less the pip install)."""
    command = _block("bash", "## Try it").strip()
    install = "pip install '.[plot]' && "
    assert command.startswith(install + "cd examples && ")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")} | no_slurm_env()
    run = subprocess.run(
        command[len(install) :], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "best parameters:" in run.stdout
    assert (tmp_path / "examples/sensitivity.png").stat().st_size > 1000
    assert "examples/sensitivity.png" in README
    assert re.search(r"sarsa\.json: 144/144 done \(100\.0%\)", run.stdout), run.stdout
    monkeypatch.chdir(tmp_path / "examples")
    monkeypatch.delenv("PYEXP_CONFIG", raising=False)
    getConfig.cache_clear()
    yield tmp_path / "examples"
    getConfig.cache_clear()


def test_first_command_and_api_example(examples):
    namespace: dict = {}
    checked = 0
    for line in _block("python", "## The API").splitlines():
        code, _, comment = line.partition("  # ")
        if not code.strip() or code.startswith("#"):
            continue
        expected = _expected(comment) if comment else None
        if expected is None or "=" in code.split("(")[0]:
            exec(code, namespace)
            continue
        assert eval(code, namespace) == expected, code
        checked += 1
    assert checked >= 8


def test_json_examples_are_valid_json_and_the_cluster_config_loads():
    from pyexp.scheduler.cluster import parse_cluster

    blocks = re.findall(r"```json\n(.*?)```", README, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        json.loads(block)
    cluster = parse_cluster(json.loads(_block("json", "### Cluster configs")), "fir", "README")
    assert cluster.max_time_hours == 168 and cluster.sbatch == {}  # the docs: name no partition
    assert "partition" not in README.split("## A first day")[1]


def test_every_cluster_config_field_is_explained_in_the_table():
    from pyexp.scheduler.cluster import _FIELDS

    table = README[README.index("| field | meaning |") :].split("\n\n", 1)[0]
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, re.M)) == sorted(_FIELDS)


def test_every_public_name_is_in_the_api_table():
    import pyexp

    table = README[README.index("| call | what it does |") :].split("\n\n", 1)[0]
    named = set(re.findall(r"`\.?(\w+)", table))
    assert [name for name in pyexp.__all__ if name not in named] == []
