"""`visinstruct validate`: every structural problem with its record index and id, then counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

from ..errors import UserError
from ..records import read_records
from .structure import problems


def validate(path: Path, image_root: Path | None, check_images: bool, allow_untagged: bool, show: int,
             stream: TextIO) -> bool:
    """Print problems and counts; True when every record is valid and the file parses."""
    counts: Counter[str] = Counter()
    records = invalid = shown = 0
    error = None
    try:
        for index, record in enumerate(read_records(path)):
            records += 1
            found = problems(record, image_root, check_images, allow_untagged)
            if found:
                invalid += 1
            for problem in found:
                counts[problem.split(":", 1)[0]] += 1
                if shown < show:
                    record_id = record.get("id") if isinstance(record, dict) else None
                    print(f"record {index} (id {record_id!r}): {problem}", file=stream)
                    shown += 1
    except UserError as exc:
        error = str(exc)
    print(f"{records} records read, {invalid} invalid", file=stream)
    for code, n in counts.most_common():
        print(f"  {code}: {n}", file=stream)
    if error:
        print(f"error: {error}", file=stream)
    return invalid == 0 and error is None
