"""`visinstruct convert`: detect the formats, build the route's steps and sink, run them on an executor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UserError
from ..core.hf_folder import DEFAULT_SHARD_BYTES, HfFolderSink, check_split
from ..core.inputs import Split, parquet_files, record_splits
from ..core.io import RecordWriter, check_paths, read_records
from ..core.parquet_write import ParquetSink
from ..core.report import Progress, Tally, make_report
from ..core.shards import ShardPlan
from ..core.step import Item, Step, check_pipeline
from ..exec import make_executor
from .formats import FOLDER_OUTPUTS, ROUTES
from .messages import llava_to_messages, messages_to_llava
from .parquet import GroupSplit, ParquetGroupStep, ReadImagesStep, plan, survey
from .svit import SvitStep, svit_sizes
from .webdataset import TarSink, WdsFilesStep


@dataclass
class ConvertOptions:
    """Everything `convert` needs besides input and output."""

    to: str
    source_format: str | None = None
    image_root: Path | None = None
    images_out: Path | None = None
    workers: int = 1
    shard_size: int | None = None  # rows per shard
    image_data: Path | None = None
    executor: str = "local"
    ray_address: str | None = None
    progress: bool | None = None
    box_rounding: str | None = None  # svit → llava only: "svit" (default) or "exact"
    report: Path | None = None  # where the caller writes the report: checked against the inputs here
    shard_bytes: int | None = None  # parquet, hf-folder: a shard ends before it passes this many bytes
    split: str | None = None  # hf-folder: the split name (default train)


class Sink(Protocol):
    """Where a route's items end up (written in the driver, in order)."""

    count: int

    def write(self, item: Item) -> None: ...


class RecordSink:
    """LLaVA or messages records into one .json/.jsonl file (atomic)."""

    def __init__(self, path: Path) -> None:
        self.writer = RecordWriter(path)
        self.count = 0

    def __enter__(self) -> RecordSink:
        self.writer.__enter__()
        return self

    def write(self, item: Item) -> None:
        self.writer.write(item.record)
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        self.writer.__exit__(*exc)


def detect(path: Path) -> str:
    """The input's format, from its extension and its first record."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    if path.is_dir() and path.suffix.lower() in (".json", ".jsonl"):
        raise UserError(f"{path}: is a folder, expected a {path.suffix.lower()} file")
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return "parquet"
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise UserError(f"{path}: cannot tell the format from the name; give --from")
    first = next(iter(read_records(path)), None)  # streamed: only the first record is parsed
    if not isinstance(first, dict):
        raise UserError(f"{path}: the first record is not an object; give --from")
    if "messages" in first:
        return "messages"
    conversations = first.get("conversations")
    if "image_id" in first and isinstance(conversations, list) and conversations \
            and isinstance(conversations[0], dict) and "content" in conversations[0]:
        return "svit"
    if isinstance(conversations, list):
        return "llava"
    raise UserError(f"{path}: unknown record layout (keys: {', '.join(first)}); give --from")


class MapStep(Step):
    """Stateless: `function(record, where)` on every record (a module-level function: picklable)."""

    def __init__(self, name: str, function: Any) -> None:
        super().__init__()
        self.name, self.function = name, function

    def process(self, items: list[Item]) -> list[Item]:
        for item in items:
            if not isinstance(item.record, dict):
                raise UserError(f"{item.where}: the record is not an object")
            item.record = self.function(item.record, f"{item.where} (id {item.record.get('id')!r})")
        return items


def route(src: Path, out: Path, source: str, opts: ConvertOptions) -> tuple[list[Split], list[Step], Any]:
    """(input splits, steps, sink) of one conversion, built and checked in the driver."""
    root = opts.image_root or src.parent
    parts = opts.workers * 4
    if source == "parquet":
        images_out = opts.images_out or out.parent / "images"  # made by the first image write, not before
        splits = [GroupSplit([group]) for group in plan(parquet_files(src), images_out)]
        return splits, [ParquetGroupStep()], RecordSink(out)
    if opts.to in ("parquet", "hf-folder"):
        found = survey(src, shard_plan(opts, root))
        if found.count == 0:
            raise UserError(f"{src}: no records")
        sink: Any = ParquetSink(out, found) if opts.to == "parquet" else HfFolderSink(out, found, opts.split or "train")
        return record_splits(src, parts=parts), [ReadImagesStep(root, found.multi_image)], sink
    if opts.to == "wds":
        return record_splits(src, parts=parts), [WdsFilesStep(root)], TarSink(out, opts.shard_size or 1000)
    if source == "svit":
        step = SvitStep(svit_sizes(opts.image_data, opts.image_root), opts.box_rounding or "svit")
        return record_splits(src, parts=parts), [step], RecordSink(out)
    function = llava_to_messages if opts.to == "messages" else messages_to_llava
    return record_splits(src, parts=parts), [MapStep(f"{source}_to_{opts.to}", function)], RecordSink(out)


def shard_plan(opts: ConvertOptions, root: Path) -> ShardPlan:
    """Rows and/or bytes per shard; unset, parquet takes 5,000 rows and hf-folder 500 MB (push_to_hub's cut)."""
    rows, size = opts.shard_size, opts.shard_bytes
    if rows is None and size is None:
        rows, size = (None, DEFAULT_SHARD_BYTES) if opts.to == "hf-folder" else (5000, None)
    return ShardPlan(rows, size, root)


def _check_options(source: str, opts: ConvertOptions) -> None:
    if (source, opts.to) not in ROUTES:
        routes = ", ".join(f"{a}→{b}" for a, b in sorted(ROUTES))
        raise UserError(f"no conversion from {source} to {opts.to} (available: {routes})")
    if opts.box_rounding and source != "svit":
        raise UserError("--box-rounding applies to svit → llava only")
    if opts.split is not None and opts.to != "hf-folder":
        raise UserError("--split applies to --to hf-folder only")
    if opts.to == "hf-folder":
        check_split(opts.split or "train")
    if opts.shard_bytes is not None and opts.to not in ("parquet", "hf-folder"):
        raise UserError("--shard-bytes applies to --to parquet and --to hf-folder only")


def convert(src: Path, out: Path, opts: ConvertOptions) -> dict[str, Any]:
    """Run one conversion; returns the report (`records_out`: records, rows or samples written)."""
    started = time.perf_counter()
    check_paths({"the input": src, "--image-root": opts.image_root, "--image-data": opts.image_data},
                {"the output": out, "--report": opts.report},
                folders=frozenset({"the output"}) if opts.to in FOLDER_OUTPUTS else frozenset())
    source = opts.source_format or detect(src)
    _check_options(source, opts)
    executor = make_executor(opts.executor, opts.workers, opts.ray_address)
    splits, steps, sink = route(src, out, source, opts)
    check_pipeline(steps)
    tally = Tally([step.name for step in steps])
    with sink, Progress("convert", enabled=opts.progress) as bar:
        for item in executor.run(splits, steps, tally):
            sink.write(item)
            bar.update()
    return make_report("convert", src, out, tally.records_in(), sink.count, time.perf_counter() - started,
                       executor.name, executor.workers, tally.as_dict(), rejected=0, route=f"{source}→{opts.to}")
