"""A record file read by row number without loading it: a .jsonl or .json list through its offset index
(one `pread` per page), parquet (a file or a folder of shards) through its row groups (footers only at open).

`chunks(start)` cuts the rows from `start` to the end into chunks for scans: ~4 MB of raw bytes for the offset
files (a search tests a whole chunk's bytes, then each row's, before parsing any), a row group for parquet (its
text tested with pyarrow before any row becomes a dict). Every error names the file and the line or row.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..core.errors import UserError
from ..core.inputs import image_paths, parquet_files
from ..core.io import newlines_before
from .index import OffsetIndex, load_or_build, stamp

READ_BYTES = 4 << 20  # a scan reads this much per pread (or one record, when it is larger)
Log = Callable[[str], None]


@dataclass
class Chunk:
    """Consecutive rows for a scan: `first` and `size`, and a cheap whole-chunk test (`may_match`)."""

    first: int
    size: int
    raw: bytes = b""                 # offset files: the rows' bytes, one after the other
    bounds: list[int] | None = None  # offset files: row k is raw[bounds[k]:bounds[k + 1] - cut]
    cut: int = 0
    table: Any = None                 # parquet: the row group (pyarrow), its rows made dicts on demand
    skip: int = 0                     # parquet: rows of the row group before `first`

    def may_match(self, query: Any) -> bool:
        """False when no row of the chunk can match `query` (a `Query`), found without parsing a row."""
        if self.table is not None:
            return _table_may_match(self.table, query)
        return query.may_match(self.raw)

    def payloads(self) -> list[Any]:
        """Each row's raw bytes."""
        bounds, raw, cut = self.bounds or [], self.raw, self.cut
        return [raw[bounds[k]:bounds[k + 1] - cut] for k in range(self.size)]


