"""LLaVA-NeXT's `sampling_strategy` and the `count`/`weight` targets, resolved to row selections.

As in LLaVA-NeXT's loader (llava/train/train.py): `all`; `first:N` the first N rows; `end:N` the last N;
`random:N` N rows drawn without replacement (LLaVA-NeXT shuffles the list and keeps the head: the same kind
of draw). The number may be a percentage of the file's rows, `first:10%`, rounded up (ceil(p × rows / 100)).
N larger than the file means every row. Unlike LLaVA-NeXT: drawn rows stay in file order (its trainer
shuffles the whole mixture anyway), the draw is seeded, `end:0` selects nothing (a Python `[-0:]` slice
there selects everything), and an unknown word or a bare `10%` is an error instead of silently `all`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .rows import Rows

KINDS = ("all", "first", "end", "random")
FORMS = "all, first:N, end:N, random:N, or first:P% / end:P% / random:P%"
_NUMBER = re.compile(r"(\d+)|(\d+(?:\.\d+)?)%")


@dataclass(frozen=True)
class Strategy:
    """One parsed `sampling_strategy`."""

    kind: str
    number: int | None = None        # rows
    percent: Fraction | None = None  # or a percentage of the file's rows

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        amount = f"{self.percent}%" if self.percent is not None else str(self.number)
        return f"{self.kind}:{amount}"

    @property
    def needs_count(self) -> bool:
        """Whether the file's row count must be known before choosing (`all` and `first:N` stream)."""
        return self.kind in ("end", "random") or self.percent is not None

    def size(self, rows: int) -> int:
        """How many rows this strategy takes from a file of `rows` rows."""
        if self.kind == "all":
            return rows
        wanted = math.ceil(self.percent * rows / 100) if self.percent is not None else self.number
        return min(wanted, rows)


def parse_strategy(text: str) -> Strategy:
    """A Strategy from its text; ValueError with the accepted forms otherwise."""
    value = text.strip()
    if value == "all":
        return Strategy("all")
    kind, colon, amount = value.partition(":")
    match = _NUMBER.fullmatch(amount.strip()) if colon else None
    if kind.strip() not in KINDS[1:] or match is None:
        hint = " (LLaVA-NeXT would take every row)" if not colon else ""
        raise ValueError(f"sampling_strategy {text!r} is not one of {FORMS}{hint}")
    if match.group(1) is not None:
        return Strategy(kind.strip(), number=int(match.group(1)))
    return Strategy(kind.strip(), percent=Fraction(match.group(2)))


def source_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator of one source: from the seed and the source's name, so that adding, removing or
    reordering other sources does not change this one's draw."""
    salt = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([seed & (2**64 - 1), salt]))


def base_rows(strategy: Strategy, rows: int | None, rng: np.random.Generator) -> Rows:
    """The rows the strategy selects; `rows` (the file's count) may be None only when not `needs_count`."""
    if strategy.kind == "all":
        return Rows.span(0, rows)
    if rows is None:  # first:N without a count: the reader stops at N or at the end of the file
        return Rows.span(0, strategy.number)
    size = strategy.size(rows)
    if strategy.kind == "first":
        return Rows.span(0, size)
    if strategy.kind == "end":
        return Rows.span(rows - size, rows)
    return Rows.from_indices(np.sort(rng.choice(rows, size=size, replace=False)))


def target_passes(selected: Rows, target: int, rng: np.random.Generator) -> list[Rows]:
    """Exactly `target` rows out of `selected`: a seeded subset when fewer, else every row once per whole
    repeat and a seeded subset for the remainder (each pass in file order). Raises ValueError on nothing."""
    have = len(selected)
    if have == 0:
        if target == 0:
            return []
        raise ValueError(f"count {target} asked of a selection with no rows")
    repeats, rest = divmod(target, have)
    passes = [selected] * repeats
    if rest:
        passes.append(selected.pick(np.sort(rng.choice(have, size=rest, replace=False))))
    return passes


def share_out(total: int, weights: list[float]) -> list[int]:
    """Split `total` rows in proportion to `weights`: floors, then the leftover rows one each to the largest
    remainders (ties: the earlier source), so that the parts add up to `total` exactly."""
    whole = sum(Fraction(w) for w in weights)
    exact = [Fraction(w) / whole * total for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts
