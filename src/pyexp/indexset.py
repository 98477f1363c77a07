"""IndexSet: a sorted set of indices held as disjoint ranges, so 10^12 of them cost nothing."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import islice


class IndexSet:
    """Sorted, disjoint half-open ranges [start, stop); immutable."""

    __slots__ = ("_ranges", "_starts", "_len")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for start, stop in sorted((a, b) for a, b in ranges if b > a):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        self._ranges = tuple(merged)
        self._starts = [a for a, _ in merged]
        self._len = sum(b - a for a, b in merged)

    @classmethod
    def of(cls, indices: Iterable[int]) -> IndexSet:
        """The set of some indices (any order, repeats allowed)."""
        ranges: list[tuple[int, int]] = []
        for i in sorted(set(indices)):
            if ranges and ranges[-1][1] == i:
                ranges[-1] = (ranges[-1][0], i + 1)
            else:
                ranges.append((i, i + 1))
        return cls(ranges)

    @classmethod
    def span(cls, start: int, stop: int) -> IndexSet:
        """Every index from start up to (not including) stop."""
        return cls([(start, stop)])

    @classmethod
    def parse(cls, text: str) -> IndexSet:
        """'0-9,12' -> {0..9, 12}; ValueError naming the part that is not N or N-M."""
        ranges = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise ValueError(f"{part!r} is not N or N-M") from None
            if first < 0 or last < first:
                raise ValueError(f"{part!r} is not an ascending range of indices")
            ranges.append((first, last + 1))
        return cls(ranges)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The half-open ranges, ascending."""
        return self._ranges

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        for start, stop in self._ranges:
            yield from range(start, stop)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        k = bisect_right(self._starts, index) - 1
        return k >= 0 and index < self._ranges[k][1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IndexSet) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __or__(self, other: IndexSet) -> IndexSet:
        return IndexSet(self._ranges + other._ranges)

    def __sub__(self, other: IndexSet) -> IndexSet:
        out: list[tuple[int, int]] = []
        holes = other._ranges
        k = 0
        for start, stop in self._ranges:
            while k < len(holes) and holes[k][1] <= start:
                k += 1
            j = k
            while start < stop and j < len(holes) and holes[j][0] < stop:
                if holes[j][0] > start:
                    out.append((start, holes[j][0]))
                start = max(start, holes[j][1])
                j += 1
            if start < stop:
                out.append((start, stop))
        return IndexSet(out)

    def take(self, offset: int, count: int) -> IndexSet:
        """The count indices from position offset on (positions in ascending order)."""
        out: list[tuple[int, int]] = []
        for start, stop in self._ranges:
            size = stop - start
            if offset >= size:
                offset -= size
                continue
            begin = start + offset
            end = min(stop, begin + count)
            out.append((begin, end))
            count -= end - begin
            offset = 0
            if count <= 0:
                break
        return IndexSet(out)

    def first(self, n: int) -> list[int]:
        """The n smallest indices."""
        return list(islice(iter(self), n))

    def text(self) -> str:
        """'0-9,12': the form parse() reads (and pyexp-run --indices)."""
        return ",".join(f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in self._ranges)

    def __repr__(self) -> str:
        shown = self.text()
        return f"IndexSet({shown[:60] + '...' if len(shown) > 60 else shown!r})"
