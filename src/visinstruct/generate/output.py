"""The output file of `generate`: a .jsonl grows as units finish; a .json list is written whole at the end.

A .jsonl is appended to unit by unit. Each answer is stored in the ledger together with the file's size once
its lines are appended (`out_end`, one commit), then the lines are written. A re-run cuts the file back to the
largest such size that the file reaches — dropping a line half-written by a killed process, and un-noting a
unit the kill kept from the file — and appends only units not noted, so every unit's records are in the
file exactly once. If the file is missing, or was written with other record settings (`--schema`, `--split`,
`--referring-style`, `--image-prefix`, `--source`), it is written afresh; a non-empty file this ledger did not
write is refused (it would be overwritten in place). A .json list (and the output of a Ray
run) is written once, atomically, at the end, streamed from the ledger in the run's stable order; a .jsonl
written whole is written afresh (from the ledger, no request sent) by the next run to the same path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import UserError
from ..core.io import LineAppender, output_format
from .ledger import Entry, Ledger

if TYPE_CHECKING:
    from .plan import Plan, Planned
    from .units import Unit

WHOLE = "whole:"  # the file was written whole: a later .jsonl run writes it afresh
Rows = Callable[["Unit", Entry], list[dict[str, Any]]]


def check_existing(path: Path, ledger: Path, executor: str) -> None:
    """Before anything is touched: a non-empty .jsonl that this ledger did not write is refused (it grows in
    place, so it would be overwritten before the run is complete). A ledger from before the output path was
    recorded (an earlier release) counts as the writer."""
    if output_format(path) != "jsonl" or executor == "ray" or not path.is_file() or path.stat().st_size == 0:
        return
    recorded = _recorded_path(ledger)
    if recorded is None or (recorded and recorded != str(path.resolve())):
        raise UserError(f"{path}: this .jsonl was not written with the ledger {ledger}, and a .jsonl output grows "
                        "in place: remove it, choose another --out, or give the --ledger that wrote it")


def _recorded_path(ledger: Path) -> str | None:
    """The output path a ledger wrote ("" when it does not say; None when there is no ledger)."""
    if not ledger.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{ledger.resolve()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM info WHERE name = 'out_path'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return ""  # no info table (a first-format ledger), or not a ledger: the Ledger itself says so
    if not row or not row[0]:
        return ""
    try:
        return str(orjson.loads(row[0].removeprefix(WHOLE))[0])
    except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
        return ""


class Output:
    """Where records go, and what the ledger says is already there."""

    def __init__(self, opts: Any, ledger: Ledger) -> None:
        self.path: Path = opts.out
        self.ledger = ledger
        # what the lines depend on besides the replies: a change writes the file afresh
        self.signature = orjson.dumps([str(self.path.resolve()), opts.schema, opts.split,
                                       opts.referring_style, opts.output_tag]).decode()
        self.incremental = output_format(self.path) == "jsonl" and opts.executor != "ray"
        self.lines = LineAppender(self.path, self._keep()) if self.incremental else None

    def _keep(self) -> int:
        """How much of an existing .jsonl to keep: what this ledger vouches for, else nothing."""
        keep = self.ledger.written_end()
        size = self.path.stat().st_size if self.path.is_file() else -1
        written = self.ledger.info("out_path")
        if written != self.signature or size < 0:
            if keep:
                self.ledger.forget_written()
            keep = 0
        elif size < keep:  # killed between a unit's commit and its write: keep the units wholly in the file
            keep = self.ledger.written_end(within=size)
            self.ledger.forget_written(beyond=keep)
        self.ledger.set_info("out_path", self.signature)
        return keep

    def appender(self, rows: Rows) -> Callable[[Unit, Entry], tuple[tuple[int, int] | None, Callable[[], int] | None]]:
        """The runner's callback for an answered unit: ((the file's size after its lines, how many), a function
        that writes them) — the runner stores the answer with that size, commits, then writes (in that order)."""
        def on_answer(unit: Unit, entry: Entry) -> tuple[tuple[int, int] | None, Callable[[], int] | None]:
            try:
                made = rows(unit, entry)
            except ValueError:  # unusable reply: rejected when the run ends
                return None, None
            data = self.lines.encode(made)
            end = self.lines.promise(len(data))
            return (end, len(made)), lambda: self.lines.write(data, end)
        return on_answer

    def catch_up(self, planned: Planned, entry: Entry, rows: list[dict[str, Any]]) -> None:
        """At the end: append a unit answered earlier (or in a ledger shard) that is not in the file yet."""
        if entry.out_end is not None:
            return
        self.ledger.copy_answer(planned.unit_id, entry)  # a shard's answer comes into the main ledger
        self.ledger.mark_written(planned.key, self.lines.append(rows), len(rows))

    def whole_needed(self, plan: Plan) -> bool:
        """Write the file whole: a .json list, a Ray run, or a .jsonl holding units of another run."""
        if self.lines is None:
            return True
        if plan.written_elsewhere():
            self.lines.close()
            return True
        return False

    def wrote_whole(self) -> None:
        """After an atomic whole write, a later .jsonl run writes the file afresh (nothing in it is marked)."""
        self.ledger.set_info("out_path", WHOLE + self.signature)

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()
