"""The viewer's JSON answers: dataset info with filter values, a page of row summaries, one record ready to
draw, and a search that scans for at most a time budget and says where to continue.

A search is stateless: the page sends `from` (the row to start at) and gets back the matches found, `next`
(the row to continue from) and `done`. A scan stops when it has `want` matches or after `budget` seconds,
so the first matches of a rare query over millions of rows come back quickly and the page shows the progress.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from ..core.errors import UserError
from ..core.io import inside
from ..core.records import IMAGE_TOKEN, images_of
from .dataset import Chunk, Dataset, ParquetDataset
from .markup import frame_hint, segments
from .query import FILTERS, Query, field_value, turns

PAGE_SIZE, MAX_PAGE = 50, 500
FACET_SAMPLE, FACET_VALUES = 5_000, 60
SCAN_BUDGET_S, MAX_BUDGET_S = 0.4, 5.0
JSON_CHARS = 200_000
SNIPPET = 140


def summary(dataset: Dataset, row: int, record: Any) -> dict[str, Any]:
    """What the list on the left shows of a record."""
    texts = [text for _, text in turns(record)]
    snippet = " ".join(texts[0].replace(IMAGE_TOKEN, " ").split())[:SNIPPET] if texts else ""
    entry = {"row": row, "line": dataset.line(row), "snippet": snippet,
             "id": str(record.get("id", "")) if isinstance(record, dict) else ""}
    for name in FILTERS:
        entry[name] = field_value(record, name)
    return entry


def _broken(dataset: Dataset, row: int, error: UserError) -> dict[str, Any]:
    return {"row": row, "line": dataset.line(row), "id": "", "snippet": "", "error": str(error),
            **dict.fromkeys(FILTERS)}


def facets(dataset: Dataset) -> dict[str, list[tuple[str, int]]]:
    """The values of each filter field in the first FACET_SAMPLE records, most frequent first."""
    counts: dict[str, Counter] = {name: Counter() for name in FILTERS}
    for row in range(min(len(dataset), FACET_SAMPLE)):
        try:
            record = dataset.record(row)
        except UserError:
            continue
        for name in FILTERS:
            value = field_value(record, name)
            if value is not None:
                counts[name][value] += 1
    return {name: counter.most_common(FACET_VALUES) for name, counter in counts.items()}


def info(datasets: dict[str, Dataset], image_root: Path) -> dict[str, Any]:
    """Each dataset's file, size and filter values; the image root."""
    return {"image_root": str(image_root), "facet_sample": FACET_SAMPLE,
            "datasets": {name: {"file": str(ds.path), "count": len(ds), "facets": facets(ds)}
                         for name, ds in datasets.items()}}


def page(dataset: Dataset, start: int, size: int) -> dict[str, Any]:
    """Summaries of rows start .. start + size - 1."""
    size = max(1, min(size, MAX_PAGE))
    start = max(0, min(start, max(len(dataset) - 1, 0)))
    rows = []
    for row in range(start, min(start + size, len(dataset))):
        try:
            rows.append(summary(dataset, row, dataset.record(row)))
        except UserError as exc:
            rows.append(_broken(dataset, row, exc))
    return {"start": start, "count": len(dataset), "rows": rows}


def search(dataset: Dataset, query: Query, start: int, want: int, budget: float) -> dict[str, Any]:
    """Matches of `query` from row `start`, until `want` are found, the budget is spent or the file ends.
    A chunk whose bytes cannot hold a match is passed over whole; in the others each row is tested."""
    want = max(1, min(want, MAX_PAGE))
    deadline = time.monotonic() + max(0.0, min(budget, MAX_BUDGET_S))
    scan = _Scan(dataset, query, want, deadline, max(0, start))
    for chunk in dataset.chunks(scan.next_row):
        if scan.take(chunk) or time.monotonic() > deadline:
            break
    return {"rows": scan.rows, "from": start, "next": scan.next_row, "scanned": scan.next_row - max(0, start),
            "unreadable": scan.unreadable, "count": len(dataset), "done": scan.next_row >= len(dataset)}


class _Scan:
    """The state of one search request: matches so far and the row to continue from."""

    def __init__(self, dataset: Dataset, query: Query, want: int, deadline: float, start: int) -> None:
        self.dataset, self.query, self.want, self.deadline = dataset, query, want, deadline
        self.rows: list[dict[str, Any]] = []
        self.next_row, self.unreadable = start, 0

    def take(self, chunk: Chunk) -> bool:
        """Test the chunk's rows; True when the scan must stop (enough matches, or out of time)."""
        if self.query and not chunk.may_match(self.query):
            self.next_row = chunk.first + chunk.size
            return False
        for row, payload in enumerate(chunk.payloads(), start=chunk.first):
            self.next_row = row + 1
            try:
                found, record = self.query.test(payload)
            except orjson.JSONDecodeError:
                self.unreadable += 1
                continue
            if found:
                self.rows.append(summary(self.dataset, row, record))
                if len(self.rows) >= self.want:
                    return True
            if row % 512 == 0 and time.monotonic() > self.deadline:
                return True
        return False


def detail(dataset: Dataset, name: str, row: int, image_root: Path) -> dict[str, Any]:
    """One record cut into pieces for the page: turns, boxes, images (with their URLs), the JSON itself."""
    if not 0 <= row < len(dataset):
        raise UserError(f"{dataset.path}: no record {row} (it has {len(dataset):,})")
    record = dataset.record(row)
    boxes: list[dict[str, Any]] = []
    shown = [{"role": role, "pieces": segments(text, boxes, k)} for k, (role, text) in enumerate(turns(record))]
    text = orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()
    return {"row": row, "where": dataset.where(row), "summary": summary(dataset, row, record), "turns": shown,
            "boxes": boxes, "frame": frame_hint([t for _, t in turns(record)]),
            "images": image_entries(dataset, name, row, record, image_root),
            "json": text[:JSON_CHARS], "json_cut": max(0, len(text) - JSON_CHARS)}


def image_entries(dataset: Dataset, name: str, row: int, record: Any, root: Path) -> list[dict[str, Any]]:
    """Each image of a record: its URL when it can be shown, else why not (outside the root, missing)."""
    if not isinstance(record, dict):
        return []
    entries = []
    for k, path in enumerate(images_of(record)):
        entry: dict[str, Any] = {"path": path if isinstance(path, str) else repr(path)}
        try:
            file = inside(root, path, "image")
        except UserError:
            file = None
            entry["error"] = "outside the image root" if isinstance(path, str) and path else "not a path"
        if file is not None and file.is_file():
            entry["url"] = "/image?path=" + quote(path)
        elif isinstance(dataset, ParquetDataset) and dataset.holds_bytes(row):
            entry.pop("error", None)
            entry["url"] = f"/rowimage?ds={name}&row={row}&k={k}"
        elif file is not None:
            entry["error"] = "not found under the image root"
        entries.append(entry)
    return entries
