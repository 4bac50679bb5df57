"""Where parquet shards end: after a number of rows, or before the row that would take a shard past a byte
target. The plan is made in the survey pass, before anything is written, so every shard's name can carry
the final count (`train-00002-of-00007.parquet`) and a missing image stops the run before the first write."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from .errors import UserError
from .io import inside

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_size(text: str) -> int:
    """`500MB`, `1.5GB`, `256MiB` or a plain number of bytes → bytes (KB/MB/GB are powers of 1000, as
    HF's `max_shard_size`; KiB/MiB/GiB powers of 1024). Raises ValueError on anything else."""
    match = _SIZE.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 500MB, 1GB, 256MiB, 1000000)")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return size


class ShardPlan:
    """Rows per shard, decided record by record: a shard ends after `rows` rows, or before a record that would
    take it past `max_bytes` (the record's image files plus its JSON text, before compression; a shard holds
    at least one record). With `max_bytes` each record's images are looked up under `root` (sizes only)."""

    def __init__(self, rows: int | None = None, max_bytes: int | None = None, root: Path | None = None) -> None:
        if rows is None and max_bytes is None:
            raise ValueError("a shard plan needs rows or max_bytes")
        self.rows, self.max_bytes, self.root = rows, max_bytes, root
        self.shards: list[int] = []
        self._rows = self._bytes = 0

    def add(self, record: dict[str, Any], where: str, root: Path | None = None) -> None:
        """Place one record: in the current shard, or first in a new one (`root`: where this record's images
        are, instead of the plan's root)."""
        size = self._size(record, where, root or self.root) if self.max_bytes is not None else 0
        full_rows = self.rows is not None and self._rows >= self.rows
        full_bytes = self.max_bytes is not None and self._bytes + size > self.max_bytes
        if self._rows and (full_rows or full_bytes):
            self.shards.append(self._rows)
            self._rows = self._bytes = 0
        self._rows += 1
        self._bytes += size

    def finish(self) -> list[int]:
        """The rows of every shard, in order."""
        if self._rows:
            self.shards.append(self._rows)
            self._rows = self._bytes = 0
        return self.shards

    def _size(self, record: dict[str, Any], where: str, root: Path | None) -> int:
        paths = record.get("image")
        size = len(orjson.dumps({k: v for k, v in record.items() if k != "image"}))
        if paths is None:
            return size
        for relative in paths if isinstance(paths, list) else [paths]:
            path = inside(root or Path("."), relative, where)
            try:
                size += path.stat().st_size
            except OSError as exc:
                raise UserError(f"{where}: cannot read image {path} ({exc.strerror or exc})") from None
        return size
