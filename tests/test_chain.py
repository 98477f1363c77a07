"""--until-done without Slurm: refusals, the next round's command line, the chain's word."""

from __future__ import annotations

import json

import pytest

from pyexp.cli.submit import main, parse_args
from pyexp.experiment import loadExperiment
from pyexp.scheduler.chain import Chain, describe
from pyexp.state.layout import state_dirs


def test_until_done_is_refused_in_one_line_where_jobs_may_not_submit_jobs(project, capsys):
    argv = [project["exp"], "--runs", "1", "--cluster", "trillium", "--account", "def-x"]
    assert main([*argv, "--until-done"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "jobs may not submit jobs on trillium (Trillium Quickstart" in err
    assert "run pyexp-submit from a login node instead" in err
    assert not (project["fake"] / "jobs.txt").exists()  # nothing submitted


@pytest.mark.parametrize(
    "extra",
    [
        ["--until-done", "--local"],
        ["--until-done", "--dry-run"],
        ["--then", "x"],
        ["--max-rounds", "3"],
    ],
)
def test_until_done_usage_errors_exit_2_with_one_line(extra, capsys):
    assert main(["x.json", "--runs", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyexp-submit: ") and err.count("\n") == 1, err


def test_the_next_round_runs_the_same_submit_with_everything_explicit(project, monkeypatch):
    from dataclasses import replace

    from pyexp.cli.submit import _next_round_argv
    from pyexp.scheduler.cluster import load_cluster
    from pyexp.scheduler.submit import SubmitOptions

    monkeypatch.setenv("SBATCH_ACCOUNT", "def-env")  # the follow-up job will not have it
    args = parse_args(
        [
            project["exp"],
            "--until-done",
            "--then",
            "python a.py",
            "--retry-failed",
            "--workers",
            "3",
        ]
    )
    cluster = load_cluster(project["cluster"]).with_account(None, required=False)
    opts = SubmitOptions(runs=2, cluster=replace(cluster, account="def-env"))
    argv = _next_round_argv(args, "/abs/sweep.json", opts)
    assert argv[:6] == [
        "/abs/sweep.json",
        "--runs",
        "2",
        "--cluster",
        project["cluster"],
        "--until-done",
    ]
    assert argv[6:] == ["--account", "def-env", "--workers", "3", "--then", "python a.py"]
    assert "--retry-failed" not in argv  # once is enough: a chain never retries for good


def test_a_chain_whose_follow_up_is_gone_says_so_and_names_its_err():
    chain = Chain(round=2, followup="77", followup_err="/logs/chain-round-3.err", last="x")
    line = describe(chain, gone=True)
    assert line.startswith("chain broken: follow-up job 77 of round 3 is gone without a word")
    assert "/logs/chain-round-3.err" in line and "--until-done restarts it" in line
    assert describe(chain).startswith("chain: round 2 of 10 (x); follow-up job 77 runs round 3")


def test_status_shows_the_chain_without_asking_slurm(project, capsys):
    from pyexp.cli.status import main as status

    path = state_dirs(loadExperiment(project["exp"])).chain
    Chain(round=1, stopped="every index done after round 1", last="y").write(path)
    status([project["exp"], "--runs", "1", "--no-slurm"])
    out = capsys.readouterr().out
    assert "  chain stopped: every index done after round 1 (last round: y)" in out
    status([project["exp"], "--runs", "1", "--no-slurm", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["chain"].startswith("chain stopped")
