"""A compact set of strings seen so far, for duplicate checks over millions of ids (8 bytes per id, not ~90).

Each string is kept as a 64-bit BLAKE2b digest: in a small Python set until there are MERGE of them, then in
one sorted numpy uint64 array (merged and searched in C); about 7 µs per id. Two different ids share a digest
with probability about n² / 2^65 (1e-7 for 2 million ids): the cost of that is a false "duplicate id" error,
never a record dropped in silence.
"""

from __future__ import annotations

import hashlib
from typing import Any

MERGE = 1 << 17


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class SeenIds:
    """`add(id)` returns False when the id was added before."""

    def __init__(self) -> None:
        import numpy  # only where ids are checked: the CLI starts without it

        self.np: Any = numpy
        self.sorted = numpy.zeros(0, dtype=numpy.uint64)
        self.recent: set[int] = set()

    def add(self, text: str) -> bool:
        """Note an id; False if it was already noted."""
        value = _digest(text)
        if value in self.recent or self._in_sorted(value):
            return False
        self.recent.add(value)
        if len(self.recent) >= MERGE:
            np = self.np
            self.sorted = np.sort(np.concatenate([self.sorted, np.fromiter(self.recent, np.uint64, len(self.recent))]))
            self.recent.clear()
        return True

    def _in_sorted(self, value: int) -> bool:
        if not len(self.sorted):
            return False
        at = int(self.sorted.searchsorted(self.np.uint64(value)))
        return at < len(self.sorted) and int(self.sorted[at]) == value

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)
