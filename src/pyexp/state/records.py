"""Completion records: one fact per (canonical parameters, run), written atomically on success."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid

from pyexp.experiment import paramsHash
from pyexp.state.atomic import scan_names, write_atomic

SEGMENTS = "segments"
COMPACT_AT = 2000  # loose records before readers fold them into one segment file


def record_key(params: dict, run: int) -> str:
    """The record name of (params, run): independent of the index."""
    return f"{paramsHash(params)}-{run}"


class CompletionRecords:
    """The completion records of one experiment, in one folder on the shared filesystem.

    Each completion is a loose file `<hash>-<run>`; readers fold many loose files into
    `segments/seg-*` files (write segment, then delete what it holds), so asking "what is done"
    costs a few directory reads and file reads, not one stat per index.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._segments_seen: dict[str, frozenset[str]] = {}

    def mark_complete(self, params: dict, run: int, info: dict | None = None) -> None:
        """Record that (params, run) finished successfully."""
        body = {"params": params, "run": run, "time": time.time(), **(info or {})}
        write_atomic(os.path.join(self.folder, record_key(params, run)), json.dumps(body))

    def is_complete(self, params: dict, run: int, fresh: bool = False) -> bool:
        """Whether (params, run) has a record (a stat, then the segment folder if needed).

        fresh: open the folder first, so an NFS client revalidates it (close-to-open) instead of
        answering from a cached "no such file" for a record another node wrote meanwhile.
        """
        key = record_key(params, run)
        if fresh:
            try:
                os.close(os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY))
            except FileNotFoundError:
                return False
        if os.path.exists(os.path.join(self.folder, key)):
            return True
        return any(key in keys for keys in self._segments().values())

    def completed(self, compact: bool = True) -> set[str]:
        """Every completed record key; folds loose records into a segment when there are many."""
        loose = [n for n in scan_names(self.folder) if n != SEGMENTS]
        segments = self._segments()
        keys = set(loose).union(*segments.values())
        if compact and len(loose) >= COMPACT_AT:
            self._fold(loose, segments, keys)
        return keys

    def _segments(self) -> dict[str, frozenset[str]]:
        folder = os.path.join(self.folder, SEGMENTS)
        while True:
            names = scan_names(folder)
            vanished = False
            for name in names:
                if name not in self._segments_seen:
                    try:
                        with open(os.path.join(folder, name), encoding="utf-8") as f:
                            self._segments_seen[name] = frozenset(f.read().split())
                    except FileNotFoundError:
                        # Folded away by another reader meanwhile; the segment that holds its
                        # keys was written before this one was deleted, so list again.
                        vanished = True
            if not vanished:
                self._segments_seen = {n: self._segments_seen[n] for n in names}
                return dict(self._segments_seen)

    def _fold(self, loose: list[str], segments: dict[str, frozenset[str]], keys: set[str]) -> None:
        # Safe with concurrent folders and writers: a key is deleted only after a segment holds it.
        folder = os.path.join(self.folder, SEGMENTS)
        name = f"seg-{uuid.uuid4().hex}"
        write_atomic(os.path.join(folder, name), "\n".join(sorted(keys)) + "\n")
        self._segments_seen[name] = frozenset(keys)
        for n in loose:
            _unlink_quietly(os.path.join(self.folder, n))
        for n in segments:
            _unlink_quietly(os.path.join(folder, n))
            self._segments_seen.pop(n, None)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
