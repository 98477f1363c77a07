"""A command's output copied to its log by the runner, capped: the head is written as it comes,
the tail kept in memory, and at the end a line saying how many bytes were cut, then the tail."""

from __future__ import annotations

import os
import threading
from collections import deque

CHUNK = 65536


class CappedCopy:
    """Copies a pipe's read end to a log descriptor in a thread, keeping at most `limit` bytes
    (half head, half tail; 0: no limit)."""

    def __init__(self, source: int, log: int, limit: int) -> None:
        self.source, self.log, self.limit = source, log, limit
        self.cut = 0
        self._thread = threading.Thread(target=self._copy, daemon=True, name="pyexp-log-copy")
        self._thread.start()

    def _copy(self) -> None:
        head = self.limit - self.limit // 2 if self.limit else -1
        tail: deque[bytes] = deque()
        kept = 0
        try:
            while data := os.read(self.source, CHUNK):
                if head != 0:
                    now = data if head < 0 else data[:head]
                    head = head if head < 0 else head - len(now)
                    self._write(now)
                    data = data[len(now) :]
                if data:
                    tail.append(data)
                    kept += len(data)
                    while len(tail) > 1 and kept - len(tail[0]) >= self.limit // 2:
                        kept -= len(tail.popleft())
        except OSError:
            pass
        finally:
            os.close(self.source)
        self._end(b"".join(tail))

    def _end(self, tail: bytes) -> None:
        keep = tail[len(tail) - self.limit // 2 :] if self.limit else tail
        self.cut = len(tail) - len(keep)
        if self.cut:
            line = f"\n[pyexp-run: {self.cut} bytes of output cut here (max_log_bytes)]\n"
            self._write(line.encode())
        self._write(keep)

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.log, data) :]
        except OSError:
            pass

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the copy to end (the command and every process holding its output ended)."""
        self._thread.join(timeout)


def start_copy(log: int, limit: int) -> tuple[int, CappedCopy]:
    """A pipe whose write end a command gets as stdout/stderr, and its copier to log."""
    r, w = os.pipe2(os.O_CLOEXEC)
    return w, CappedCopy(r, log, limit)
