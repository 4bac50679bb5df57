"""The Ray executor: the same pipeline on Ray Data, locally or on a cluster, with the local executor's output.

Design: the input splits are a small dataset of descriptors; a `flat_map` reads each split in a Ray worker
(a distributed read) and emits one row per item, tagged with its split number and its position in the
split, plus a marker row at the end of each split that carries the split's item count. The leading
stateless steps then run in a `map_batches` over an actor pool (`workers` actors, each calls every step's
`setup` once, on its first batch, as the local executor's processes do), with `preserve_order` set, so the
rows come back to the driver in input order. The driver, reading the stream batch by batch (the object
store bounds what is in flight), turns (split, position) into the global index as it counts the markers,
adds each batch's step stats to the tally, and feeds the items to the stateful steps (the duplicate
tables), which run in the driver on the ordered stream, exactly as with the local executor.

Steps see the item's position within its split as `item.index` (no step uses it except to copy it to the
items a flat-map makes); the driver sets the global index before anything else sees the item.

A `UserError` in a worker (a bad line while reading, a bad record in a step, a failing `setup`) does not
go through Ray's error machinery: the worker sends it as a row at the place where it happened, and the
driver raises it there as the same one-line `UserError`, after the items before it (what Ray does with
worker exceptions is not ordered, and it logs them). Other exceptions propagate through Ray; a
`UserError` that still arrives wrapped in Ray's exceptions is unwrapped.

`address` joins a running cluster (`ray.init(address=...)`); without one a small local Ray is started
(no dashboard, a small object store, quiet). A Ray the caller already started is used as it is and never
shut down here; a local Ray started here is left running for the next stage and stops with the process.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ..core.errors import UserError
from ..core.inputs import Split
from ..core.report import Tally
from ..core.step import BATCH, Item, Step, run_batch, split_pipeline
from .local import run_tail

OBJECT_STORE_BYTES = 200 << 20  # a local Ray's object store: the driver streams, so little is needed
READ_ROWS = 4096                # rows per block that a split's reader hands on

# A row is one pickled tuple in the "row" column: (ITEM, split, Item) | (END, split, count) |
# (ERROR, split, message) | (STATS, -1, {step: Counter}).
ITEM, END, ERROR, STATS = 0, 1, 2, 3


def _row(*fields: Any) -> bytes:
    return pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)


def _read(batch: dict[str, Any]) -> Iterator[dict[str, list[bytes]]]:
    """Each split's items as rows (in blocks of READ_ROWS), then its END marker, or an ERROR where reading failed."""
    for raw in batch["split"]:
        yield from _read_split(*pickle.loads(raw))


def _read_split(number: int, split: Split) -> Iterator[dict[str, list[bytes]]]:
    out: list[bytes] = []
    count = 0
    try:
        for item in split.read():
            item.index = count
            count += 1
            out.append(_row(ITEM, number, item))
            if len(out) == READ_ROWS:
                yield {"row": out}
                out = []
        out.append(_row(END, number, count))
    except UserError as exc:
        out.append(_row(ERROR, number, str(exc)))
    yield {"row": out}


class _Head:
    """The leading stateless steps in one Ray actor: `setup` once, then each batch split by split."""

    def __init__(self, steps: bytes) -> None:
        self.steps: list[Step] = pickle.loads(steps)
        self.ready = False

    def _run(self, items: list[Item], split: int, out: list[bytes], stats: dict[str, Counter]) -> None:
        if not self.ready:
            for step in self.steps:
                step.setup()
            self.ready = True
        done, found = run_batch(self.steps, items)
        out += [_row(ITEM, split, item) for item in done]
        for name, counts in found.items():
            stats.setdefault(name, Counter()).update(counts)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        out: list[bytes] = []
        stats: dict[str, Counter] = {}
        items: list[Item] = []
        split = -1
        try:
            for raw in batch["row"]:
                kind, number, payload = pickle.loads(raw)
                if kind == ITEM:
                    if number != split and items:  # flat-maps keep no split tag: one split per run
                        self._run(items, split, out, stats)
                        items = []
                    split = number
                    items.append(payload)
                    continue
                if items:
                    self._run(items, split, out, stats)
                    items = []
                out.append(raw)
                if kind == ERROR:
                    break
            else:
                if items:
                    self._run(items, split, out, stats)
        except UserError as exc:
            out.append(_row(ERROR, split, str(exc)))
        out.append(_row(STATS, -1, stats))
        return {"row": out}


def user_error(exc: BaseException) -> UserError | None:
    """The UserError inside Ray's exception wrappers (RayTaskError, UserCodeException, ...), if any."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError) and getattr(current, "cause", None) is None:  # not a dual-typed wrapper
            return UserError(str(current))
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


def _quiet_ray_data() -> None:
    """Ray Data's console handler logs every dataset's start and stats at INFO: keep warnings only."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler" and handler.level < logging.WARNING:
            handler.setLevel(logging.WARNING)


class RayExecutor:
    """Runs a pipeline on Ray Data (a cluster at `address`, else a local Ray with `max(2, workers)` CPUs)."""

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        self.workers = max(1, workers)
        self.address = address

    def _start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     logging_level=logging.WARNING)
            return
        ray.init(num_cpus=max(2, self.workers), object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, ignore_reinit_error=True,
                 _system_config={"metrics_report_interval_ms": 60_000})

    def _dataset(self, splits: list[Split], head: list[Step]) -> Any:
        import ray.data
        from ray.data import ActorPoolStrategy

        self._start()
        rows = [{"split": pickle.dumps((n, split), protocol=pickle.HIGHEST_PROTOCOL)} for n, split in enumerate(splits)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        context = ds.context  # this dataset's own copy: the caller's DataContext is left alone
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        _quiet_ray_data()
        # reading takes no CPU slot, so it never waits for the head's actors to give theirs back
        ds = ds.map_batches(_read, batch_size=1, num_cpus=0, batch_format="numpy")
        if head:
            # a local Ray's actors are not restarted (Ray would also log that their arguments may be lost)
            restarts = {} if self.address else {"max_restarts": 0}
            ds = ds.map_batches(_Head, fn_constructor_args=(pickle.dumps(head),), batch_size=BATCH,
                                compute=ActorPoolStrategy(size=self.workers), num_cpus=1, batch_format="numpy",
                                **restarts)
        return ds

    def _head(self, splits: list[Split], head: list[Step], tally: Tally) -> Iterator[Item]:
        if not splits:
            return
        ds = self._dataset(splits, head)
        bases = {0: 0}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                for raw in batch["row"]:
                    kind, number, payload = pickle.loads(raw)
                    if kind == ITEM:
                        payload.index += bases[number]
                        yield payload
                    elif kind == END:
                        bases[number + 1] = bases[number] + payload
                    elif kind == STATS:
                        tally.add_stats(payload)
                    else:
                        raise UserError(payload)
        except UserError:
            raise
        except Exception as exc:
            found = user_error(exc)
            if found is None:
                raise
            raise found from None

    def run(self, splits: list[Split], steps: list[Step], tally: Tally) -> Iterator[Item]:
        """Every item that comes out of the pipeline (rejected ones included), in input order."""
        head, tail = split_pipeline(steps)
        yield from run_tail(self._head(splits, head, tally), tail, tally)

