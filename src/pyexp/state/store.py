"""The results store of one experiment: shards of checksummed records, one writer per shard.

A record is `PXR<version byte> <meta length u32> <data length u64> <crc32 u32>`, then the meta
(JSON) and the data (the metrics' raw C-order bytes, one after another). Contracts:
- one writer per shard: a Runner or claim worker appends to its own `shards/<host>-<pid>-<id>`,
  each record in one write, fsynced, the file closed after each (close-to-open on NFS); no lock,
  so nothing relies on fcntl across nodes. A write that fails is cut back off the file (if that
  fails too, the writer starts a new shard), so no complete record ever follows a torn one.
- a crash mid-write leaves a torn tail: readers stop there and see every record before it.
- a record holds one completed index's metrics (its key, params, run, time); the writer appends
  it before the completion record is written, and readers show only keys with a completion record,
  so the data and the completion never disagree; of several records of a key, the latest wins.
- compaction merges sealed shards (and ones untouched for STALE_SECONDS) into one, written whole
  and renamed in before the inputs are deleted: killed anywhere, it loses nothing (a record seen
  twice meanwhile is the same record). Reads never need it and never write.
- a sealed shard and a merged file end with an index (their records' metas, each setting's
  params once, each record's offset and length, then a fixed tail `PXI<version> <index length
  u32> <crc32 u32> <index offset u64>`): readers load a whole file with one read and one JSON
  parse, or one setting with a read of the index and one of its records (a merged file keeps
  each setting's records together). A file without a valid index (still being appended, or
  killed while sealing) is scanned record by record; readers of format 1 stop at the index as
  at a torn tail, so they read such files too.
- a record of a newer format raises ResultsError naming the shard: upgrade pyexp to read it.
Imports no numpy: the run path folds and writes raw bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pyexp.errors import ResultsError
from pyexp.state.atomic import clean_temp, scan_names, write_atomic

VERSION = 1
_MAGIC = b"PXR"
_HEAD = struct.Struct("<3sBIQI")  # magic, version, meta length, data length, crc32
SHARDS = "shards"
SEALED = ".sealed"  # a shard whose writer is done; an open one has no suffix
STALE_SECONDS = 8 * 24 * 3600  # longer than any Slurm job (Alliance: 7 days at most)
_RELISTS = 8
_INDEX = b"PXI"
_TAIL = struct.Struct("<3sBIIQ")  # magic, version, index length, index crc32, index offset


@dataclass(frozen=True)
class Record:
    """One record: its meta and its data (a memoryview into the shard)."""

    meta: dict
    data: memoryview

    def metric(self, name: str) -> tuple[str, list[int], memoryview] | None:
        """(dtype, shape, bytes) of a metric of this record; None if it has none by that name."""
        spec = self.meta.get("metrics", {}).get(name)
        if spec is None:
            return None
        start = spec["offset"]
        return spec["dtype"], spec["shape"], self.data[start : start + spec["nbytes"]]


def encode(meta: dict, data: bytes) -> bytes:
    """One record of meta and data."""
    body = json.dumps(meta, separators=(",", ":")).encode()
    crc = _crc(memoryview(body), memoryview(data))
    return _HEAD.pack(_MAGIC, VERSION, len(body), len(data), crc) + body + data


def decode(buffer: bytes, where: str) -> Iterator[Record]:
    """The complete records of buffer, in order, up to a torn or damaged tail."""
    view, pos, end = memoryview(buffer), 0, len(buffer)
    while pos + _HEAD.size <= end:
        magic, version, nmeta, ndata, crc = _HEAD.unpack_from(view, pos)
        if magic != _MAGIC:
            return
        if version > VERSION:
            raise ResultsError(
                f"{where}: written by a newer pyexp (store format {version}, this one reads "
                f"{VERSION}); upgrade pyexp (pip install -U pyexp-utils) to read it"
            )
        body, stop = pos + _HEAD.size, pos + _HEAD.size + nmeta + ndata
        if stop > end or _crc(view[body : body + nmeta], view[body + nmeta : stop]) != crc:
            return
        yield Record(json.loads(bytes(view[body : body + nmeta])), view[body + nmeta : stop])
        pos = stop


def _crc(meta: memoryview, data: memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(meta))


def read_file(path: str, match: Callable[[dict], bool] | None = None) -> list[Record] | None:
    """The complete records of one file (with match: only those whose params it accepts, read
    through the file's index where it has one); None if it is gone."""
    try:
        with open(path, "rb") as f:
            index = None if match is None else _read_index(f)
            if index is not None:
                selected = _read_selected(f, index, match)
                if selected is not None:
                    return selected
            f.seek(0)
            records = _records(f.read(), path)
    except FileNotFoundError:
        return None
    return records if match is None else [r for r in records if _accepts(match, r)]


def _accepts(match: Callable[[dict], bool], record: Record) -> bool:
    return "params" in record.meta and match(record.meta["params"])


def _records(buffer: bytes, where: str) -> list[Record]:
    """The records of a whole file: through its index if it has a valid one, else decoded one by
    one (also when a record behind a valid index is damaged)."""
    index = _index_of(buffer, where)
    indexed = None if index is None else _indexed(buffer, 0, index)
    return list(decode(buffer, where)) if indexed is None else indexed


def _indexed(buffer: bytes, start: int, index: list) -> list[Record] | None:
    """The records index lists in buffer (which begins at file offset start); None if one of
    them is damaged."""
    view, out = memoryview(buffer), []
    for offset, length, meta in index:
        record = _checked(view[offset - start : offset - start + length], meta)
        if record is None:
            return None
        out.append(record)
    return out


def _checked(view: memoryview, meta: dict) -> Record | None:
    """The record in view with meta from the index; None if its header or checksum is wrong."""
    if len(view) < _HEAD.size:
        return None
    magic, _, nmeta, ndata, crc = _HEAD.unpack_from(view, 0)
    body = _HEAD.size
    if magic != _MAGIC or body + nmeta + ndata != len(view):
        return None
    if _crc(view[body : body + nmeta], view[body + nmeta :]) != crc:
        return None
    return Record(meta, view[body + nmeta :])


def _index_of(buffer: bytes, where: str) -> list | None:
    """[(offset, length, meta)] of buffer's records from its index; None if it has no valid one."""
    if len(buffer) < _TAIL.size:
        return None
    tail = _TAIL.unpack_from(buffer, len(buffer) - _TAIL.size)
    found = _index_body(tail, len(buffer), where)
    if found is None:
        return None
    offset, length = found
    index = _parse_index(memoryview(buffer)[offset : offset + length], tail[3])
    return None if index is None else _entries(index, index["records"])


def _index_body(tail: tuple, size: int, where: str) -> tuple[int, int] | None:
    """(offset, length) of the index a tail describes; None if it is not a valid tail."""
    magic, version, length, _, offset = tail
    if magic != _INDEX or offset + length + _TAIL.size != size:
        return None
    if version > VERSION:
        raise ResultsError(
            f"{where}: written by a newer pyexp (store format {version}, this one reads "
            f"{VERSION}); upgrade pyexp (pip install -U pyexp-utils) to read it"
        )
    return offset, length


def _parse_index(body: memoryview, crc: int) -> dict | None:
    return json.loads(bytes(body)) if zlib.crc32(body) == crc else None


def _entries(index: dict, rows: list) -> list[tuple[int, int, dict]]:
    """(offset, length, meta) of the index's rows."""
    params, metrics = index["params"], index["metrics"]
    return [
        (offset, length, _meta(meta, params, p, metrics, m)) for offset, length, p, m, meta in rows
    ]


def _meta(meta: dict, params: list, p: int, metrics: list, m: int) -> dict:
    """A record's meta from its index row: its own fields and its params and metrics."""
    if p >= 0:
        meta["params"] = params[p]
    if m >= 0:
        meta["metrics"] = metrics[m]
    return meta


def _read_index(f: BinaryIO) -> dict | None:
    """The index of an open file (two reads); None if it has no valid one."""
    size = os.fstat(f.fileno()).st_size
    if size < _TAIL.size:
        return None
    f.seek(size - _TAIL.size)
    tail = _TAIL.unpack(f.read(_TAIL.size))
    found = _index_body(tail, size, f.name)
    if found is None:
        return None
    f.seek(found[0])
    body = f.read(found[1])
    return _parse_index(memoryview(body), tail[3]) if len(body) == found[1] else None


def _read_selected(f: BinaryIO, index: dict, match: Callable[[dict], bool]) -> list[Record] | None:
    """The records index lists whose params match accepts (asked once per setting): one read per
    run of adjacent ones; None if one of them is damaged."""
    verdicts = [match(params) for params in index["params"]]
    chosen = _entries(index, [row for row in index["records"] if row[2] >= 0 and verdicts[row[2]]])
    out: list[Record] = []
    for run in _adjacent(chosen):
        start, stop = run[0][0], run[-1][0] + run[-1][1]
        f.seek(start)
        records = _indexed(f.read(stop - start), start, run)
        if records is None:
            return None
        out += records
    return out


def _adjacent(entries: list) -> Iterator[list]:
    """entries (sorted by offset) in runs whose records follow each other in the file."""
    run: list = []
    for entry in sorted(entries, key=lambda e: e[0]):
        if run and run[-1][0] + run[-1][1] != entry[0]:
            yield run
            run = []
        run.append(entry)
    if run:
        yield run


def index_block(entries: list[tuple[int, int, dict]]) -> bytes:
    """The index that follows records [(offset, length, meta)] (the last ending where it starts):
    each distinct params and metrics layout once, then per record its offset, length, their
    positions and the rest of its meta."""
    params, metrics = _Distinct(), _Distinct()
    rows = [
        [offset, length, params.at(meta.get("params")), metrics.at(meta.get("metrics")),
         {k: v for k, v in meta.items() if k not in ("params", "metrics")}]
        for offset, length, meta in entries
    ]  # fmt: skip
    index = {"params": params.values, "metrics": metrics.values, "records": rows}
    body = json.dumps(index, separators=(",", ":")).encode()
    return body + _TAIL.pack(_INDEX, VERSION, len(body), zlib.crc32(body), _end(entries))


class _Distinct:
    """Distinct JSON values in order of first sight; at(None) is -1."""

    def __init__(self) -> None:
        self.values: list = []
        self.seen: dict[str, int] = {}

    def at(self, value: Any) -> int:
        """value's position among the distinct values (added if new)."""
        if value is None:
            return -1
        canonical = json.dumps(value, sort_keys=True)
        if canonical not in self.seen:
            self.seen[canonical] = len(self.values)
            self.values.append(value)
        return self.seen[canonical]


def fold(staged: list[Record], meta: dict, where: str) -> bytes:
    """One record of an index (meta: key, params, run, time) from its staged saves: each name's
    values in call order, stacked when saved more than once; ResultsError if a name's shape or
    type changed between calls."""
    groups: dict[str, list[Record]] = {}
    for record in staged:
        groups.setdefault(record.meta["name"], []).append(record)
    metrics, chunks, offset = {}, [], 0
    for name, records in groups.items():
        first = records[0].meta
        for r in records[1:]:
            if (r.meta["dtype"], r.meta["shape"]) != (first["dtype"], first["shape"]):
                raise ResultsError(
                    f"{where}: metric {name!r} changed from {first['dtype']}{first['shape']} to "
                    f"{r.meta['dtype']}{r.meta['shape']} between saves of one run; save the "
                    "same shape each time, or the whole array once"
                )
        shape = first["shape"] if len(records) == 1 else [len(records), *first["shape"]]
        nbytes = sum(r.data.nbytes for r in records)
        spec = {"dtype": first["dtype"], "shape": shape, "offset": offset, "nbytes": nbytes}
        metrics[name] = spec
        chunks.extend(bytes(r.data) for r in records)
        offset += nbytes
    return encode({**meta, "metrics": metrics}, b"".join(chunks))


class ShardWriter:
    """Appends records to this process's own shard in folder (created on first use)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.join(folder, SHARDS)
        self.path: str | None = None
        self.entries: list[tuple[int, int, dict]] = []  # this shard's records, for its index

    def append(self, record: bytes) -> None:
        """Append one record durably (written, fsynced, closed); OSError if it cannot be."""
        fd = self._open()
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, record)
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)  # no torn record before a later one
                except OSError:
                    self.path = None  # it stays torn: later records go to a new shard
                raise
        finally:
            os.close(fd)
        _, _, nmeta, _, _ = _HEAD.unpack_from(record)
        meta = json.loads(record[_HEAD.size : _HEAD.size + nmeta])
        self.entries.append((size, len(record), meta))

    def seal(self) -> None:
        """Mark the shard finished, so compaction may merge it (nothing if none was written),
        after appending its index (left out if it cannot be: readers then scan the shard)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self._append_index()
            with contextlib.suppress(OSError):
                os.rename(self.path, self.path + SEALED)
            self.path = None

    def _append_index(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if self.entries and size == _end(self.entries):  # else: not all ours, left unindexed
                try:
                    _write_all(fd, index_block(self.entries))
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    raise
        finally:
            os.close(fd)

    def _open(self) -> int:
        if self.path is not None:
            try:
                return os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:  # compacted away after a long pause: start a new one
                self.path = None
        os.makedirs(self.folder, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path, self.entries = os.path.join(self.folder, name), []
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)


def _end(entries: list[tuple[int, int, dict]]) -> int:
    return entries[-1][0] + entries[-1][1] if entries else 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def shard_names(folder: str) -> list[str]:
    """The shard files of a store folder (no temp files)."""
    return sorted(n for n in scan_names(os.path.join(folder, SHARDS)) if not n.startswith("."))


def latest(
    folder: str, keys: set[str] | None = None, match: Callable[[dict], bool] | None = None
) -> dict[str, Record]:
    """Per record key (only those in keys, and whose params match accepts, if given), its latest
    record in the store; with match, an indexed file is read only where its records match."""
    for attempt in range(_RELISTS):
        files = [read_file(os.path.join(folder, SHARDS, n), match) for n in shard_names(folder)]
        if all(f is not None for f in files):
            return _latest(files, keys)
        time.sleep(0.005 * 2**attempt)  # merged away meanwhile: the merged file is listed now
    raise ResultsError(f"{folder}: shards kept vanishing while being read; try again")


def _latest(files: list[list[Record]], keys: set[str] | None) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for records in files:
        for record in records:
            key = record.meta["key"]
            if keys is not None and key not in keys:
                continue
            old = out.get(key)
            if old is None or record.meta["time"] >= old.meta["time"]:
                out[key] = record
    return out


def compact(folder: str, now: float | None = None) -> int:
    """Merge the sealed (or stale) shards of folder into one; how many were merged."""
    shards = os.path.join(folder, SHARDS)
    now = time.time() if now is None else now
    names = [n for n in shard_names(folder) if _mergeable(os.path.join(shards, n), n, now)]
    if len(names) < 2:
        return 0
    clean_temp(shards)
    files = [read_file(os.path.join(shards, n)) or [] for n in names]
    kept = sorted(_latest(files, None).values(), key=_by_setting)  # older records superseded
    chunks, entries, offset = [], [], 0
    for record in kept:
        chunks.append(encode(record.meta, bytes(record.data)))
        entries.append((offset, len(chunks[-1]), record.meta))
        offset += len(chunks[-1])
    merged = b"".join(chunks) + index_block(entries)
    write_atomic(os.path.join(shards, f"merged-{uuid.uuid4().hex[:12]}{SEALED}"), merged)
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(shards, n))
    return len(names)


def _by_setting(record: Record) -> tuple:
    """A setting's records together (the key is its params' hash, then the run), runs in order."""
    setting, _, run = record.meta["key"].rpartition("-")
    return setting, int(run) if run.isdigit() else -1, record.meta["key"]


def compact_quietly(folder: str) -> None:
    """compact(folder), an optional chore: its failure (read-only, quota, a newer format) is
    left for the readers, who need no compaction."""
    with contextlib.suppress(OSError, ResultsError):
        compact(folder)


def _mergeable(path: str, name: str, now: float) -> bool:
    if name.endswith(SEALED):
        return True
    try:
        return now - os.stat(path).st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return False
