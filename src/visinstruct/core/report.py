"""One report shape and one progress display for every stage.

A report is a plain dict: `{"stage", "input", "output", "records_in", "records_out", "rejected",
"seconds", "executor", "workers", "steps": {name: {"in", "out", "rejected", "rejected_by_reason", "counts"}}}`
plus stage-specific keys. The CLI prints it with `summary_lines` and `--report` writes it as JSON.
Progress is a bar on a terminal and a periodic line in logs (stderr that is not a terminal; every 30 s, or
`$VISINSTRUCT_PROGRESS_S`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .errors import UserError
from .io import write_json
from .step import StepStats

LOG_EVERY_S = 30.0
LOG_EVERY_ENV = "VISINSTRUCT_PROGRESS_S"  # seconds between progress lines in logs (default LOG_EVERY_S)


def log_every() -> float:
    """Seconds between progress lines in logs: `$VISINSTRUCT_PROGRESS_S`, else LOG_EVERY_S."""
    value = os.environ.get(LOG_EVERY_ENV, "").strip()
    if not value:
        return LOG_EVERY_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{LOG_EVERY_ENV}={value!r}: expected a number of seconds above 0")
    return seconds


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts items; a tqdm bar when `stream` is a terminal, else a line every `log_every()` seconds with the
    count, the rate, the ETA (when the total is known) and `detail()` (e.g. failed, in flight). Lines come
    from `update` and from `tick`, which a long-waiting caller calls so that a stalled run still reports."""

    def __init__(self, label: str, total: int | None = None, enabled: bool | None = None,
                 stream: TextIO | None = None, unit: str = "rec", detail: Callable[[], str] | None = None) -> None:
        self.label, self.total, self.unit, self.detail = label, total, unit, detail
        self.stream = stream or sys.stderr
        self.count, self.started = 0, time.monotonic()
        self.last_line = self.started
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled if enabled is not None else True
        self.every = log_every() if self.enabled and not tty else LOG_EVERY_S
        self.bar = None
        if self.enabled and tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True,
                            mininterval=0.5, unit_scale=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self.tick()

    def tick(self) -> None:
        """Log a line if one is due (in logs), or refresh the bar's detail (on a terminal)."""
        if self.bar is not None:
            if self.detail is not None:
                self.bar.set_postfix_str(self.detail())
        elif self.enabled:
            now = time.monotonic()
            if now - self.last_line >= self.every:
                self.last_line = now
                self._line(now)

    def set_total(self, total: int) -> None:
        """The total, once it is known (a stream counted to its end): lines and the bar show an ETA from then."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def note(self, text: str) -> None:
        """A one-off line worth seeing (above the bar on a terminal; printed even with progress off)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, now: float) -> None:
        rate = self.count / max(now - self.started, 1e-9)
        total = f"/{self.total:,}" if self.total else ""
        shown = f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.2g}/s"
        left = (self.total or 0) - self.count
        eta = f", ETA {duration(left / rate)}" if self.total and left > 0 and rate > 0 else ""
        detail = f": {self.detail()}" if self.detail is not None else ""
        print(f"{self.label}: {self.count:,}{total} {self.unit} ({shown}{eta}){detail}", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Tally:
    """The driver's per-step counts, built from the items that come back and the stats workers send."""

    def __init__(self, names: list[str]) -> None:
        self.steps = {name: StepStats() for name in names}

    def add_stats(self, stats: dict[str, Counter]) -> None:
        for name, counts in stats.items():
            self.steps[name].own.update(counts)

    def add_item(self, rejected_by: str | None, reason: str | None) -> None:
        """Count the reason of an item that comes out rejected, under the step that rejected it."""
        if rejected_by in self.steps:
            self.steps[rejected_by].rejected[(reason or "").split(":", 1)[0]] += 1

    def records_in(self) -> int:
        """The live items the first step got (the records read)."""
        first = next(iter(self.steps.values()), None)
        return first.own["_in"] if first else 0

    def as_dict(self) -> dict[str, Any]:
        return {name: stats.as_dict() for name, stats in self.steps.items()}


def make_report(stage: str, source: Path | str, output: Path | str | None, records_in: int, records_out: int,
                seconds: float, executor: str, workers: int, steps: dict[str, Any], rejected: int | None = None,
                **extra: Any) -> dict[str, Any]:
    """A stage report in the one shape (`rejected` defaults to in − out; a flat-map stage passes its own)."""
    return {"stage": stage, "input": str(source), "output": None if output is None else str(output),
            "records_in": records_in, "records_out": records_out,
            "rejected": records_in - records_out if rejected is None else rejected,
            "seconds": round(seconds, 2), "executor": executor, "workers": workers, "steps": steps, **extra}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The few lines the CLI prints at the end of a stage."""
    lines = [f"{report['stage']}: {report['records_in']:,} in, {report['records_out']:,} out, "
             f"{report['rejected']:,} rejected in {report['seconds']} s ({report['executor']}, "
             f"{report['workers']} worker{'s' if report['workers'] != 1 else ''})"]
    for name, step in report["steps"].items():
        reasons = step.get("rejected_by_reason")
        if reasons:
            lines.append(f"  {name}: " + ", ".join(f"{code} {n:,}" for code, n in reasons.items()))
    return lines


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """`--report`: the report as JSON, written atomically."""
    if path is not None:
        write_json(path, report)
