"""Completion records: keyed by parameters + run, atomic, folded into segments, concurrency-safe."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from pyexp.state import records
from pyexp.state.atomic import scan_names, write_atomic
from pyexp.state.records import SEGMENTS, CompletionRecords, record_key

PARAMS = {"alpha": 0.5, "optimizer": {"name": "adam", "beta": 0.9}}


def loose_names(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n not in (SEGMENTS, records.DURATIONS)]


def test_mark_then_is_complete_and_completed(tmp_path):
    recs = CompletionRecords(str(tmp_path / "done"))
    assert recs.completed() == set()
    assert not recs.is_complete(PARAMS, 0)
    recs.mark_complete(PARAMS, 0, info={"host": "n1"})
    assert recs.is_complete(PARAMS, 0)
    assert not recs.is_complete(PARAMS, 1)
    assert not recs.is_complete({**PARAMS, "alpha": 0.25}, 0)
    assert recs.completed() == {record_key(PARAMS, 0)}
    with open(tmp_path / "done" / record_key(PARAMS, 0)) as f:
        body = json.load(f)
    assert body["params"] == PARAMS and body["run"] == 0 and body["host"] == "n1"


def test_marking_twice_is_one_record(tmp_path):
    recs = CompletionRecords(str(tmp_path))
    recs.mark_complete(PARAMS, 3)
    recs.mark_complete(PARAMS, 3)
    assert recs.completed() == {record_key(PARAMS, 3)}


def test_record_key_is_canonical_and_depends_on_params_and_run():
    reordered = {"optimizer": {"beta": 0.9, "name": "adam"}, "alpha": 0.5}
    assert record_key(PARAMS, 1) == record_key(reordered, 1)
    assert record_key(PARAMS, 1) != record_key(PARAMS, 2)
    assert record_key(PARAMS, 1) != record_key({**PARAMS, "alpha": 0.25}, 1)
    assert record_key({"a": 1}, 0) != record_key({"a": 1.0}, 0)
    assert record_key({"a": 1}, 0) != record_key({"a": "1"}, 0)
    assert record_key(PARAMS, 12).endswith("-12")


def test_records_are_written_atomically_without_leftovers(tmp_path):
    recs = CompletionRecords(str(tmp_path))
    for run in range(20):
        recs.mark_complete(PARAMS, run)
    assert sorted(os.listdir(tmp_path)) == sorted(record_key(PARAMS, r) for r in range(20))


def test_write_atomic_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_atomic("plain.txt", "hello")
    assert (tmp_path / "plain.txt").read_text() == "hello"
    assert os.listdir(tmp_path) == ["plain.txt"]


def test_scan_names_skips_temp_files_and_missing_folders(tmp_path):
    (tmp_path / ".tmp-123").write_text("")
    (tmp_path / "k-0").write_text("")
    assert scan_names(str(tmp_path)) == ["k-0"]
    assert scan_names(str(tmp_path / "nope")) == []


def test_folding_into_segments_keeps_every_key(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 5)
    folder = str(tmp_path)
    recs = CompletionRecords(folder)
    keys = set()
    for run in range(23):
        recs.mark_complete(PARAMS, run)
        keys.add(record_key(PARAMS, run))
    assert CompletionRecords(folder).completed() == keys
    assert loose_names(folder) == []  # folded
    assert len(os.listdir(tmp_path / SEGMENTS)) == 1
    for run in range(23, 30):
        recs.mark_complete(PARAMS, run)
        keys.add(record_key(PARAMS, run))
    assert CompletionRecords(folder).completed() == keys
    assert loose_names(folder) == []
    assert len(os.listdir(tmp_path / SEGMENTS)) == 2  # only the loose records were rewritten
    monkeypatch.setattr(records, "MERGE_AT", 2)
    for run in range(30, 36):
        recs.mark_complete(PARAMS, run)
        keys.add(record_key(PARAMS, run))
    assert CompletionRecords(folder).completed() == keys
    assert len(os.listdir(tmp_path / SEGMENTS)) == 1  # many segments: merged into one
    fresh = CompletionRecords(folder)
    assert all(fresh.is_complete(PARAMS, run) for run in range(36))
    assert not fresh.is_complete(PARAMS, 36)


def test_few_loose_records_are_not_folded(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 5)
    recs = CompletionRecords(str(tmp_path))
    for run in range(4):
        recs.mark_complete(PARAMS, run)
    assert len(recs.completed()) == 4
    assert len(loose_names(tmp_path)) == 4
    for run in range(4, 10):
        recs.mark_complete(PARAMS, run)
    assert len(recs.completed(compact=False)) == 10
    assert len(loose_names(tmp_path)) == 10


def test_reader_sees_segment_written_by_another_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 3)
    a, b = CompletionRecords(str(tmp_path)), CompletionRecords(str(tmp_path))
    for run in range(3):
        a.mark_complete(PARAMS, run)
    assert len(b.completed()) == 3  # b folds
    for run in range(3, 6):
        a.mark_complete(PARAMS, run)
    assert len(a.completed()) == 6  # a reads b's segment, folds it with its loose records
    assert len(b.completed()) == 6


def test_segment_vanishing_mid_read_is_not_a_lost_key(tmp_path, monkeypatch):
    """A reader that lists a segment another reader then folds away must list again."""
    monkeypatch.setattr(records, "COMPACT_AT", 2)
    monkeypatch.setattr(records, "MERGE_AT", 1)
    folder = str(tmp_path)
    writer = CompletionRecords(folder)
    for run in range(2):
        writer.mark_complete(PARAMS, run)
    writer.completed()  # segment 1 holds runs 0-1
    for run in range(2, 4):
        writer.mark_complete(PARAMS, run)

    reader = CompletionRecords(folder)
    real_scan = records.scan_names
    calls = []

    def scan_then_fold(path):
        names = real_scan(path)
        if path.endswith(SEGMENTS) and not calls:
            calls.append(path)
            CompletionRecords(folder).completed()  # folds segment 1 + runs 2-3 into segment 2
        return names

    monkeypatch.setattr(records, "scan_names", scan_then_fold)
    assert reader.completed(compact=False) == {record_key(PARAMS, r) for r in range(4)}


# ---------------------------------------------------------------- real concurrent processes

WRITERS, PER_WRITER = 4, 300


def _writer(folder: str, w: int) -> None:
    recs = CompletionRecords(folder)
    for i in range(PER_WRITER):
        recs.mark_complete({"writer": w, "i": i}, 0)


def _folder(folder: str, stop, result) -> None:
    """Fold repeatedly; a key once seen must be seen by every later call."""
    recs = CompletionRecords(folder)
    seen: set[str] = set()
    lost, calls = 0, 0
    while True:
        stopping = stop.is_set()
        keys = recs.completed()
        calls += 1
        lost += len(seen - keys)
        seen |= keys
        if stopping:
            break
    result.put((calls, lost, len(seen)))


def test_concurrent_writers_and_folders_lose_no_record(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 10)  # inherited by the forked processes
    ctx = multiprocessing.get_context("fork")
    folder = str(tmp_path / "done")
    stop, result = ctx.Event(), ctx.Queue()
    folders = [ctx.Process(target=_folder, args=(folder, stop, result)) for _ in range(2)]
    writers = [ctx.Process(target=_writer, args=(folder, w)) for w in range(WRITERS)]
    for p in folders + writers:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    stop.set()
    reports = [result.get(timeout=120) for _ in folders]
    for p in folders:
        p.join(timeout=120)
        assert p.exitcode == 0

    expected = {
        record_key({"writer": w, "i": i}, 0) for w in range(WRITERS) for i in range(PER_WRITER)
    }
    assert CompletionRecords(folder).completed(compact=False) == expected
    assert all(lost == 0 for _, lost, _ in reports), reports
    assert len(loose_names(folder)) < WRITERS * PER_WRITER  # folding did happen meanwhile
    assert os.listdir(os.path.join(folder, SEGMENTS))
    fresh = CompletionRecords(folder)
    assert all(fresh.is_complete({"writer": w, "i": 7}, 0) for w in range(WRITERS))


@pytest.mark.parametrize("compact_at", [1, 50])
def test_folding_everything_then_marking_again(tmp_path, monkeypatch, compact_at):
    monkeypatch.setattr(records, "COMPACT_AT", compact_at)
    recs = CompletionRecords(str(tmp_path))
    keys = set()
    for run in range(120):
        recs.mark_complete(PARAMS, run)
        keys.add(record_key(PARAMS, run))
        if run % 7 == 0:
            assert recs.completed() == keys
    assert CompletionRecords(str(tmp_path)).completed() == keys


def test_headerless_segment_of_pyexp_0_1_is_read(tmp_path):
    keys = [record_key({"a": i}, 0) for i in range(3)]
    write_atomic(str(tmp_path / SEGMENTS / "seg-old"), "\n".join(sorted(keys)) + "\n")
    assert CompletionRecords(str(tmp_path)).completed(compact=False) == set(keys)


def test_headerless_segment_cut_mid_line_is_damaged(tmp_path):
    keys = sorted(record_key({"a": i}, 0) for i in range(3))
    write_atomic(str(tmp_path / SEGMENTS / "seg-old"), "\n".join(keys)[:-3])
    with pytest.raises(records.StateCorrupt, match="seg-old"):
        CompletionRecords(str(tmp_path)).completed(compact=False)


def test_durations_survive_folding_and_merging(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 3)
    monkeypatch.setattr(records, "MERGE_AT", 2)
    recs = CompletionRecords(str(tmp_path))
    for i in range(7):
        recs.mark_complete({"a": i}, 0, {"duration": float(i)})
        recs.completed()  # folds every third record, merges every second segment
    assert sorted(recs.durations()) == [float(i) for i in range(7)]
    assert len(scan_names(str(tmp_path / records.DURATIONS))) <= 2
    assert len(recs.completed()) == 7


def test_durations_skip_records_without_one_and_sample_loose_ones(tmp_path):
    recs = CompletionRecords(str(tmp_path))
    recs.mark_complete({"a": 0}, 0)
    for i in range(1, 5):
        recs.mark_complete({"a": i}, 0, {"duration": 2.0})
    assert recs.durations() == [2.0] * 4
    assert len(recs.durations(sample=2)) <= 2


# ---------------------------------------------------------------- runners' journals


def journals(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(records.JOURNAL))


def test_a_runner_appends_its_records_to_one_journal_read_like_records(tmp_path):
    writer = CompletionRecords(str(tmp_path), journal="7_0")
    for run in range(3):
        writer.mark_complete(PARAMS, run, info={"duration": 1.5})
    assert len(journals(tmp_path)) == 1 and loose_names(tmp_path) == journals(tmp_path)
    reader = CompletionRecords(str(tmp_path))
    assert reader.completed(compact=False) == {record_key(PARAMS, r) for r in range(3)}
    assert reader.is_complete(PARAMS, 2) and not reader.is_complete(PARAMS, 3)
    assert reader.durations() == [1.5, 1.5, 1.5]


def test_a_journal_line_cut_short_or_damaged_is_not_a_record(tmp_path):
    writer = CompletionRecords(str(tmp_path), journal="7_0")
    writer.mark_complete(PARAMS, 0)
    writer.mark_complete(PARAMS, 1)
    path = tmp_path / journals(tmp_path)[0]
    lines = path.read_bytes().split(b"\n")
    damaged = lines[0].replace(b'"run": 0', b'"run": 9')  # checksum no longer matches
    path.write_bytes(damaged + b"\n" + lines[1][:-5])  # the second cut mid-line
    assert CompletionRecords(str(tmp_path)).completed(compact=False) == set()


def test_a_failed_append_starts_a_new_journal_so_no_line_follows_a_cut_one(tmp_path):
    writer = CompletionRecords(str(tmp_path), journal="7_0")
    writer.mark_complete(PARAMS, 0)
    os.close(writer._journal[0])  # the next write fails (as on a full or failing filesystem)
    with pytest.raises(OSError) as failed:
        writer.mark_complete(PARAMS, 1)
    assert failed.value.filename == str(tmp_path / journals(tmp_path)[0])
    writer.mark_complete(PARAMS, 2)
    assert len(journals(tmp_path)) == 2
    keys = {record_key(PARAMS, r) for r in (0, 2)}
    assert CompletionRecords(str(tmp_path)).completed(compact=False) == keys


def test_a_runner_folds_its_journal_when_it_ends_and_others_only_once_their_job_ended(tmp_path):
    mine = CompletionRecords(str(tmp_path), journal="7_0-11")
    mine.mark_complete(PARAMS, 0, info={"duration": 2.0})
    crashed = CompletionRecords(str(tmp_path), journal="8_3-12")
    crashed.mark_complete(PARAMS, 1, info={"duration": 3.0})
    running = CompletionRecords(str(tmp_path), journal="9_0-13")
    running.mark_complete(PARAMS, 2)
    mine.fold({record_key(PARAMS, 0): 2.0})
    assert [n.split("-")[1] for n in journals(tmp_path)] == ["8_3", "9_0"]
    CompletionRecords(str(tmp_path)).fold(ended={"8"})  # at rest: job 8 ended, 9 runs on
    assert [n.split("-")[1] for n in journals(tmp_path)] == ["9_0"]
    reader = CompletionRecords(str(tmp_path))
    assert reader.completed(compact=False) == {record_key(PARAMS, r) for r in range(3)}
    assert sorted(reader.durations()) == [2.0, 3.0]


def test_known_complete_reads_the_folder_at_most_once_per_window(tmp_path, monkeypatch):
    reader, writer = CompletionRecords(str(tmp_path)), CompletionRecords(str(tmp_path), "7_0")
    key = record_key(PARAMS, 0)
    assert not reader.known_complete(key, 60.0)
    writer.mark_complete(PARAMS, 0)
    listings = []
    real = records.scan_names
    monkeypatch.setattr(records, "scan_names", lambda f: (listings.append(f), real(f))[1])
    assert not reader.known_complete(key, 60.0) and listings == []  # within its window
    assert reader.known_complete(key, 0.0) and listings  # read again once older
    assert writer.known_complete(key, 60.0)  # its own records at once


def test_a_journal_that_cannot_be_read_is_never_folded_away(tmp_path, monkeypatch):
    writer = CompletionRecords(str(tmp_path), journal="7_0")
    writer.mark_complete(PARAMS, 0)
    real = CompletionRecords._journal_records

    def stale(self, name, strict=False):
        raise OSError(116, "Stale file handle", name)

    monkeypatch.setattr(CompletionRecords, "_journal_records", stale)
    writer.fold({record_key(PARAMS, 0): 1.0})
    monkeypatch.setattr(CompletionRecords, "_journal_records", real)
    assert len(journals(tmp_path)) == 1  # left for a later fold, its record still read
    assert CompletionRecords(str(tmp_path)).completed(compact=False) == {record_key(PARAMS, 0)}
