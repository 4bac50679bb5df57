"""Record inputs cut into splits that any worker can read: JSONL by byte ranges, parquet by row groups,
a JSON list as one streamed split. Each split yields Items that carry their position and a `file:line`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import UserError
from .io import newlines_before, read_json_list, read_jsonl
from .step import Item

SPLIT_BYTES = 16 << 20
MIN_SPLIT_BYTES = 1 << 20


class Split(Protocol):
    """A piece of an input that one worker reads on its own (picklable)."""

    def read(self) -> Iterator[Item]: ...


@dataclass
class JsonlSplit:
    """The lines of a .jsonl file that start in [start, end)."""

    path: Path
    start: int
    end: int | None
    lines_before: int | None = None  # newlines before `start`, counted once for all splits

    def read(self) -> Iterator[Item]:
        for line, record in read_jsonl(self.path, self.start, self.end, self.lines_before):
            yield Item(-1, record, f"{self.path}:{line}")


@dataclass
class JsonListSplit:
    """A whole .json list, streamed."""

    path: Path

    def read(self) -> Iterator[Item]:
        for n, record in enumerate(read_json_list(self.path)):
            yield Item(-1, record, f"{self.path}: record {n}")


@dataclass
class ParquetSplit:
    """One row group of a parquet file; an image struct `{bytes, path}` becomes its path, as in LLaVA json."""

    path: Path
    group: int
    first_row: int

    def read(self) -> Iterator[Item]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(self.path).read_row_group(self.group)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.path}: row group {self.group} cannot be read ({exc})") from None
        for offset, row in enumerate(table.to_pylist()):
            if "image" in row:
                row["image"] = image_paths(row["image"])
            yield Item(-1, row, f"{self.path}: row {self.first_row + offset}")


def image_paths(value: Any) -> Any:
    """An image struct `{bytes, path}` (or a list of them) as its path(s), as in LLaVA json."""
    if isinstance(value, dict):
        return value.get("path")
    if isinstance(value, list):
        return [v.get("path") if isinstance(v, dict) else v for v in value]
    return value


def parquet_files(path: Path) -> list[Path]:
    """One parquet file, or every parquet file under a folder (sorted: shard order)."""
    if path.is_dir() and path.suffix.lower() in (".json", ".jsonl"):
        raise UserError(f"{path}: is a folder, expected a {path.suffix.lower()} file")
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file()) if path.is_dir() else [path]
    if not files or not files[0].exists():
        where = "in this folder (expected .parquet shards)" if path.is_dir() else "found"
        raise UserError(f"{path}: no parquet file {where}")
    return files


def _parquet_splits(path: Path) -> list[ParquetSplit]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    splits, row = [], 0
    for file in parquet_files(path):
        try:
            meta = pq.ParquetFile(file).metadata
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{file}: not a readable parquet file ({exc})") from None
        for group in range(meta.num_row_groups):
            splits.append(ParquetSplit(file, group, row))
            row += meta.row_group(group).num_rows
    return splits


def _jsonl_splits(path: Path, split_bytes: int) -> list[JsonlSplit]:
    size = path.stat().st_size
    starts = list(range(0, max(size, 1), split_bytes))
    lines = newlines_before(path, starts) if len(starts) > 1 else [0]
    ends = [*starts[1:], None]
    return [JsonlSplit(path, start, end, count) for start, end, count in zip(starts, ends, lines, strict=True)]


def record_splits(path: Path, split_bytes: int | None = None, parts: int = 1) -> list[Split]:
    """The splits of a record input: .jsonl (cut every `split_bytes`: by default SPLIT_BYTES, or less so that
    there are at least `parts` splits of at least 1 MB), .json (a list), a .parquet file or a folder of
    parquet shards (one split per row group)."""
    if split_bytes is None:
        size = path.stat().st_size if path.is_file() else 0
        split_bytes = min(SPLIT_BYTES, max(MIN_SPLIT_BYTES, -(-size // max(1, parts))))
    if not path.exists():
        raise UserError(f"{path}: not found")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return _parquet_splits(path)
    if suffix == ".jsonl":
        return _jsonl_splits(path, split_bytes)
    if suffix == ".json":
        return [JsonListSplit(path)]
    raise UserError(f"{path}: expected .json, .jsonl, .parquet or a folder of parquet shards")


def read_splits(splits: list[Split]) -> Iterator[Item]:
    """All items of the splits in order, numbered from 0."""
    index = 0
    for split in splits:
        for item in split.read():
            item.index = index
            index += 1
            yield item
