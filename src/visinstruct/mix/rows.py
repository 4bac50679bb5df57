"""Sets of row indices kept as runs `[start, stop)` in numpy arrays: what a sampling strategy selects, what a
lock file records (as text like `0-99,105,200-299`, ends inclusive) and what a reader walks in file order.

A selection of every row of a file of unknown length is one open run (stop = OPEN). Memory is 16 bytes per
run, never per row of a contiguous stretch.
"""

from __future__ import annotations

from array import array

import numpy as np

OPEN = np.iinfo(np.int64).max  # the stop of a run that goes to the end of the file


class Rows:
    """Sorted, disjoint runs of row indices."""

    def __init__(self, starts: np.ndarray, stops: np.ndarray) -> None:
        self.starts = np.asarray(starts, dtype=np.int64)
        self.stops = np.asarray(stops, dtype=np.int64)

    @classmethod
    def span(cls, start: int, stop: int | None) -> Rows:
        """Rows start, start + 1, … up to stop (exclusive), or to the end of the file when stop is None."""
        stop = OPEN if stop is None else stop
        if stop <= start:
            return cls.empty()
        return cls(np.array([start]), np.array([stop]))

    @classmethod
    def empty(cls) -> Rows:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_indices(cls, indices: np.ndarray) -> Rows:
        """Runs of a sorted array of distinct indices."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return cls.empty()
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        starts = indices[np.concatenate([[0], breaks])]
        stops = indices[np.concatenate([breaks - 1, [len(indices) - 1]])] + 1
        return cls(starts, stops)

    @property
    def is_open(self) -> bool:
        return bool(len(self.stops)) and int(self.stops[-1]) == OPEN

    def __len__(self) -> int:
        if self.is_open:
            raise ValueError("an open run has no length until the file is read")
        return int((self.stops - self.starts).sum())

    def pick(self, positions: np.ndarray) -> Rows:
        """The rows at these sorted positions (0 = the first selected row)."""
        lengths = self.stops - self.starts
        ends = np.cumsum(lengths)
        run = np.searchsorted(ends, positions, side="right")
        return Rows.from_indices(self.starts[run] + positions - (ends[run] - lengths[run]))

    def overlaps(self, start: int, stop: int) -> bool:
        """Whether any selected row lies in [start, stop)."""
        run = int(np.searchsorted(self.stops, start, side="right"))
        return run < len(self.starts) and int(self.starts[run]) < stop

    def to_text(self) -> str:
        """`0-99,105,200-299` (inclusive ends); an open run cannot be written."""
        if self.is_open:
            raise ValueError("an open run cannot be written")
        return ",".join(f"{a}" if b - a == 1 else f"{a}-{b - 1}"
                        for a, b in zip(self.starts.tolist(), self.stops.tolist(), strict=True))

    @classmethod
    def from_text(cls, text: str) -> Rows:
        """The inverse of `to_text`; raises ValueError on anything else (unsorted, overlapping, negative)."""
        starts, stops = array("q"), array("q")
        for part in filter(None, text.split(",")):
            first, _, last = part.partition("-")
            a, b = int(first), int(last or first) + 1
            if a < 0 or b <= a or (stops and a <= stops[-1]):
                raise ValueError(f"bad row range {part!r}")
            starts.append(a)
            stops.append(b)
        return cls(np.frombuffer(starts, np.int64), np.frombuffer(stops, np.int64))


class Cursor:
    """Walks a Rows in step with a reader that sees every row index in increasing order."""

    def __init__(self, rows: Rows) -> None:
        self.starts, self.stops = array("q", rows.starts.tobytes()), array("q", rows.stops.tobytes())
        self.run = 0

    def wants(self, row: int) -> bool:
        """Whether `row` is selected (rows must be asked in increasing order)."""
        while self.run < len(self.stops) and row >= self.stops[self.run]:
            self.run += 1
        return self.run < len(self.stops) and row >= self.starts[self.run]

    def done(self, row: int) -> bool:
        """True when no selected row is at or after `row`: the reader may stop."""
        return not self.stops or row >= self.stops[-1]


class RowsBuilder:
    """Collects increasing row indices into runs (for the lock: the rows that were written)."""

    def __init__(self) -> None:
        self.starts, self.stops = array("q"), array("q")

    def add(self, row: int) -> None:
        if self.stops and self.stops[-1] == row:
            self.stops[-1] = row + 1
        else:
            self.starts.append(row)
            self.stops.append(row + 1)

    @property
    def last(self) -> int:
        """The last row added, or -1."""
        return self.stops[-1] - 1 if self.stops else -1

    def build(self) -> Rows:
        return Rows(np.frombuffer(self.starts, np.int64).copy(), np.frombuffer(self.stops, np.int64).copy())
