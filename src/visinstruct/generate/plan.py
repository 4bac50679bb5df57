"""The run's units in order, kept on disk (a TEMP table of the ledger's connection) instead of in memory.

Units stream from the scenes to the teacher; each is also noted here (key, id, what its record needs), so the
output can be assembled at the end in the same stable order without holding the units or reading the input
again. SQLite drops the table when the connection closes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .prompts import PromptPack, load_pack
from .tasks import REGISTRY
from .units import SceneInfo, Unit

BATCH = 1000


@dataclass
class Planned:
    """A unit as the output needs it: no request, no scene annotations."""

    seq: int
    key: str
    unit_id: str
    info: SceneInfo
    pack: PromptPack


def _meta(unit: Unit) -> bytes:
    info, task = unit.info, unit.pack.task
    return orjson.dumps([info.image_id, info.image, info.source, info.width, info.height,
                         str(info.file) if info.file else None, task.mode, task.name, unit.pack.lang])


def _planned(seq: int, key: str, unit_id: str, meta: bytes) -> Planned:
    image_id, image, source, width, height, file, mode, task, lang = orjson.loads(meta)
    info = SceneInfo(image_id, image, source, width, height, Path(file) if file else None)
    return Planned(seq, key, unit_id, info, load_pack(REGISTRY[(mode, task)], lang))


class Plan:
    """Append units in stream order; read them back in batches."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute("PRAGMA temp_store = FILE")
        db.execute("DROP TABLE IF EXISTS temp.plan")
        db.execute("CREATE TEMP TABLE plan (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, unit_id TEXT NOT NULL, "
                   "meta BLOB NOT NULL)")
        self.count = 0

    def add(self, units: list[Unit]) -> None:
        """Note these units (the next ones in the stream)."""
        rows = [(self.count + i, u.key, u.unit_id, _meta(u)) for i, u in enumerate(units)]
        self.db.executemany("INSERT INTO temp.plan VALUES (?, ?, ?, ?)", rows)
        self.count += len(rows)

    def batches(self) -> Iterator[list[Planned]]:
        """Every unit in stream order, BATCH at a time."""
        for start in range(0, self.count, BATCH):
            rows = self.db.execute("SELECT seq, key, unit_id, meta FROM temp.plan WHERE seq >= ? AND seq < ? "
                                   "ORDER BY seq", (start, start + BATCH)).fetchall()
            yield [_planned(*row) for row in rows]

    def written_elsewhere(self) -> int:
        """Units marked as written to the output that are not in this run (the output holds stale lines)."""
        (n,) = self.db.execute("SELECT COUNT(*) FROM units WHERE out_end IS NOT NULL "
                               "AND key NOT IN (SELECT key FROM temp.plan)").fetchone()
        return n
