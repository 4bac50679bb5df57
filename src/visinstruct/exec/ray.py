"""The Ray executor: the same pipeline on Ray Data, locally or on a cluster, with the local executor's output.

Design: stateless steps on Ray Data, stateful steps (the duplicate tables) in the driver, on the ordered
stream. The input splits become a small dataset of descriptors, one block per split. A `map_batches` over
an actor pool of `workers` actors reads each split where it runs (a distributed read) and runs the
leading stateless steps over it in batches (512 items, or what the steps ask for); each actor calls
every step's `setup` once, on its first batch, as the local executor's processes do. Reading and the
steps share one stage on purpose: it is what Ray's operator fusion would make of a read stage followed
by the steps' stage, and it keeps a separate read stage from waiting for CPUs that the actors hold (a local Ray has only
`max(2, workers)` of them). `preserve_order` is set on the dataset's own context, so the rows come back
in input order; the driver reads them batch by batch (the object store bounds what is in flight), adds
each batch's step stats to the tally, and passes the items to `run_tail`, which runs the stateful steps
in the driver exactly as the local executor does.

Each row of the stream is one pickled tuple: an item with its split number, a split's end with the
number of items read from it, a batch's step stats, or an error. Workers number items within their split
(`item.index` is the position in the split while the steps run; no stateless step uses it except to copy
it onto the items a flat-map makes); the driver turns it into the global index as it counts the split
ends, before anything downstream sees the item.

A `UserError` in a worker (a bad line while reading, a bad record in a step, a failing `setup`) does not
go through Ray's error machinery: the worker sends it as a row where it happened, and the driver raises
it there as the same one-line `UserError`, after the items before it, as the local executor would (Ray
reports worker exceptions out of order and logs them with tracebacks). Other exceptions propagate
through Ray; a `UserError` that still arrives inside Ray's exception wrappers is unwrapped.

`address` joins a running cluster (`ray.init(address=...)`); the inputs, and the image folder that
parquet → LLaVA workers write, must then be on a filesystem every node sees. Without an address a small
local Ray is started (no dashboard, a 200 MB object store, quiet). A Ray the caller already started is
used as it is and never shut down here; a Ray started here is shut down when the run ends.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.errors import UserError
from ..core.inputs import Split
from ..core.report import Tally
from ..core.step import Item, Step, batch_size, run_batch, split_pipeline
from .local import run_tail

BLOCK_BYTES = 8 << 20
OBJECT_STORE_BYTES = 200 << 20  # a local Ray's object store: the driver streams, so little is needed

# the kinds of row: (ITEM, split, Item) | (END, split, items read) | (STATS, split, {step: Counter}) |
# (ERROR, split, message)
ITEM, END, STATS, ERROR = range(4)


def _row(*fields: Any) -> bytes:
    return pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)


class _Worker:
    """One actor: reads the splits it is given and runs the leading stateless steps over their items."""

    def __init__(self, steps: bytes) -> None:
        self.steps: list[Step] = pickle.loads(steps)
        self.batch = batch_size(self.steps)
        self.ready = False

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, list[bytes]]]:
        for raw in batch["split"]:
            yield from self._split(*pickle.loads(raw))

    def _split(self, number: int, split: Split) -> Iterator[dict[str, list[bytes]]]:
        """A split's items in batches through the steps, then its END; or, where reading or a step raises
        a UserError, what came before it and the ERROR."""
        reader, read, error = split.read(), 0, None
        while error is None:
            items: list[Item] = []
            try:
                for item in reader:
                    item.index, read = read, read + 1
                    items.append(item)
                    if len(items) == self.batch:
                        break
            except UserError as exc:
                error = str(exc)
            try:
                rows = self._steps(number, items) if items else []
            except UserError as exc:  # the batch is lost, as on the local executor
                error, rows = str(exc), []
            if rows:
                yield {"row": rows}
            if error is None and len(items) < self.batch:
                yield {"row": [_row(END, number, read)]}
                return
        yield {"row": [_row(ERROR, number, error)]}

    def _steps(self, number: int, items: list[Item]) -> list[bytes]:
        if not self.ready:
            for step in self.steps:
                step.setup()
            self.ready = True
        done, stats = run_batch(self.steps, items)
        return [*(_row(ITEM, number, item) for item in done), _row(STATS, number, stats)]


def user_error(exc: BaseException) -> UserError | None:
    """The UserError inside Ray's exception wrappers (RayTaskError, UserCodeException, ...), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # a RayTaskError made "an instance of its cause" is a UserError too, but its text is a traceback
        if isinstance(current, UserError) and getattr(current, "cause", None) is None:
            return UserError(*current.args)
        stack += [current.__context__, current.__cause__, getattr(current, "cause", None)]
    return None


