"""The record files `stats` reads: .json lists (streamed), .jsonl, and parquet (a file or a folder of shards),
each record with where it came from (`file:line`, `file: record N` or `file: row N`). Parquet is read in
batches without its image bytes: the `image` column's `bytes` are never read from disk, only its `path`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.inputs import image_paths, parquet_files
from ..core.io import read_json_list, read_jsonl


def is_parquet(path: Path) -> bool:
    """A .parquet file or a folder (of parquet shards)."""
    return path.suffix.lower() == ".parquet" or path.is_dir()


def check_input(path: Path) -> None:
    """Fail before any work on an input that is missing or of a kind stats does not read."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix.lower() not in (".json", ".jsonl") and not is_parquet(path):
        raise UserError(f"{path}: expected .json, .jsonl, .parquet or a folder of parquet shards")


def read_input(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for every record of one input, streamed."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" and not path.is_dir():
        for line, record in read_jsonl(path):
            yield f"{path}:{line}", record
    elif suffix == ".json" and not path.is_dir():
        for n, record in enumerate(read_json_list(path)):
            yield f"{path}: record {n}", record
    else:
        for file in parquet_files(path):
            yield from read_parquet(file)


def _columns(schema: Any) -> list[str]:
    """Every column of a parquet file, the image bytes left out (`image.bytes`, `image.list.element.bytes`)."""
    names = []
    for column in (schema.column(i) for i in range(len(schema))):
        top = column.path.split(".", 1)[0]
        if top == "image" and column.path.endswith(".bytes"):
            continue
        if top == "image":
            names.append(column.path)
        elif top not in names:
            names.append(top)
    return names


def read_parquet(path: Path, batch_rows: int = 2048) -> Iterator[tuple[str, Any]]:
    """The rows of one parquet file, in batches of `batch_rows`, image bytes not read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        handle = pq.ParquetFile(path)
        for batch in handle.iter_batches(batch_size=batch_rows, columns=_columns(handle.schema)):
            for record in batch.to_pylist():
                if "image" in record:
                    record["image"] = image_paths(record["image"])
                yield f"{path}: row {row}", record
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file (after row {row}: {exc})") from None
