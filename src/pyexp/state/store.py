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
from collections.abc import Iterator
from dataclasses import dataclass

from pyexp.errors import ResultsError
from pyexp.state.atomic import clean_temp, scan_names, write_atomic

VERSION = 1
_MAGIC = b"PXR"
_HEAD = struct.Struct("<3sBIQI")  # magic, version, meta length, data length, crc32
SHARDS = "shards"
SEALED = ".sealed"  # a shard whose writer is done; an open one has no suffix
STALE_SECONDS = 8 * 24 * 3600  # longer than any Slurm job (Alliance: 7 days at most)
_RELISTS = 8


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


def read_file(path: str) -> list[Record] | None:
    """The complete records of one file; None if it is gone."""
    try:
        with open(path, "rb") as f:
            buffer = f.read()
    except FileNotFoundError:
        return None
    return list(decode(buffer, path))


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

    def seal(self) -> None:
        """Mark the shard finished, so compaction may merge it (nothing if none was written)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.rename(self.path, self.path + SEALED)
            self.path = None

    def _open(self) -> int:
        if self.path is not None:
            try:
                return os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:  # compacted away after a long pause: start a new one
                self.path = None
        os.makedirs(self.folder, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = os.path.join(self.folder, name)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def shard_names(folder: str) -> list[str]:
    """The shard files of a store folder (no temp files)."""
    return sorted(n for n in scan_names(os.path.join(folder, SHARDS)) if not n.startswith("."))


def latest(folder: str, keys: set[str] | None = None) -> dict[str, Record]:
    """Per record key (only those in keys, if given), its latest record in the store."""
    for attempt in range(_RELISTS):
        files = [read_file(os.path.join(folder, SHARDS, n)) for n in shard_names(folder)]
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
    kept = _latest(files, None).values()  # a key's older records are superseded
    merged = b"".join(encode(r.meta, bytes(r.data)) for r in kept)
    write_atomic(os.path.join(shards, f"merged-{uuid.uuid4().hex[:12]}{SEALED}"), merged)
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(shards, n))
    return len(names)


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
