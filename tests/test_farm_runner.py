"""Farm mode, runner side: pool entries in the ledger, pulling workers, pyexp.claim()."""

import json
from dataclasses import asdict

from pyexp.indexset import IndexSet
from pyexp.state.ledger import FARM, Ledger, LedgerEntry


def test_farm_entry_round_trips_and_lists_its_pool(tmp_path):
    ledger = Ledger(str(tmp_path))
    entry = LedgerEntry("e1", "/x.json", "f", {}, 1, [], mode=FARM, pool="0-4,9", workers=3)
    entry.time_limit_seconds, entry.index_minutes = 600.0, 0.5
    ledger.write(entry)
    back = ledger.load("e1")
    assert back == entry
    assert back.indices() == [0, 1, 2, 3, 4, 9]
    assert back.index_set() == IndexSet.parse("0-4,9")
    assert back.task_count() == 3


def test_entry_written_before_farm_fields_loads_as_static(tmp_path):
    old = asdict(LedgerEntry("e2", "/x.json", "f", {}, 1, [[3, 1], [2]]))
    for key in ("mode", "pool", "workers", "time_limit_seconds"):
        old.pop(key)
    (tmp_path / "e2.json").write_text(json.dumps(old))
    entry = Ledger(str(tmp_path)).load("e2")
    assert not entry.is_farm
    assert entry.indices() == [3, 1, 2]
    assert entry.index_set() == IndexSet.of([1, 2, 3])
    assert entry.task_count() == 2
