"""Filesystem facts of a cluster: roots compute nodes cannot write, scratch that purges."""

from __future__ import annotations

import json
import os

from pyexp.config import load_config
from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.storage import fixed_root, purge_warning, readonly_refusal, under


def _config(tmp_path, **paths):
    (tmp_path / "config.json").write_text(json.dumps(paths))
    return load_config(str(tmp_path / "config.json"))


def test_fixed_root_is_the_folder_before_the_first_placeholder():
    assert fixed_root("/scratch/me/results/{name}/{params}/{run}") == "/scratch/me/results"
    assert fixed_root("/scratch/me/res-{name}/{run}") == "/scratch/me"
    assert fixed_root("/scratch/me/results") == "/scratch/me/results"


def test_under_sees_through_symlinks(tmp_path):
    real = tmp_path / "lustre" / "project" / "def-x"
    real.mkdir(parents=True)
    (tmp_path / "projects").symlink_to(real)
    assert under(str(tmp_path / "projects" / "me" / "state"), str(real))
    assert under(str(real / "me"), str(tmp_path / "projects"))
    assert not under(str(tmp_path / "lustre" / "project2"), str(tmp_path / "lustre" / "project"))
    home, scratch = tmp_path / "home", tmp_path / "lustre" / "scratch"
    home.mkdir()
    scratch.mkdir()
    (home / "scratch").symlink_to(scratch)  # ~/scratch is the scratch filesystem, not $HOME
    assert not under(str(home / "scratch" / "state"), str(home))


def test_trillium_refuses_state_logs_or_results_under_home_or_project(tmp_path):
    home, project, scratch = (str(tmp_path / d) for d in ("home", "project", "scratch"))
    env = {"HOME": home, "PROJECT": project, "SCRATCH": scratch}
    trillium = load_cluster("trillium")
    ok = _config(tmp_path, state_path=f"{scratch}/s", log_path=f"{scratch}/l",
                 save_path=f"{scratch}/r/{{name}}/{{params}}/{{run}}")  # fmt: skip
    assert readonly_refusal(ok, trillium, env) is None
    for key, value in (
        ("state_path", f"{home}/proj/.pyexp"),
        ("log_path", f"{project}/me/logs"),
        ("save_path", f"{home}/results/{{name}}/{{params}}/{{run}}"),
    ):
        paths = {"state_path": f"{scratch}/s", "log_path": f"{scratch}/l", key: value}
        line = readonly_refusal(_config(tmp_path, **paths), trillium, env)
        assert line is not None and "\n" not in line
        assert f"{key} " in line and "read-only on trillium's compute nodes" in line
        assert line.endswith(f"set {key} to a folder under $SCRATCH")


def test_roots_not_set_in_the_environment_are_ignored(tmp_path):
    config = _config(tmp_path, state_path=str(tmp_path / "state"))
    trillium = load_cluster("trillium")
    assert readonly_refusal(config, trillium, {"HOME": "", "SCRATCH": "/s"}) is None
    assert readonly_refusal(config, trillium, {"HOME": str(tmp_path)}) is not None
    assert readonly_refusal(config, load_cluster("fir"), {"HOME": str(tmp_path)}) is None


def test_state_on_purged_scratch_gets_one_line_saying_what_to_do(tmp_path):
    scratch = str(tmp_path / "scratch")
    on_scratch = _config(tmp_path, state_path=os.path.join(scratch, "me", ".pyexp"))
    line = purge_warning(on_scratch, load_cluster("narval"), {"SCRATCH": scratch})
    assert line is not None and "\n" not in line
    assert "which narval purges of files older than 60 days" in line
    assert "keep state_path under $PROJECT or your home" in line
    assert purge_warning(on_scratch, load_cluster("nibi"), {"SCRATCH": scratch}) is None
    assert purge_warning(on_scratch, load_cluster("fir"), {}) is None
    elsewhere = _config(tmp_path, state_path=str(tmp_path / "project" / ".pyexp"))
    assert purge_warning(elsewhere, load_cluster("fir"), {"SCRATCH": scratch}) is None
