"""The offset index of a .jsonl file or a .json list: where each record's bytes start, built once and cached.

Stored as one uint64 .npy array: a 4-number header (magic, kind + flags, the source's size, its mtime in ns)
then n + 1 offsets. Record k lies in [offsets[k], offsets[k + 1]) (jsonl: its line, maybe followed by blank
lines) or [offsets[k], offsets[k + 1] - 1) (json list: without the separator). The cache lives beside the file
as `.FILE.viewindex`, or under ~/.cache/visinstruct/view when that folder cannot be written; a size or mtime
that differs from the header makes it stale and it is built again. 5M records take 40 MB, memory-mapped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.io import BOM, AtomicFile
from .jsonscan import BLOCK, list_offsets

MAGIC = 0x5649_4557_4958_0001  # "VIEWIX" + format version 1
KINDS = {"jsonl": 1, "json": 2}
DENSE = 1 << 8  # flag: a jsonl without blank lines, so record k is on line k + 1
HEADER = 4
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[ord(c) for c in " \t\r\n"]] = True


@dataclass
class OffsetIndex:
    """The offsets of one file's records (a memory map when loaded from the cache)."""

    kind: str
    offsets: np.ndarray
    dense: bool
    file: Path | None   # where the index is stored (None when it could not be stored anywhere)
    built: bool         # True when this call built it, False when it came from the cache

    def __len__(self) -> int:
        return max(len(self.offsets) - 1, 0)

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """The bytes [first, last) holding records start..stop-1."""
        return int(self.offsets[start]), int(self.offsets[stop])

    def end_of(self, row: int) -> int:
        """Where record `row`'s own bytes end (a json list's separator excluded)."""
        return int(self.offsets[row + 1]) - (self.kind == "json")


def stamp(source: Path) -> tuple[int, int]:
    """The (size, mtime in ns) that a cached index must match."""
    info = source.stat()
    return info.st_size, info.st_mtime_ns


def beside(source: Path) -> Path:
    """`.FILE.viewindex` in the file's own folder."""
    return source.with_name(f".{source.name}.viewindex")


def in_cache(source: Path) -> Path:
    """The fallback under ~/.cache/visinstruct/view (XDG_CACHE_HOME respected), named by the file's real path."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visinstruct" / "view"
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return root / f"{key}-{source.name}.viewindex"


def load_or_build(source: Path, kind: str, log: Callable[[str], None] = lambda _: None) -> OffsetIndex:
    """The cached index of `source` when it is fresh, else a new one (stored beside it or in the cache)."""
    size, mtime = stamp(source)
    for place in (beside(source), in_cache(source)):
        offsets = _load(place, kind, size, mtime)
        if offsets is not None:
            return OffsetIndex(kind, offsets[HEADER:], bool(offsets[1] & DENSE), place, built=False)
    log(f"indexing {source} ({size / 1e6:,.1f} MB), once: the index is cached for the next time")
    started = time.perf_counter()
    offsets, dense = build(source, kind)
    log(f"indexed {len(offsets) - 1:,} records in {time.perf_counter() - started:.1f} s")
    if stamp(source) != (size, mtime):
        raise UserError(f"{source}: changed while it was being indexed; try again when it is complete")
    header = np.array([MAGIC, KINDS[kind] | (DENSE if dense else 0), size, mtime], dtype=np.uint64)
    file = _store(source, np.concatenate([header, offsets]), log)
    return OffsetIndex(kind, offsets, dense, file, built=True)


def build(source: Path, kind: str) -> tuple[np.ndarray, bool]:
    """(offsets, dense) of `source`: one streaming pass, memory ~8 bytes per record."""
    with source.open("rb") as handle:
        start = len(BOM) if handle.read(len(BOM)) == BOM else 0
    if kind == "json":
        return list_offsets(source, start), False
    return jsonl_offsets(source, start)


def jsonl_offsets(source: Path, start: int = 0) -> tuple[np.ndarray, bool]:
    """The start of every non-blank line, then the file size; dense when no line was blank."""
    parts, suspects, position, at_line_start, lines = [], [], 0, True, 0
    with source.open("rb") as handle:
        while block := handle.read(BLOCK):
            data = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(data == 10)
            heads = newlines + 1
            heads = np.concatenate([[0], heads] if at_line_start else [heads])
            heads = heads[heads < len(data)]
            lines += len(heads)
            first = data[heads]
            parts.append(heads[~_SPACE[first]] + position)
            suspects.extend(int(h) + position for h in heads[_SPACE[first] & (first != 10)])
            at_line_start = bool(len(data)) and block[-1:] == b"\n"
            position += len(block)
    kept = _non_blank(source, suspects) if suspects else np.zeros(0, np.int64)
    starts = np.concatenate([*parts, kept]) if parts else kept
    if len(kept):
        starts.sort()
    starts = starts.astype(np.uint64, copy=False)
    if len(starts) and starts[0] == 0 and start:
        starts[0] = start  # skip the byte order mark
    return np.concatenate([starts, np.array([position], dtype=np.uint64)]), len(starts) == lines


def _non_blank(source: Path, suspects: list[int]) -> np.ndarray:
    """Of the lines that start with a space, tab or CR (rare), those with something else on them."""
    keep = []
    with source.open("rb") as handle:
        for offset in suspects:
            handle.seek(offset)
            if handle.readline().strip():
                keep.append(offset)
    return np.array(keep, dtype=np.int64)


def _load(place: Path, kind: str, size: int, mtime: int) -> np.ndarray | None:
    """The stored array when it is a valid index of this kind for a file of this size and mtime, else None."""
    if not place.is_file():
        return None
    try:
        stored = np.load(place, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if stored.dtype != np.uint64 or stored.ndim != 1 or len(stored) < HEADER + 1:
        return None
    magic, flags, stored_size, stored_mtime = (int(v) for v in stored[:HEADER])
    if magic != MAGIC or flags & 0xFF != KINDS[kind] or (stored_size, stored_mtime) != (size, mtime):
        return None
    if int(stored[-1]) > size:
        return None
    return stored


def _store(source: Path, array: np.ndarray, log: Callable[[str], None]) -> Path | None:
    """Write the index beside the file, else in the cache; None (and a log line) when neither can be written."""
    for place in (beside(source), in_cache(source)):
        if place.parent.exists() and not os.access(place.parent, os.W_OK):
            continue
        try:
            with AtomicFile(place) as handle:
                np.save(handle, array, allow_pickle=False)
            return place
        except UserError:
            continue
    log("could not store the index (beside the file or under ~/.cache/visinstruct); it will be built again")
    return None
