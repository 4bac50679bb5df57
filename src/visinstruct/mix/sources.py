"""A mix source's files (a .json list, a .jsonl, a .parquet, or a folder of shards of these), their row counts,
their fingerprints, and a reader that yields only the selected rows, in file order, without holding the file.

A row is a record: an item of a .json list, a non-blank line of a .jsonl, a row of a parquet file; row numbers
count from 0 within each file. For a parquet row, an embedded image `{bytes, path}` becomes its path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import UserError
from ..core.inputs import ParquetSplit
from ..core.io import BOM, open_input, read_json_list
from .rows import Cursor, Rows

KINDS = {".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class SourceFile:
    """One file of a source."""

    path: Path
    kind: str  # json | jsonl | parquet


def source_files(path: Path) -> list[SourceFile]:
    """The files of a source: the file itself, or every record file under a folder (sorted by relative path,
    hidden files and folders skipped); a folder may hold parquet shards or json/jsonl shards, not both."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    if path.is_file():
        kind = KINDS.get(path.suffix.lower())
        if kind is None:
            raise UserError(f"{path}: expected .json, .jsonl, .parquet or a folder of them")
        return [SourceFile(path, kind)]
    found = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KINDS
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                   key=lambda p: p.relative_to(path).as_posix())
    files = [SourceFile(p, KINDS[p.suffix.lower()]) for p in found]
    kinds = {f.kind == "parquet" for f in files}
    if not files:
        raise UserError(f"{path}: no .json, .jsonl or .parquet file in this folder")
    if len(kinds) > 1:
        raise UserError(f"{path}: the folder holds both parquet and json/jsonl files; point at one set of shards")
    return files


def _parquet_groups(path: Path) -> list[int]:
    """Rows per row group of a parquet file (from its footer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each non-blank line; a leading byte order mark is dropped."""
    with open_input(path) as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if line.strip():
                yield number, line


def count_rows(file: SourceFile) -> int:
    """The number of rows: parquet from its footer, jsonl by a scan of its lines (not parsed), a json list by
    streaming it once."""
    if file.kind == "parquet":
        return sum(_parquet_groups(file.path))
    if file.kind == "jsonl":
        return sum(1 for _ in _jsonl_lines(file.path))
    return sum(1 for _ in read_json_list(file.path))


def fingerprint(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file's bytes (what a lock checks before it is replayed)."""
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def read_rows(file: SourceFile, rows: Rows, first: int = 0,
              cursor: Cursor | None = None) -> Iterator[tuple[int, Any, str]]:
    """(row number, record, where) for each selected row of one file, in file order. `rows` are numbered
    across the source and this file's first row is number `first` (a `cursor` over `rows` may be shared by
    the files of a source). Stops reading once no selected row is left."""
    cursor = cursor or Cursor(rows)
    if file.kind == "jsonl":
        yield from _jsonl_rows(file.path, cursor, first)
    elif file.kind == "json":
        yield from _json_rows(file.path, cursor, first)
    else:
        yield from _parquet_rows(file.path, rows, cursor, first)


def _jsonl_rows(path: Path, cursor: Cursor, first: int) -> Iterator[tuple[int, Any, str]]:
    for row, (number, line) in enumerate(_jsonl_lines(path), start=first):
        if cursor.done(row):
            return
        if cursor.wants(row):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc})") from None
            yield row, record, f"{path}:{number}"


def _json_rows(path: Path, cursor: Cursor, first: int) -> Iterator[tuple[int, Any, str]]:
    for row, record in enumerate(read_json_list(path), start=first):
        if cursor.done(row):
            return
        if cursor.wants(row):
            yield row, record, f"{path}: record {row - first}"


def _parquet_rows(path: Path, rows: Rows, cursor: Cursor, first: int) -> Iterator[tuple[int, Any, str]]:
    start = first
    for group, size in enumerate(_parquet_groups(path)):
        if cursor.done(start):
            return
        if rows.overlaps(start, start + size):
            for offset, item in enumerate(ParquetSplit(path, group, start - first).read()):
                if cursor.wants(start + offset):
                    yield start + offset, item.record, item.where
        start += size


def file_rows(files: list[SourceFile], rows: Rows,
              counts: list[int] | None = None) -> Iterator[tuple[int, int, Any, str]]:
    """(file index, row within that file, record, where) for the selected rows of a source whose rows are
    numbered across its files in order. Without `counts` (rows per file) the selection must be one run from
    row 0 (`all`, `first:N`): a file then holds as many rows as it yielded. Files after the last selected row
    are not opened."""
    cursor, first = Cursor(rows), 0
    for index, file in enumerate(files):
        if cursor.done(first):
            return
        seen = 0
        for row, record, where in read_rows(file, rows, first, cursor):
            seen = row - first + 1
            yield index, row - first, record, where
        first += counts[index] if counts is not None else seen
