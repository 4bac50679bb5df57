"""Constant-memory tallies for one streaming pass: a histogram whose bins widen as values grow, a counter with
a cap on distinct keys, and a reservoir sample."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

OTHER = "(other)"


class Histogram:
    """Counts of non-negative integers in BINS equal bins starting at 0. When a value falls past the last bin,
    neighbouring bins are merged pairwise and the width doubles, so the counts stay exact per bin and the
    memory stays BINS numbers whatever the range. Count, total, min and max are exact."""

    BINS = 40

    def __init__(self) -> None:
        self.width, self.limit, self.counts = 1, self.BINS, [0] * self.BINS
        self.n = self.total = 0
        self.low: int | None = None
        self.high = -1

    def add(self, value: int) -> None:
        """Count one value (negative values count as 0). Called for every turn: kept lean."""
        if value < 0:
            value = 0
        if value >= self.limit:
            self._widen(value)
        self.counts[value // self.width] += 1
        self.n += 1
        self.total += value
        if value > self.high:
            self.high = value
        if self.low is None or value < self.low:
            self.low = value

    def _widen(self, value: int) -> None:
        """Double the bin width until `value` falls in the last bin or before."""
        while value >= self.limit:
            merged = [a + b for a, b in zip(self.counts[0::2], self.counts[1::2], strict=True)]
            self.counts = merged + [0] * (self.BINS - len(merged))
            self.width *= 2
            self.limit = self.width * self.BINS

    def quantile(self, q: float) -> int | None:
        """The upper edge of the bin holding the q-quantile (exact to one bin width), capped at the maximum."""
        if not self.n:
            return None
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= q * self.n:
                return min((i + 1) * self.width - 1, self.high)
        return self.high

    def bins(self) -> list[tuple[int, int, int]]:
        """(start, end exclusive, count) for each bin up to the last one holding a value."""
        last = max((i for i, c in enumerate(self.counts) if c), default=-1)
        return [(i * self.width, (i + 1) * self.width, self.counts[i]) for i in range(last + 1)]

    def as_dict(self) -> dict[str, Any]:
        """Summary numbers plus the bins, for the JSON output and the plots."""
        mean = round(self.total / self.n, 2) if self.n else None
        return {"count": self.n, "total": self.total, "min": self.low, "max": self.high if self.n else None,
                "mean": mean,
                "p50": self.quantile(0.5), "p95": self.quantile(0.95), "bin_width": self.width,
                "bins": [[start, count] for start, _, count in self.bins()]}


class CappedCounter:
    """A Counter that keeps at most `cap` distinct keys; later new keys are counted under OTHER."""

    def __init__(self, cap: int = 1000) -> None:
        self.cap, self.counts = cap, Counter()

    def add(self, key: Any, n: int = 1) -> None:
        """Count `key` (as text)."""
        key = key if isinstance(key, str) else str(key)
        if key not in self.counts and len(self.counts) >= self.cap:
            key = OTHER
        self.counts[key] += n

    def most_common(self) -> list[tuple[str, int]]:
        """Keys by count, descending, ties by key."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def as_dict(self) -> dict[str, int]:
        return dict(self.most_common())


class Reservoir:
    """A uniform sample of at most `size` items from a stream of unknown length (Algorithm R), seeded."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seen, self.items = size, 0, []
        self.random = random.Random(seed)

    def offer(self, item: Any) -> None:
        """See one item; keep it with probability size / seen."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self.random.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item
