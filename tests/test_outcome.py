"""An index's outcome is recorded in one place for pyexp-run and pyexp.claim()."""

from __future__ import annotations

import os

from pyexp.runner.item import Item
from pyexp.runner.outcome import DONE, UNRECORDED, record_outcome
from pyexp.state.attempts import FAILED, TIMEOUT, Attempts
from pyexp.state.leases import IndexLeases, held_keys
from pyexp.state.records import CompletionRecords, record_key

PARAMS = {"x": 1}
WORK = Item(3, PARAMS, 0, record_key(PARAMS, 0))


def _state(tmp_path, records="done", attempts="attempts"):
    leases = IndexLeases(str(tmp_path / "leases"), 30.0)
    assert leases.try_take(WORK.key) is not None
    return CompletionRecords(str(tmp_path / records)), Attempts(str(tmp_path / attempts)), leases


def test_done_is_a_completion_record_and_the_lease_is_released(tmp_path):
    records, attempts, leases = _state(tmp_path)
    assert record_outcome(records, attempts, leases, WORK, DONE, {"index": 3}, "7_0") == (
        DONE,
        None,
    )
    assert records.is_complete(PARAMS, 0) and attempts.names() == []
    assert held_keys(str(tmp_path / "leases")) == {}


def test_any_other_outcome_is_an_attempt_with_its_failure(tmp_path):
    records, attempts, leases = _state(tmp_path)
    got = record_outcome(records, attempts, leases, WORK, TIMEOUT, {"index": 3}, "7_0", {"x": 1})
    assert got == (TIMEOUT, None) and attempts.names() == [(WORK.key, TIMEOUT, "7_0")]
    assert not records.is_complete(PARAMS, 0) and held_keys(str(tmp_path / "leases")) == {}


def test_a_completion_record_that_cannot_be_written_is_a_failed_attempt(tmp_path):
    (tmp_path / "file").write_text("")
    records, attempts, leases = _state(tmp_path, records="file/done")
    outcome, why = record_outcome(records, attempts, leases, WORK, DONE, {}, "7_0")
    assert outcome == FAILED and why.startswith("its completion record cannot be written")
    assert attempts.names() == [(WORK.key, FAILED, "7_0")]


def test_state_that_cannot_be_written_leaves_the_index_unrecorded_and_released(tmp_path):
    (tmp_path / "file").write_text("")
    records, attempts, leases = _state(tmp_path, "file/done", "file/attempts")
    outcome, why = record_outcome(records, attempts, leases, WORK, DONE, {}, "7_0")
    assert outcome == UNRECORDED and why.startswith("not recorded (") and "stays missing" in why
    assert held_keys(str(tmp_path / "leases")) == {}


def test_the_tombstone_comes_before_the_record_and_is_taken_back_when_the_record_fails(
    tmp_path, monkeypatch
):
    from pyexp.state.leases import DONE as TOMBSTONED
    from pyexp.state.leases import is_tombstone

    records, attempts, leases = _state(tmp_path)
    marker, seen = leases.path(WORK.key), []
    real = records.mark_complete
    monkeypatch.setattr(
        records, "mark_complete", lambda *a, **k: (seen.append(is_tombstone(marker)), real(*a, **k))
    )
    assert record_outcome(records, attempts, leases, WORK, DONE, {}, "7_0")[0] == DONE
    assert seen == [True]  # a contender that cannot see the record yet reads DONE
    assert IndexLeases(str(tmp_path / "leases"), 30.0).try_take(WORK.key) == TOMBSTONED

    (tmp_path / "file").write_text("")
    records, attempts, leases = _state(tmp_path / "again", records="../file/done")
    outcome, _ = record_outcome(records, attempts, leases, WORK, DONE, {}, "7_0")
    assert outcome == FAILED and not os.path.exists(leases.path(WORK.key))
    other = IndexLeases(str(tmp_path / "again" / "leases"), 30.0).try_take(WORK.key)
    assert other not in (None, TOMBSTONED)  # missing, not done: it can run again
    other.release()
