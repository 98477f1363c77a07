"""Where an experiment's state lives: one folder per experiment file, never outside state_path."""

from __future__ import annotations

import json
import os

from pyexp.config import load_config
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.state.layout import experiment_id, state_dirs


def _write(path, d):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return str(path)


def test_inside_the_root_the_id_is_the_relative_path(tmp_path):
    config = load_config(None, cwd=str(tmp_path))
    path = _write(tmp_path / "experiments" / "mc" / "sarsa.json", {"metaParameters": {}})
    assert experiment_id(loadExperiment(path, config)) == "experiments/mc/sarsa"


def test_files_outside_the_root_with_the_same_name_get_separate_state(tmp_path):
    config = load_config(None, cwd=str(tmp_path / "project"))
    sweep = {"name": "shared", "metaParameters": {"alpha": [1, 2]}}
    dqn = _write(tmp_path / "sweeps" / "dqn.json", {**sweep, "agent": "DQN"})
    ppo = _write(tmp_path / "sweeps" / "ppo.json", {**sweep, "agent": "PPO"})
    ids = {experiment_id(loadExperiment(p, config)) for p in (dqn, ppo)}
    assert len(ids) == 2 and all(i.startswith("_outside/") for i in ids)


def test_a_name_cannot_climb_out_of_state_path(tmp_path):
    config = load_config(None, cwd=str(tmp_path / "project"))
    for name in ("../../../../escape/x", "..", ".", "a//b", "/abs"):
        exp = ExperimentDescription({"name": name, "metaParameters": {}}, config=config)
        root = state_dirs(exp).root
        assert os.path.commonpath([root, config.state_path]) == config.state_path, name
        assert ".." not in root.split(os.sep), name
