"""The step contract: every record stage is a list of steps over a stream of items.

A step has a name, counts its own stats, and says whether it is stateless (any worker may run it on any
batch: structure, spelling, a format conversion) or needs the whole stream in order (dedup, mixing). A
pipeline is a plain list of steps, built and checked in the driver (`check`: settings, optional
dependencies, files) before any worker starts; each worker calls `setup` once (dictionaries, models) and
then `process` per batch. Executors (local processes, Ray) run the leading stateless steps in parallel
and everything from the first stateful step on in the driver, in input order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

BATCH = 512


@dataclass(slots=True)
class Item:
    """One record on its way through a pipeline, with what the steps decided about it."""

    index: int                          # position in the input (steps may copy it, never rely on it: on Ray
                                        # it is the position within the split until the driver renumbers)
    record: Any                         # a LLaVA record, another format's row, or a unit of work
    where: str = ""                     # "file:line" / "file: record N", for one-line errors
    rejected: str | None = None         # the step that rejected it (later steps let it pass untouched)
    reason: str | None = None           # `code: details`
    note: dict[str, Any] | None = None  # what a rewriting step changed
    extra: dict[str, Any] | None = None  # scratch for later steps (e.g. minhash bands); never written

    @property
    def alive(self) -> bool:
        return self.rejected is None

    def reject(self, step: str, reason: str) -> None:
        self.rejected, self.reason = step, reason


class Step:
    """Base class of a pipeline step. Subclasses set `name` and override `process` (or `run`)."""

    name = "step"
    stateless = True
    batch_size = BATCH  # items per batch; heavy items (a parquet row group) want 1

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def check(self) -> None:
        """Validate settings and optional dependencies in the driver; raise UserError (one line)."""

    def setup(self) -> None:
        """Load heavy state once per worker, before the first batch."""

    def process(self, items: list[Item]) -> list[Item]:
        """One batch in, one batch out (flat-maps may change its length). Rejected items pass untouched."""
        return items

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        """The whole stream (stateful steps override this to keep state or to see everything first)."""
        for batch in batches(items):
            yield from self.process(batch)

    def take_stats(self) -> Counter[str]:
        """This step's stats since the last call (workers send them to the driver with each batch)."""
        found, self.stats = self.stats, Counter()
        return found


def batches(items: Iterable[Item], size: int = BATCH) -> Iterator[list[Item]]:
    """Consecutive lists of at most `size` items. When the input fails (a bad line), the items read before
    the failure are still yielded as a last batch, then the error is raised."""
    batch: list[Item] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    except Exception:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def batch_size(steps: list[Step]) -> int:
    """The batch size a group of steps runs with: the smallest any of them asks for."""
    return min((step.batch_size for step in steps), default=BATCH)


def split_pipeline(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """(the leading stateless steps, which may run anywhere; the rest, which runs in the driver)."""
    for i, step in enumerate(steps):
        if not step.stateless:
            return steps[:i], steps[i:]
    return steps, []


def check_pipeline(steps: list[Step]) -> None:
    """Every step's check, in the driver, before any worker starts."""
    for step in steps:
        step.check()


def live(items: list[Item]) -> int:
    """How many items no step has rejected."""
    return sum(1 for item in items if item.rejected is None)


def run_batch(steps: list[Step], items: list[Item]) -> tuple[list[Item], dict[str, Counter]]:
    """Run stateless steps over one batch; returns the items and each step's stats for this batch
    (with `_in` / `_out`: the live items it got and gave, which differ from each other in flat-maps)."""
    for step in steps:
        step.stats["_in"] += live(items)
        items = step.process(items)
        step.stats["_out"] += live(items)
    return items, {step.name: step.take_stats() for step in steps}


def counted(stream: Iterable[Item], step: Step, key: str) -> Iterator[Item]:
    """The stream, counting its live items into `step.stats[key]` (`_in` / `_out` of a stateful step)."""
    for item in stream:
        if item.rejected is None:
            step.stats[key] += 1
        yield item


@dataclass
class StepStats:
    """The driver's tally of one step: live items in and out, rejected by reason code, its own counters."""

    rejected: Counter = field(default_factory=Counter)
    own: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        own = Counter(self.own)
        found = {"in": own.pop("_in", 0), "out": own.pop("_out", 0), "rejected": sum(self.rejected.values())}
        if self.rejected:
            found["rejected_by_reason"] = dict(self.rejected.most_common())
        if own:
            found["counts"] = dict(own.most_common())
        return found
