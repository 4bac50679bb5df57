"""The local executor: the leading stateless steps in `workers` processes, in order; the rest in the driver.

Batches go to a process pool through a bounded window (at most 4 per worker in flight), so memory does
not grow with the input however fast it is read. Workers call each step's `setup` on their first batch,
inside the task: a failure there comes back to the driver as that task's error. A worker that dies
(killed, out of memory, a crash in a C extension) breaks the pool, which the driver reports as one line:
it never waits forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..core.errors import UserError
from ..core.inputs import Split, read_splits
from ..core.report import Tally
from ..core.step import Item, Step, batch_size, batches, counted, run_batch, split_pipeline

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


def ordered_window(pool: ProcessPoolExecutor, inputs: Iterator[list[Item]],
                   window: int) -> Iterator[tuple[list[Item], dict]]:
    """Results of `_work` over `inputs`, in order, with at most `window` batches in flight. When reading the
    input fails, the batches already sent are finished and yielded first, then the error is raised."""
    pending: deque = deque()
    try:
        for batch in inputs:
            pending.append(pool.submit(_work, batch))
            if len(pending) >= window:
                yield _result(pending.popleft())
    except Exception:
        while pending:
            yield _result(pending.popleft())
        raise
    while pending:
        yield _result(pending.popleft())


def _result(future: Any) -> tuple[list[Item], dict]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise UserError("a worker process died (killed, out of memory or crashed); re-run with fewer "
                        "--workers or look at the system log") from None


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
        with ProcessPoolExecutor(self.workers, initializer=_init, initargs=(head,)) as pool:
            try:
                for items, stats in ordered_window(pool, stream, self.workers * 4):
                    tally.add_stats(stats)
                    yield from items
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def run(self, splits: list[Split], steps: list[Step], tally: Tally) -> Iterator[Item]:
        """Every item that comes out of the pipeline (rejected ones included), in input order."""
        head, tail = split_pipeline(steps)
        stream = self._head(splits, head, tally)
        yield from run_tail(stream, tail, tally)


def run_tail(stream: Iterator[Item], tail: list[Step], tally: Tally) -> Iterator[Item]:
    """The stateful steps, in the driver, in order; their stats are tallied when the stream ends."""
    for step in tail:
        step.setup()
        stream = counted(step.run(counted(stream, step, "_in")), step, "_out")
    for item in stream:
        tally.add_item(item.rejected, item.reason)
        yield item
    tally.add_stats({step.name: step.take_stats() for step in tail})
