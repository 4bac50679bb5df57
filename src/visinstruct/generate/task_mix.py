"""`--task-mix`: one task per image, as llava-instruct-zh-600k was made.

`dialogue=247431,complex_reasoning=194646,captioning=199791` (whole numbers) asks for exactly that many images per
task: the scenes are dealt out by a permutation seeded with `--seed`, so the same input and seed give the same
assignment on every run (resume included); images beyond the total get no task. `dialogue=0.4,captioning=0.6`
(weights with a decimal point) gives each image one task drawn by a hash of its id and the seed: stable even when
scenes are added, with counts that follow the weights only on average.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ..core.errors import UserError


@dataclass(frozen=True)
class TaskMix:
    """Task names with their counts (`exact`) or weights."""

    names: tuple[str, ...]
    values: tuple[float, ...]
    exact: bool

    @property
    def total(self) -> int:
        """Images asked for, when the values are counts."""
        return int(sum(self.values))


def _value(name: str, text: str) -> tuple[float, bool]:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: the value must be a count or a weight") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}={text!r}: the value must be a finite number ≥ 0")
    exact = text.strip().lstrip("+").isdigit()
    return number, exact


def parse_task_mix(text: str) -> TaskMix:
    """`name=value,...`: all whole numbers (counts) or all weights with a decimal point; ValueError otherwise."""
    names, values, kinds = [], [], set()
    for part in (p.strip() for p in text.split(",")):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{part!r}: expected task=count or task=weight")
        if name in names:
            raise ValueError(f"task {name!r} is given twice")
        number, exact = _value(name, raw)
        names.append(name)
        values.append(number)
        kinds.add(exact)
    if len(kinds) > 1:
        raise ValueError("give all counts (whole numbers) or all weights (with a decimal point), not both")
    if sum(values) <= 0:
        raise ValueError("the counts or weights must not all be zero")
    return TaskMix(tuple(names), tuple(values), kinds == {True})


def _unit_interval(seed: int, image_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _by_weight(image_ids: list[str], mix: TaskMix, seed: int) -> list[str | None]:
    import numpy as np  # here, not at module level: the CLI imports this module at start-up

    edges = np.cumsum(mix.values) / sum(mix.values)
    picks = np.searchsorted(edges, [_unit_interval(seed, i) for i in image_ids], side="right")
    return [mix.names[min(int(p), len(mix.names) - 1)] for p in picks]


def _by_count(image_ids: list[str], mix: TaskMix, seed: int, where: str) -> list[str | None]:
    import numpy as np

    if mix.total > len(image_ids):
        raise UserError(f"--task-mix asks for {mix.total:,} images but {where} has {len(image_ids):,} scenes; "
                        "lower the counts or give weights (e.g. dialogue=0.4,captioning=0.6)")
    order = np.random.default_rng(seed).permutation(len(image_ids))
    chosen: list[str | None] = [None] * len(image_ids)
    start = 0
    for name, count in zip(mix.names, mix.values, strict=True):
        for index in order[start:start + int(count)]:
            chosen[int(index)] = name
        start += int(count)
    return chosen


def assign_tasks(image_ids: list[str], mix: TaskMix, seed: int, where: str = "the input") -> list[str | None]:
    """The task of each scene (None: the scene gets no task), in scene order."""
    if mix.exact:
        return _by_count(image_ids, mix, seed, where)
    return _by_weight(image_ids, mix, seed)
