"""Cluster configs: the shipped ones load, and mistakes are caught before anything is submitted."""

from __future__ import annotations

import json

import pytest

from pyexp.errors import ClusterConfigError
from pyexp.scheduler.cluster import default_cluster_name, known_clusters, load_cluster
from pyexp.scheduler.sbatch_options import check_option, known_options

ALLIANCE_CPU = ["fir", "narval", "nibi", "rorqual", "trillium"]
ALLIANCE_GPU = ["fir-gpu", "narval-gpu", "nibi-gpu", "rorqual-gpu"]
SHIPPED = ["local", *ALLIANCE_CPU, *ALLIANCE_GPU]


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


def test_an_option_newer_than_simple_slurms_table_is_passed_to_sbatch(tmp_path):
    assert "oom-kill-step" not in known_options()  # a newer Slurm's, not in simple-slurm's table
    cluster = load_cluster(_write(tmp_path, sbatch={"oom_kill_step": 1}))
    assert cluster.sbatch == {"oom-kill-step": "1"}


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
        ({"no such option": 1}, "'no such option' is not an sbatch long option name"),
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
        ({"max_running_jobs": 0}, "'max_running_jobs' must be at least 1, got 0"),
        ({"max_running_jobs": -5}, "'max_running_jobs' must be at least 1, got -5"),
        ({"gpus_per_node": 0}, "'gpus_per_node' must be at least 1"),
        ({"gpus": "h100"}, "gpus 'h100' must be MODEL:COUNT with COUNT >= 1"),
        ({"gpus": "h100:0"}, "gpus 'h100:0' must be MODEL:COUNT"),
        ({"gpu_models": ["h100:1"]}, "'gpu_models' holds names such as"),
        ({"readonly_on_compute": ["$HOME"]}, "'readonly_on_compute' holds names such as"),
        ({"purged_after_days": {"SCRATCH": "60d"}}, "maps an environment variable to whole days"),
        ({"purged_after_days": {"SCRATCH": 0}}, "maps an environment variable to whole days"),
        ({"docs": {"max_jobs": "Trillium Quickstart"}}, "'docs' names 'max_jobs', which is not"),
        ({"docs": {"cores": ""}}, "'docs' of 'cores' must name a doc page"),
        ({"sbatch": {"gpus": "h100:1"}}, "sbatch option 'gpus' is set by gpus, not in 'sbatch'"),
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


def _shipped_with(name, **fields):
    """A shipped config's JSON with some fields changed, validated as a file would be."""
    from pyexp.scheduler.cluster import parse_cluster

    with open(load_cluster(name).source) as f:
        data = {**json.load(f), **fields}
    return parse_cluster(data, name, f"{name}.json")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_defaults_pass_their_own_checks_for_one_core_and_a_whole_node(name):
    cluster = load_cluster(name)
    per_node = cluster.cores_per_node or cluster.cores
    for cores in (1, per_node):
        mine = _shipped_with(name, cores=cores)  # raises if the node could not hold it
        if mine.mem_per_core_gb is not None and mine.mem_per_node_gb is not None:
            assert mine.mem_per_core_gb * cores <= mine.mem_per_node_gb


def test_a_whole_fir_node_at_the_default_memory_fits():
    fir = _shipped_with("fir", cores=192)
    assert fir.mem_per_cpu == "4000M" and fir.mem_per_core_gb * 192 == 750


@pytest.mark.parametrize("name", [*ALLIANCE_CPU, *ALLIANCE_GPU])
def test_every_figure_of_an_alliance_config_names_its_doc_page(name):
    cluster = load_cluster(name)
    figures = ["max_time_hours", "cores_per_node", "max_queued_jobs", "sbatch"]
    figures += ["mem_per_node_gb", "mem_per_core_gb"] if not cluster.whole_node else []
    figures += ["gpus", "gpus_per_node", "gpu_models"] if cluster.gpus else []
    figures += ["max_running_jobs", "readonly_on_compute"] if name == "trillium" else []
    figures += ["purged_after_days"] if cluster.purged_after_days else []
    for figure in figures:
        assert "https://docs.alliancecan.ca/wiki/" in cluster.docs[figure], (name, figure)


@pytest.mark.parametrize("name", [*ALLIANCE_CPU, *ALLIANCE_GPU])
def test_no_alliance_config_names_a_partition(name):
    assert "partition" not in load_cluster(name).sbatch


def test_alliance_figures_as_the_docs_give_them():
    trillium = load_cluster("trillium")
    assert (trillium.max_queued_jobs, trillium.max_running_jobs) == (500, 150)
    assert trillium.readonly_on_compute == ("HOME", "PROJECT")
    assert load_cluster("narval").mem_per_node_gb == 250
    nodes = {
        name: (c.cores_per_node, c.mem_per_node_gb, c.gpus_per_node, c.gpu_models, c.gpus)
        for name in ALLIANCE_GPU
        for c in [load_cluster(name)]
    }
    assert nodes == {
        "fir-gpu": (48, 1125, 4, ("h100",), "h100:1"),
        "rorqual-gpu": (64, 498, 4, ("h100",), "h100:1"),
        "nibi-gpu": (112, 2000, 8, ("h100",), "h100:1"),
        "narval-gpu": (48, 498, 4, ("a100",), "a100:1"),
    }
    purged = {n: load_cluster(n).purged_after_days for n in [*ALLIANCE_CPU, *ALLIANCE_GPU]}
    assert {n for n, p in purged.items() if p} == {
        "fir", "narval", "rorqual", "fir-gpu", "narval-gpu", "rorqual-gpu"
    }  # fmt: skip
    assert all(p == {"SCRATCH": 60} for p in purged.values() if p)


def test_an_unknown_gpu_model_is_one_line_naming_the_known_ones():
    with pytest.raises(ClusterConfigError) as e:
        _shipped_with("fir-gpu", gpus="a100:1")
    assert str(e.value) == (
        "fir-gpu.json: gpus 'a100:1': unknown GPU model 'a100' on cluster 'fir-gpu'; known: "
        'h100 (e.g. "gpus": "h100:1")'
    )
    with pytest.raises(ClusterConfigError, match="'2': no GPU model named on cluster 'nibi-gpu'"):
        _shipped_with("nibi-gpu", gpus="2")


def test_more_gpus_than_a_node_has_is_one_line():
    with pytest.raises(ClusterConfigError) as e:
        _shipped_with("narval-gpu", gpus="a100:5")
    assert str(e.value) == (
        "narval-gpu.json: gpus 'a100:5' asks for 5 GPUs, but a node of cluster 'narval-gpu' has "
        "4 (gpus_per_node); ask for at most 4"
    )
    assert _shipped_with("nibi-gpu", gpus="h100:8", cores=112).gpus == "h100:8"


def test_gpu_jobs_are_checked_against_the_gpu_node_cores_and_memory():
    with pytest.raises(ClusterConfigError, match="cores = 49 is beyond .* cores_per_node = 48"):
        _shipped_with("fir-gpu", cores=49)
    with pytest.raises(ClusterConfigError, match="mem_per_core_gb x cores = 1200 is beyond"):
        _shipped_with("fir-gpu", cores=48, mem_per_core_gb=25)


def test_own_config_may_ask_for_any_model_when_it_lists_none(tmp_path):
    assert load_cluster(_write(tmp_path, gpus="l40s:2")).gpus == "l40s:2"


def test_spec_loads_the_same_config_again(tmp_path, monkeypatch):
    path = _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    mine = load_cluster("mine.json")
    assert mine.spec == path and load_cluster(mine.spec) == mine
    assert load_cluster("fir").spec == "fir"