def _table_may_match(table: Any, query: Any) -> bool:
    """A row group's conversations searched with pyarrow (ASCII text queries only; anything else: maybe)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ascii_text = query.ascii_text
    if ascii_text is None or "conversations" not in table.column_names:
        return True
    try:
        values = pc.struct_field(pc.list_flatten(table.column("conversations")), "value")
        return bool(pc.any(pc.match_substring(pc.utf8_lower(values), ascii_text.decode())).as_py())
    except (pa.ArrowException, TypeError, KeyError):
        return True  # another layout: each row is tested


class OffsetDataset:
    """A .jsonl file or a .json list, read through its offset index; reopened when the file changes."""

    index: OffsetIndex

    def __init__(self, path: Path, kind: str, log: Log) -> None:
        self.path, self.kind, self.log = path, kind, log
        self.lock = threading.Lock()
        self.retired: list[int] = []  # descriptors of earlier versions: a request may still be reading one
        self.fd = -1
        self._open()

    def _open(self) -> None:
        stamped = stamp(self.path)
        index = load_or_build(self.path, self.kind, self.log)
        if self.fd >= 0:
            self.retired.append(self.fd)
        self.index, self.stamp, self.fd = index, stamped, os.open(self.path, os.O_RDONLY)

    def refresh(self) -> None:
        """Build the index again when the file changed since it was opened (size or mtime)."""
        with self.lock:
            if stamp(self.path) != self.stamp:
                self._open()

    def __len__(self) -> int:
        return len(self.index)

    def where(self, row: int, exact: bool = False) -> str:
        """`file:line` (jsonl) or `file: record N` (json list). A jsonl with blank lines gives its byte offset
        unless `exact` (errors), which counts the lines before the record (a pass over the file up to it)."""
        if self.kind == "json":
            return f"{self.path}: record {row}"
        start = self.index.span(row, row)[0]
        if self.index.dense or exact:
            line = row + 1 if self.index.dense else newlines_before(self.path, [start])[0] + 1
            return f"{self.path}:{line}"
        return f"{self.path}: record {row} (byte {start:,})"

    def line(self, row: int) -> int | None:
        """The line of a record when it is known without reading the file (a jsonl without blank lines)."""
        return row + 1 if self.kind == "jsonl" and self.index.dense else None

    def raw(self, row: int) -> bytes:
        """The bytes of one record."""
        start = self.index.span(row, row)[0]
        return os.pread(self.fd, self.index.end_of(row) - start, start)

    def record(self, row: int) -> Any:
        """One parsed record; bad JSON is a UserError naming the file and line."""
        try:
            return orjson.loads(self.raw(row))
        except orjson.JSONDecodeError as exc:
            raise UserError(f"{self.where(row, exact=True)}: not valid JSON ({exc})") from None

    def chunks(self, start: int) -> Iterator[Chunk]:
        """The rows from `start` on, about READ_BYTES (at least one row) per chunk, one pread each."""
        offsets, total, row = self.index.offsets, len(self), start
        cut = 1 if self.kind == "json" else 0  # a json list's item ends before its separator
        while row < total:
            first = int(offsets[row])
            stop = max(row + 1, int(np.searchsorted(offsets, first + READ_BYTES, side="right")) - 1)
            stop = min(stop, total)
            bounds = [b - first for b in offsets[row:stop + 1].tolist()]
            yield Chunk(row, stop - row, os.pread(self.fd, bounds[-1], first), bounds, cut)
            row = stop

    def stream(self, start: int) -> Iterator[tuple[int, bytes]]:
        """(row, raw bytes) from `start` on."""
        for chunk in self.chunks(start):
            yield from enumerate(chunk.payloads(), start=chunk.first)

    def close(self) -> None:
        for fd in [*self.retired, self.fd]:
            if fd >= 0:
                os.close(fd)
        self.fd, self.retired = -1, []


class ParquetDataset:
    """A parquet file or a folder of shards: rows located by their row group, images kept as bytes there."""

    def __init__(self, path: Path, log: Log) -> None:
        import pyarrow.parquet as pq

        self.path, self.files = path, parquet_files(path)
        self.groups: list[tuple[int, int]] = []  # (file number, row group) in row order
        firsts, row = [], 0
        self.columns: list[list[str]] = []
        self.image_bytes: list[str | None] = []
        for number, file in enumerate(self.files):
            meta = _parquet(file).metadata
            leaves = [column.path for column in pq.ParquetFile(file).schema]
            self.columns.append([c for c in leaves if not (c.startswith("image.") and c.endswith(".bytes"))])
            self.image_bytes.append("image" if any(c.startswith("image.") and c.endswith(".bytes")
                                                   for c in leaves) else None)
            for group in range(meta.num_row_groups):
                self.groups.append((number, group))
                firsts.append(row)
                row += meta.row_group(group).num_rows
        self.firsts = np.array([*firsts, row], dtype=np.int64)
        log(f"{path}: {row:,} rows in {len(self.files)} parquet file(s), {len(self.groups)} row groups")

    def refresh(self) -> None:
        """Parquet shards are not rewritten in place; nothing to do."""

    def __len__(self) -> int:
        return int(self.firsts[-1])

    def where(self, row: int, exact: bool = False) -> str:
        number = self.groups[self._group_of(row)][0]
        return f"{self.files[number]}: row {row}"

    def line(self, row: int) -> int | None:
        return None

    def record(self, row: int) -> Any:
        """One row as a dict (only that row is converted from the cached row group)."""
        group = self._group_of(row)
        return _with_paths(self._table(group).slice(row - int(self.firsts[group]), 1).to_pylist()[0])

    def chunks(self, start: int) -> Iterator[Chunk]:
        """The rows from `start` on, one row group per chunk; rows become dicts only when asked for."""
        group = self._group_of(start) if start < len(self) else len(self.groups)
        while group < len(self.groups):
            first = int(self.firsts[group])
            skip = max(0, start - first)
            size = int(self.firsts[group + 1]) - first - skip
            yield _ParquetChunk(first + skip, size, table=self._table(group), skip=skip, owner=self, group=group)
            group += 1

    def stream(self, start: int) -> Iterator[tuple[int, dict]]:
        """(row, record) from `start` on."""
        for chunk in self.chunks(start):
            yield from enumerate(chunk.payloads(), start=chunk.first)

    def holds_bytes(self, row: int) -> bool:
        """True when the file of this row has an image column with bytes in it."""
        return self.image_bytes[self.groups[self._group_of(row)][0]] is not None

    def image(self, row: int, k: int) -> bytes | None:
        """The embedded bytes of image `k` of a row, when the parquet holds them."""
        group = self._group_of(row)
        number, part = self.groups[group]
        if self.image_bytes[number] is None:
            return None
        table = self._read(number, part, [self.image_bytes[number]])
        value = table.column(0)[row - int(self.firsts[group])].as_py()
        values = value if isinstance(value, list) else [value]
        item = values[k] if 0 <= k < len(values) else None
        return item.get("bytes") if isinstance(item, dict) else None

    def _group_of(self, row: int) -> int:
        if not 0 <= row < len(self):
            raise UserError(f"{self.path}: no row {row} (it has {len(self):,})")
        return int(np.searchsorted(self.firsts, row, side="right")) - 1

    @functools.lru_cache(maxsize=4)  # noqa: B019 (one dataset per server: the cache lives as long as it)
    def _table(self, group: int) -> Any:
        """A row group's columns, image bytes left out (pyarrow table)."""
        number, part = self.groups[group]
        return self._read(number, part, self.columns[number])

    @functools.lru_cache(maxsize=4)  # noqa: B019
    def _rows(self, group: int) -> list[dict]:
        return [_with_paths(row) for row in self._table(group).to_pylist()]

    def _read(self, number: int, group: int, columns: list[str]) -> Any:
        import pyarrow as pa

        try:
            return _parquet(self.files[number]).read_row_group(group, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.files[number]}: row group {group} cannot be read ({exc})") from None

    def close(self) -> None:
        self._rows.cache_clear()
        self._table.cache_clear()


@dataclass
class _ParquetChunk(Chunk):
    """A row group's chunk: its dicts are made (and cached by the dataset) only when a row is tested."""

    owner: Any = None
    group: int = 0

    def payloads(self) -> list[Any]:
        return self.owner._rows(self.group)[self.skip:]


def _parquet(file: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{file}: not a readable parquet file ({exc})") from None


def _with_paths(row: dict) -> dict:
    """A parquet row with its image struct(s) replaced by their path(s)."""
    if "image" in row:
        row["image"] = image_paths(row["image"])
    return row


Dataset = OffsetDataset | ParquetDataset


def open_dataset(path: Path, log: Log = lambda _: None) -> Dataset:
    """The dataset of a .jsonl, .json list, .parquet file or folder of parquet shards."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return ParquetDataset(path, log)
    if suffix in (".jsonl", ".json"):
        try:
            return OffsetDataset(path, suffix[1:], log)
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    raise UserError(f"{path}: expected .jsonl, .json, .parquet or a folder of parquet shards")