def start_ray(workers: int, address: str | None, actor_logs: bool = True) -> bool:
    """Join the cluster at `address`, or start a light local Ray; True when this call started Ray.

    A Ray the caller already started is used as it is. "local" starts a new Ray of its own, never one that
    another process left running on this machine.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": actor_logs, "logging_level": logging.ERROR, "ignore_reinit_error": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=max(2, workers), object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False, **quiet)
    return True


def _quiet() -> None:
    """Ray Data logs each dataset's plan, stats and advice on stderr: keep errors only there (the session's
    ray-data.log keeps everything), and drop a warning about the actor pool's size that is no advice here."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler" and handler.level < logging.ERROR:
            handler.setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)


class RayExecutor:
    """Runs a pipeline on Ray Data (a cluster at `address`, else a local Ray with `max(2, workers)` CPUs)."""

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        self.workers = max(1, workers)
        self.address = address

    def _dataset(self, splits: list[Split], head: list[Step]) -> Any:
        import ray.data
        from ray.data import ActorPoolStrategy

        _quiet()
        rows = [{"split": _row(n, split)} for n, split in enumerate(splits)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        context = ds.context  # this dataset's own copy of the DataContext: the caller's is left alone
        context.execution_options.preserve_order = True
        context.target_max_block_size = BLOCK_BYTES  # small blocks: the ordered stream flows, less spilling
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        # Actors of a local Ray are not restarted: a restart would only repeat a crash, and with restarts
        # on Ray logs an error line per actor (its arguments live in the object store). A cluster keeps
        # Ray Data's default (restart, retry). `max_restarts` has no named parameter in Ray 2.60 yet.
        restarts = {} if self.address else {"max_restarts": 0}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            return ds.map_batches(_Worker, fn_constructor_args=(pickle.dumps(head),), batch_size=1,
                                  batch_format="numpy", compute=ActorPoolStrategy(size=self.workers), num_cpus=1,
                                  **restarts)

    def _head(self, splits: list[Split], head: list[Step], tally: Tally) -> Iterator[Item]:
        if not splits:
            return
        ds = self._dataset(splits, head)
        starts = {0: 0}  # split number -> global index of its first item, known once the split before ends
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for raw in batch["row"]:
                    kind, number, payload = pickle.loads(raw)
                    if kind == ITEM:
                        payload.index += starts[number]
                        yield payload
                    elif kind == STATS:
                        tally.add_stats(payload)
                    elif kind == END:
                        starts[number + 1] = starts[number] + payload
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
        import ray

        head, tail = split_pipeline(steps)
        started = start_ray(self.workers, self.address, actor_logs=False)
        try:
            yield from run_tail(self._head(splits, head, tally), tail, tally)
        finally:
            if started:
                ray.shutdown()


def _partition_runs(batch: dict[str, Any]) -> dict[str, Any]:
    """One hash partition: the members of every run of two or more equal (column, key), with both."""
    import numpy as np

    column, keys, index = batch["column"], batch["key"], batch["index"]
    order = np.lexsort((index, keys, column))
    column, keys, index = column[order], keys[order], index[order]
    same = (keys[1:] == keys[:-1]) & (column[1:] == column[:-1])
    in_run = np.zeros(keys.size, dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    return {"column": column[in_run], "key": keys[in_run], "member": index[in_run]}


def equal_key_runs(columns: Iterable[Any], parts: int) -> list[tuple[Any, Any]]:
    """For each column of keys, the runs of equal keys, found with one Ray Data shuffle for all columns:
    rows `(column, key, index)` go to the object store a column at a time (the driver holds one), are
    grouped by `key % parts` (a hash partitioning that moves them between nodes), each partition is sorted
    where it lands, and only the members of runs of two or more come back. Per column: (members, run
    numbers) ordered by key, then index — what a local sort gives (filters/minhash.py `band_runs`).
    Needs Ray started.
    """
    import numpy as np
    import pyarrow as pa
    import ray
    import ray.data

    _quiet()
    refs = []
    for number, keys in enumerate(columns):
        refs.append(ray.put(pa.table({
            "column": np.full(keys.size, number, dtype=np.int32), "key": keys,
            "index": np.arange(keys.size, dtype=np.int64), "part": keys % np.uint64(parts)})))
    runs = ray.data.from_arrow_refs(refs).groupby("part").map_groups(_partition_runs, batch_format="numpy")
    found: dict[int, list[tuple[Any, Any]]] = {n: [] for n in range(len(refs))}
    for batch in runs.iter_batches(batch_size=None, batch_format="numpy"):
        for number in np.unique(batch["column"]):
            mask = batch["column"] == number
            found[int(number)].append((batch["key"][mask], batch["member"][mask]))
    return [_ordered_runs(found[n]) for n in range(len(refs))]


def _ordered_runs(pieces: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    import numpy as np

    key = np.concatenate([np.empty(0, dtype=np.uint64), *(k for k, _ in pieces)])
    member = np.concatenate([np.empty(0, dtype=np.int64), *(m for _, m in pieces)])
    order = np.lexsort((member, key))
    key, member = key[order], member[order]
    starts = np.ones(key.size, dtype=bool)
    starts[1:] = key[1:] != key[:-1]
    return member.astype(np.int64), np.cumsum(starts) - 1
