"""Retries that adapt, without Slurm: how much more an index gets, the caps, the attempt count."""

from __future__ import annotations

from dataclasses import replace

from pyexp.experiment import loadExperiment
from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.escalate import more_of, retries
from pyexp.standing.reconcile import FAILING, MISSING, classify, submittable
from pyexp.standing.slurm_states import QueueSnapshot
from pyexp.state.attempts import OOM, TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import SUBMITTED, Ledger, LedgerEntry
from pyexp.state.records import record_key


def _entry(mem=0.25, seconds=3600.0):
    return LedgerEntry(
        "e", "/x.json", "f", {}, 1, [[0]], mem_per_core_gb=mem, time_limit_seconds=seconds
    )


def test_out_of_memory_gets_twice_the_memory_of_that_attempt_capped_at_a_node():
    fir = load_cluster("fir")  # 750 GB nodes; 1 core per task here
    assert more_of(OOM, _entry(mem=4), fir)[:2] == (8, 1.0)
    assert "out of memory with 4G per core: 8G" in more_of(OOM, _entry(mem=4), fir)[2]
    whole = replace(fir, cores=192)  # 750 GB / 192 cores
    assert more_of(OOM, _entry(mem=3), whole)[0] == fir.mem_per_node_gb / 192
    assert more_of(OOM, _entry(mem=fir.mem_per_node_gb / 192), whole) is None  # at the cap
    assert more_of(OOM, _entry(mem=None), fir) is None  # nothing asked: nothing to double


def test_a_timeout_gets_twice_the_time_in_a_task_of_its_own_capped_at_max_time_hours():
    fir = load_cluster("fir")  # jobs up to 168 h
    mem, hours, why = more_of(TIMEOUT, _entry(seconds=3 * 3600), fir)
    assert (mem, hours) == (
        0.25,
        6,
    ) and why == "timed out in a task of 3 h: a task of its own of 6 h"
    assert more_of(TIMEOUT, _entry(seconds=100 * 3600), fir)[1] == 168
    assert more_of(TIMEOUT, _entry(seconds=168 * 3600), fir) is None


def _attempt(exp, index, outcome, job):
    key = record_key(exp.getPermutation(index), exp.getRun(index))
    Attempts(state_dirs(exp).attempts).record(key, outcome, {"index": index, "job": job}, job)


def _ended(exp, job_id, indices, escalated=""):
    entry = replace(
        _entry(seconds=60.0),
        id=f"e{job_id}",
        experiment=exp.path,
        tasks=[[i] for i in indices],
        state=SUBMITTED,
        job_id=job_id,
        escalated=escalated,
    )
    Ledger(state_dirs(exp).ledger).write(entry)


def test_only_indices_that_ran_out_of_memory_or_time_get_more_grouped_by_what(project):
    exp, cluster = loadExperiment(project["exp"]), load_cluster(project["cluster"])
    _ended(exp, "500", [1, 2, 3, 4])
    _attempt(exp, 1, OOM, "500_0")
    _attempt(exp, 2, TIMEOUT, "500_1")
    _attempt(exp, 3, TIMEOUT, "500_2")
    _attempt(exp, 4, "failed", "500_3")  # an ordinary failure: retried as it was
    standing = classify(exp, 1, QueueSnapshot())
    entries = Ledger(state_dirs(exp).ledger).entries()
    found = retries(exp, standing, submittable(standing), cluster, entries)
    assert {(r.indices.text(), r.mem_per_core_gb, r.time_hours * 60) for r in found} == {
        ("1", 0.5, 1.0),
        ("2-3", 0.25, 2.0),
    }
    assert 4 in standing.indices(FAILING)


def test_a_timeout_counts_against_max_attempts_only_in_a_retry_with_more_time(project):
    exp = loadExperiment(project["exp"])
    _ended(exp, "500", [5])
    _attempt(exp, 5, TIMEOUT, "500_0")
    assert 5 in classify(exp, 1, QueueSnapshot()).indices(MISSING)  # always retried, not charged
    _ended(exp, "600", [5], escalated="timed out in a task of 1 min: a task of its own of 2 min")
    _attempt(exp, 5, TIMEOUT, "600_0")
    standing = classify(exp, 1, QueueSnapshot(), max_attempts=2)
    assert 5 in standing.indices(FAILING)  # the retry with more time counted
    _ended(exp, "700", [5], escalated="timed out in a task of 2 min: a task of its own of 4 min")
    _attempt(exp, 5, TIMEOUT, "700_0")
    assert 5 in classify(exp, 1, QueueSnapshot(), max_attempts=2).indices("failed")
