"""Cluster configs: the shipped ones load, and mistakes are caught before anything is submitted."""

from __future__ import annotations

import json

import pytest

from pyexp.errors import ClusterConfigError
from pyexp.scheduler.cluster import default_cluster_name, known_clusters, load_cluster
from pyexp.scheduler.sbatch_options import check_option, known_options

SHIPPED = ["fir", "local", "narval", "nibi", "rorqual", "trillium"]


def _write(tmp_path, **fields):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"time_hours": 1, **fields}))
    return str(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_validate(name):
    cluster = load_cluster(name)
    assert cluster.name == name
    assert cluster.time.count(":") == 2
    assert cluster.cores >= 1 and cluster.indices_per_task >= 1
    assert cluster.signal_lead_seconds < cluster.time_hours * 3600
    assert (cluster.mem_per_cpu is None) == cluster.whole_node


def test_known_clusters_are_the_shipped_ones():
    assert set(SHIPPED) <= set(known_clusters())


def test_trillium_schedules_whole_192_core_nodes():
    trillium = load_cluster("trillium")
    assert trillium.whole_node and trillium.cores == 192 and trillium.mem_per_core_gb is None
    assert trillium.time == "23:59:59"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ClusterConfigError, match="unknown cluster 'firr'.*'fir'.*known: fir, "):
        load_cluster("firr")


def test_default_comes_from_cc_cluster(monkeypatch):
    monkeypatch.setenv("CC_CLUSTER", "narval")
    assert default_cluster_name() == "narval" and load_cluster().name == "narval"
    monkeypatch.delenv("CC_CLUSTER")
    assert load_cluster(None).name == "local"


def test_load_by_path(tmp_path):
    cluster = load_cluster(_write(tmp_path, mem_per_core_gb=0.5, sbatch={"partition": "debug"}))
    assert cluster.name == "mine" and cluster.mem_per_cpu == "512M"
    assert cluster.sbatch == {"partition": "debug"}


def test_typo_in_sbatch_option_suggests_the_closest(tmp_path):
    with pytest.raises(ClusterConfigError, match="unknown sbatch option 'partiton'.*'partition'"):
        load_cluster(_write(tmp_path, sbatch={"partiton": "debug"}))
    with pytest.raises(ClusterConfigError, match="'mail_tpye'.*did you mean 'mail-type'"):
        load_cluster(_write(tmp_path, sbatch={"mail_tpye": "END"}))


def test_option_names_normalize_and_flags():
    assert check_option("--mem_per_cpu", "x") == "mem-per-cpu"
    assert {"partition", "gres", "qos", "mail-type", "exclusive"} <= known_options()
    cluster = load_cluster("local")
    assert cluster.sbatch == {}


def test_flags_and_numbers_in_sbatch(tmp_path):
    cluster = load_cluster(_write(tmp_path, sbatch={"exclusive": True, "nice": 10}))
    assert cluster.sbatch == {"exclusive": None, "nice": "10"}


