"""`visinstruct validate`: every structural problem with its record index and id, then counts.

The checks run as one stateless step on the executor (local processes or Ray); the driver prints the
problems in input order.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from ..core.errors import UserError
from ..core.inputs import record_splits
from ..core.io import check_paths
from ..core.report import Progress, Tally, make_report
from ..core.step import Item, Step
from ..exec import make_executor
from .structure import problems


class ProblemsStep(Step):
    """Attach every structural problem of a record to the item (nothing is rejected)."""

    name = "validate"

    def __init__(self, image_root: Path | None, check_images: bool, allow_untagged: bool) -> None:
        super().__init__()
        self.image_root, self.check_images, self.allow_untagged = image_root, check_images, allow_untagged

    def check(self) -> None:
        if self.check_images and not self.image_root:
            raise UserError("--check-images needs --image-root")

    def process(self, items: list[Item]) -> list[Item]:
        for item in items:
            found = problems(item.record, self.image_root, self.check_images, self.allow_untagged)
            if found:
                item.extra = {"problems": found}
        return items


def validate(path: Path, image_root: Path | None, check_images: bool, allow_untagged: bool, show: int,
             stream: TextIO, executor: str = "local", workers: int = 1, address: str | None = None,
             progress: bool | None = None, report: Path | None = None) -> dict[str, Any]:
    """Print problems and counts; returns the report (`valid` is True when every record is valid; `error`
    says why the input could not be read to its end). `report` is only checked here (the caller writes it):
    it must not be the input."""
    started = time.perf_counter()
    check_paths({"the input": path, "--image-root": image_root}, {"--report": report})
    step = ProblemsStep(image_root, check_images, allow_untagged)
    step.check()
    runner = make_executor(executor, workers, address)
    splits = record_splits(path, parts=runner.workers * 4)  # a missing or unknown input: one line, exit 2
    counts: Counter[str] = Counter()
    records = invalid = shown = 0
    error = None
    try:
        with Progress("validate", enabled=progress) as bar:
            for item in runner.run(splits, [step], Tally([step.name])):
                records += 1
                bar.update()
                found = (item.extra or {}).get("problems", [])
                invalid += bool(found)
                for problem in found:
                    counts[problem.split(":", 1)[0]] += 1
                    if shown < show:
                        record_id = item.record.get("id") if isinstance(item.record, dict) else None
                        print(f"record {item.index} (id {record_id!r}): {problem}", file=stream)
                        shown += 1
    except UserError as exc:
        error = str(exc)
    print(f"{records} records read, {invalid} invalid", file=stream)
    for code, n in counts.most_common():
        print(f"  {code}: {n}", file=stream)
    if error:
        print(f"error: {error}", file=stream)
    steps = {step.name: {"in": records, "out": records - invalid, "rejected": invalid,
                         "rejected_by_reason": dict(counts.most_common())}}
    return make_report("validate", path, None, records, records - invalid, time.perf_counter() - started,
                       runner.name, runner.workers, steps, valid=invalid == 0 and error is None, error=error)
