"""getConfig: where config.json is found, how its paths resolve, and the defaults."""

from __future__ import annotations

import json
import os

import pytest

from pyexp import ConfigError, ExperimentDescription, getConfig, loadExperiment
from pyexp.config import DEFAULTS, load_config


@pytest.fixture(autouse=True)
def fresh_config(monkeypatch):
    """getConfig is cached per process: start and end every test with an empty cache."""
    monkeypatch.delenv("PYEXP_CONFIG", raising=False)
    getConfig.cache_clear()
    yield
    getConfig.cache_clear()


def write_config(folder, **settings) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        json.dump(settings, f)
    return path


def test_nearest_config_upwards_from_cwd(tmp_path, monkeypatch):
    write_config(tmp_path, save_path="outer/{run}")
    project = tmp_path / "project"
    path = write_config(project, save_path="results/{name}/{run}", experiment_directory="exps")
    (project / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(project / "a" / "b")
    config = getConfig()
    assert config.source == path
    assert config.root == str(project)
    assert config.save_path == str(project / "results/{name}/{run}")
    assert config.experiment_directory == str(project / "exps")


def test_relative_paths_resolve_against_the_config_folder_not_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_config(project, log_path="logs", state_path="../state", save_path="./r/{run}")
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    config = getConfig()
    assert config.log_path == str(project / "logs")
    assert config.state_path == str(tmp_path / "state")
    assert config.save_path == str(project / "r/{run}")


def test_nearest_file_wins_over_pyexp_config(tmp_path, monkeypatch):
    here = write_config(tmp_path / "here", save_path="here/{run}")
    elsewhere = write_config(tmp_path / "elsewhere", save_path="there/{run}", log_path="lg")
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("PYEXP_CONFIG", elsewhere)
    assert getConfig().source == here


def test_pyexp_config_when_no_file_is_near(tmp_path, monkeypatch):
    above = [p for p in [tmp_path, *tmp_path.parents] if (p / "config.json").exists()]
    if above:
        pytest.skip(f"a config.json exists above the temporary folder: {above[0]}")
    elsewhere = write_config(tmp_path / "elsewhere", save_path="there/{run}", log_path="lg")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("PYEXP_CONFIG", elsewhere)
    config = getConfig()
    assert config.source == elsewhere
    assert config.save_path == str(tmp_path / "elsewhere/there/{run}")
    assert config.log_path == str(tmp_path / "elsewhere/lg")


def test_experiment_file_finds_its_projects_config_from_any_folder(tmp_path, monkeypatch):
    project = write_config(tmp_path / "project", save_path="r/{name}/{run}")
    other = write_config(tmp_path / "other", save_path="wrong/{run}")
    monkeypatch.setenv("PYEXP_CONFIG", other)
    path = tmp_path / "project" / "experiments" / "mc" / "sarsa.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"metaParameters": {"a": [1, 2]}}))
    for cwd in (tmp_path / "other", tmp_path, "/"):
        monkeypatch.chdir(cwd)
        exp = loadExperiment(str(path))
        assert exp.config.source == project
        assert exp.interpolateSavePath(3) == str(tmp_path / "project/r/mc/1")


def test_defaults_anchor_at_the_experiments_folder_from_any_folder(tmp_path, monkeypatch):
    above = [p for p in [tmp_path, *tmp_path.parents] if (p / "config.json").exists()]
    if above:
        pytest.skip(f"a config.json exists above the temporary folder: {above[0]}")
    path = tmp_path / "project" / "experiments" / "mc" / "sarsa.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"metaParameters": {"a": [1, 2]}}))
    monkeypatch.chdir(tmp_path)
    config = loadExperiment(str(path)).config
    assert config.source is None and config.root == str(tmp_path / "project")
    assert config.state_path == str(tmp_path / "project" / ".pyexp")


def test_relative_pyexp_config_is_taken_from_cwd(tmp_path, monkeypatch):
    write_config(tmp_path / "cfg", save_path="s/{run}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYEXP_CONFIG", "cfg/config.json")
    assert getConfig().save_path == str(tmp_path / "cfg/s/{run}")


def test_pyexp_config_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"PYEXP_CONFIG=.*nope\.json: no such file"):
        getConfig()


def test_tilde_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    path = write_config(tmp_path / "p", log_path="~/scratch/.logs", save_path="~/res/{run}")
    config = load_config(path)
    assert config.log_path == str(home / "scratch/.logs")
    assert config.save_path == str(home / "res/{run}")


def test_absolute_paths_are_kept(tmp_path):
    path = write_config(tmp_path / "p", log_path=str(tmp_path / "abs-logs"))
    assert load_config(path).log_path == str(tmp_path / "abs-logs")


def test_defaults_when_no_config_file(tmp_path, monkeypatch):
    above = [p for p in [tmp_path, *tmp_path.parents] if (p / "config.json").exists()]
    if above:
        pytest.skip(f"a config.json exists above the temporary folder: {above[0]}")
    monkeypatch.chdir(tmp_path)
    config = getConfig()
    assert config.source is None
    assert DEFAULTS["save_path"] == "results/{name}/{params}/{run}"
    assert config.save_path == str(tmp_path / "results/{name}/{params}/{run}")
    assert config.experiment_directory == str(tmp_path / "experiments")
    assert config.log_path == str(tmp_path / "logs")
    assert config.command is None


def test_defaults_fill_keys_the_file_leaves_out(tmp_path):
    config = load_config(write_config(tmp_path, log_path="l"))
    assert config.save_path == str(tmp_path / "results/{name}/{params}/{run}")
    assert config.experiment_directory == str(tmp_path / "experiments")


def test_read_once_per_process(tmp_path, monkeypatch):
    write_config(tmp_path, save_path="first/{run}")
    monkeypatch.chdir(tmp_path)
    first = getConfig()
    write_config(tmp_path, save_path="second/{run}")
    assert getConfig() is first
    assert getConfig().save_path == str(tmp_path / "first/{run}")
    getConfig.cache_clear()
    assert getConfig().save_path == str(tmp_path / "second/{run}")


def test_experiments_use_the_process_config_by_default(tmp_path, monkeypatch):
    write_config(tmp_path, save_path="out/{name}/{run}", experiment_directory="exps")
    monkeypatch.chdir(tmp_path)
    exp = ExperimentDescription({"metaParameters": {"a": [1, 2]}}, path="exps/cart/dqn.json")
    assert exp.getExperimentName() == "cart"
    assert exp.interpolateSavePath(3) == str(tmp_path / "out/cart/1")


def test_malformed_config_via_get_config(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"save_path": "x"\n "log_path": "y"}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.json:2:2: invalid JSON") as err:
        getConfig()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["[]", '"save_path"', "3"])
def test_config_must_be_an_object(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(str(tmp_path / "config.json"))


def test_max_log_bytes_must_be_a_whole_number_of_bytes(tmp_path):
    from pyexp.config import load_config
    from pyexp.errors import ConfigError

    for bad in (-1, 1.5, "10M", True):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"max_log_bytes": bad}))
        with pytest.raises(ConfigError, match="'max_log_bytes' must be a whole number of bytes"):
            load_config(str(path))
    path.write_text(json.dumps({"max_log_bytes": 0}))
    assert load_config(str(path)).max_log_bytes == 0  # 0: no cap