@pytest.mark.parametrize(
    "sbatch, message",
    [
        ({"time": "1:00:00"}, "set by time_hours"),
        ({"account": "def-x"}, "set by account"),
        ({"array": "0-3"}, "set by pyexp"),
        ({"partition": ["a"]}, "must be a string, number, true or null"),
        ({"partition": False}, "must be a string, number, true or null"),
        ({"comment": "two\nlines"}, "one line"),
    ],
)
def test_bad_sbatch_options(tmp_path, sbatch, message):
    with pytest.raises(ClusterConfigError, match=message):
        load_cluster(_write(tmp_path, sbatch=sbatch))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"time_hours": 0}, "hours"),
        ({"time_hours": -3}, "hours"),
        ({"time_hours": "3:00:00"}, "'time_hours' must be Real"),
        ({"time_hours": True}, "'time_hours' must be Real"),
        ({"time_hours": 0.0001}, "two seconds"),
        ({"mem_per_core_gb": 0}, "gigs"),
        ({"mem_per_core_gb": "4G"}, "'mem_per_core_gb' must be Real or null"),
        ({"cores": 0}, "'cores' must be at least 1"),
        ({"cores": 1.5}, "'cores' must be int"),
        ({"indices_per_task": 0}, "at least 1"),
        ({"array_throttle": 0}, "at least 1"),
        ({"max_array_size": 1}, "at least 2"),
        ({"signal_lead_seconds": 3600}, "shorter than the time limit"),
        ({"setup": "module load python"}, "'setup' must be list"),
        ({"setup": [1]}, "'setup' lines must be strings"),
        ({"python_on_path": "yes"}, "'python_on_path' must be bool, got \"yes\""),
        ({"whole_node": True, "mem_per_core_gb": 4}, "whole_node cluster takes no"),
        ({"time_hour": 3}, "unknown field 'time_hour'; did you mean 'time_hours'"),
        ({"account": "def-a\\b"}, "no backslash"),
    ],
)
def test_bad_fields_name_the_file_and_field(tmp_path, fields, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"time_hours": 1, **fields}))
    with pytest.raises(ClusterConfigError, match=message) as e:
        load_cluster(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_time_and_bad_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    with pytest.raises(ClusterConfigError, match="missing field 'time_hours'"):
        load_cluster(str(path))
    path.write_text('{"time_hours": 1,}')
    with pytest.raises(ClusterConfigError, match=r"c.json:1:\d+: invalid JSON"):
        load_cluster(str(path))
    with pytest.raises(ClusterConfigError, match="cannot read"):
        load_cluster(str(tmp_path / "nope.json"))


def test_account_flag_env_and_file(tmp_path):
    fir = load_cluster("fir")
    with pytest.raises(ClusterConfigError, match="needs an account: pass --account"):
        fir.with_account(None, env={})
    assert fir.with_account(None, env={}, required=False).account is None
    assert fir.with_account(None, env={"SBATCH_ACCOUNT": "def-env"}).account == "def-env"
    assert fir.with_account("def-flag", env={"SBATCH_ACCOUNT": "def-env"}).account == "def-flag"
    mine = load_cluster(_write(tmp_path, account="def-file", account_required=True))
    assert mine.with_account(None, env={}).account == "def-file"
    assert mine.with_account(None, env={"SBATCH_ACCOUNT": "rrg-x"}).account == "rrg-x"
    assert load_cluster("local").with_account(None, env={}).account is None


@pytest.mark.parametrize(("name", "hours"), [("fir", 168), ("nibi", 168), ("trillium", 24)])
def test_alliance_configs_state_their_time_limit(name, hours):
    assert load_cluster(name).max_time_hours == hours


def test_fir_refuses_200_hours_before_submitting(tmp_path):
    with open(load_cluster("fir").source) as f:
        data = {**json.load(f), "time_hours": 200}
    path = tmp_path / "fir.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ClusterConfigError) as err:
        load_cluster(str(path))
    assert str(err.value) == (
        f"{path}: time_hours = 200 is beyond cluster 'fir' limit max_time_hours = 168; "
        "ask for fewer indices_per_task"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"cores": 8, "cores_per_node": 4},
            "cores = 8 is beyond cluster 'mine' limit cores_per_node = 4",
        ),
        (
            {"cores": 4, "mem_per_core_gb": 2, "mem_per_node_gb": 6},
            "mem_per_core_gb x cores = 8 is beyond cluster 'mine' limit mem_per_node_gb = 6",
        ),
        ({"max_time_hours": 0}, "'max_time_hours' must be positive, got 0"),
    ],
)
def test_requests_beyond_the_node_are_refused(tmp_path, fields, message):
    with pytest.raises(ClusterConfigError, match=message):
        load_cluster(_write(tmp_path, **fields))


def test_requests_within_the_limits_load(tmp_path):
    path = _write(tmp_path, time_hours=168, max_time_hours=168, cores=4, cores_per_node=4)
    assert load_cluster(path).time == "167:59:59"
