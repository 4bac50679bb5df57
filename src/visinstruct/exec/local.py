"""The local executor: the leading stateless steps in `workers` processes, in order; the rest in the driver.

Batches go to a process pool through a bounded window (at most 4 per worker in flight), so memory does
not grow with the input however fast it is read. Workers call each step's `setup` on their first batch,
inside the task: a failure there comes back to the driver as that task's error, it never hangs the pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from multiprocessing import Pool
from typing import Any

from ..core.inputs import Split, read_splits
from ..core.report import Tally
from ..core.step import Item, Step, batch_size, batches, run_batch, split_pipeline

_STEPS: list[Step] = []
_READY = False


def _init(steps: list[Step]) -> None:
    global _STEPS, _READY
    _STEPS, _READY = steps, False


def _work(items: list[Item]) -> tuple[list[Item], dict[str, Any]]:
    global _READY
    if not _READY:
        for step in _STEPS:
            step.setup()
        _READY = True
    return run_batch(_STEPS, items)


def ordered_window(pool: Any, inputs: Iterator[list[Item]], window: int) -> Iterator[tuple[list[Item], dict]]:
    """Results of `_work` over `inputs`, in order, with at most `window` batches in flight. When reading the
    input fails, the batches already sent are finished and yielded first, then the error is raised."""
    pending: deque = deque()
    try:
        for batch in inputs:
            pending.append(pool.apply_async(_work, (batch,)))
            if len(pending) >= window:
                yield pending.popleft().get()
    except Exception:
        while pending:
            yield pending.popleft().get()
        raise
    while pending:
        yield pending.popleft().get()


class LocalExecutor:
    """Runs a pipeline on this machine."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    def _head(self, splits: list[Split], head: list[Step], tally: Tally) -> Iterator[Item]:
        stream = batches(read_splits(splits), batch_size(head))
        if self.workers == 1 or not head:
            _init(head)
            for batch in stream:
                items, stats = _work(batch)
                tally.add_stats(stats)
                yield from items
            return
        with Pool(self.workers, initializer=_init, initargs=(head,)) as pool:
            for items, stats in ordered_window(pool, stream, self.workers * 4):
                tally.add_stats(stats)
                yield from items

    def run(self, splits: list[Split], steps: list[Step], tally: Tally) -> Iterator[Item]:
        """Every item that comes out of the pipeline (rejected ones included), in input order."""
        head, tail = split_pipeline(steps)
        stream = self._head(splits, head, tally)
        yield from run_tail(stream, tail, tally)


def run_tail(stream: Iterator[Item], tail: list[Step], tally: Tally) -> Iterator[Item]:
    """The stateful steps, in the driver, in order; their stats are tallied when the stream ends."""
    for step in tail:
        step.setup()
        stream = step.run(stream)
    for item in stream:
        tally.add_item(item.rejected, item.reason)
        yield item
    tally.add_stats({step.name: step.take_stats() for step in tail})
