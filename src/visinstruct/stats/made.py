"""How the data was made, for the card: the teacher and its units from a `generate` ledger (SQLite, read only;
requests hold no API key, and only the model and sampling settings are read from them) and the per-stage
counts of a `filter` report (core/report.py's shape)."""

from __future__ import annotations

import glob
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.io import read_json

# format 1 stored each unit's request; format 2 stores the shared part once in `prefixes` (rows without a
# prefix are answers copied from a Ray shard file, counted in that file)
_REQUEST = {1: ("request", "units"), 2: ("head", "units JOIN prefixes ON prefixes.id = units.prefix")}
_BY_MODEL = ("SELECT json_extract({col}, '$.model'), status, COUNT(*), SUM(prompt_tokens), "
             "SUM(completion_tokens) FROM {src} GROUP BY 1, 2 ORDER BY 1, 2")
_SAMPLING = ("SELECT json_extract({col}, '$.temperature'), json_extract({col}, '$.top_p'), "
             "json_extract({col}, '$.max_tokens'), COUNT(*) FROM {src} GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 10")


def ledger_files(path: Path) -> list[Path]:
    """The ledger and the shard files a Ray run writes beside it."""
    shards = sorted(path.parent.glob(glob.escape(path.name) + ".shard-*-of-*.sqlite"))
    files = ([path] if path.is_file() else []) + shards
    if not files:
        raise UserError(f"{path}: ledger not found (--ledger)")
    return files


def _query(path: Path, sql: str) -> list[tuple]:
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UserError(f"{path}: not a visinstruct generate ledger ({exc})") from None


def read_ledger(path: Path) -> dict[str, Any]:
    """Per teacher model: units answered and failed, prompt and completion tokens; the sampling settings used."""
    models: dict[str, dict[str, int]] = {}
    sampling: dict[tuple, int] = {}
    for file in ledger_files(path):
        old = any(row[1] == "request" for row in _query(file, "PRAGMA table_info(units)"))
        col, src = _REQUEST[1 if old else 2]
        for model, status, units, prompt, completion in _query(file, _BY_MODEL.format(col=col, src=src)):
            entry = models.setdefault(str(model), {"answered": 0, "failed": 0, "prompt_tokens": 0,
                                                   "completion_tokens": 0})
            entry[status if status in ("answered", "failed") else "failed"] += units
            entry["prompt_tokens"] += prompt or 0
            entry["completion_tokens"] += completion or 0
        for temperature, top_p, max_tokens, units in _query(file, _SAMPLING.format(col=col, src=src)):
            key = (temperature, top_p, max_tokens)
            sampling[key] = sampling.get(key, 0) + units
    return {"file": str(path), "teachers": [{"model": m, **counts} for m, counts in models.items()],
            "sampling": [{"temperature": t, "top_p": p, "max_tokens": mt, "units": n}
                         for (t, p, mt), n in sorted(sampling.items(), key=lambda kv: -kv[1])]}


def read_filter_report(path: Path) -> dict[str, Any]:
    """The stage counts of a `filter --report` file: in, out, rejected and the reasons of each stage."""
    report = read_json(path)
    steps = report.get("steps") if isinstance(report, dict) else None
    if not isinstance(steps, dict) or not all(isinstance(s, dict) for s in steps.values()):
        raise UserError(f"{path}: not a visinstruct report (no 'steps' object of stage counts; --filter-report)")
    stages = [{"stage": name, "in": step.get("in", 0), "out": step.get("out", 0),
               "rejected": step.get("rejected", 0), "by_reason": step.get("rejected_by_reason") or {}}
              for name, step in steps.items()]
    return {"file": str(path), "stage": report.get("stage"), "records_in": report.get("records_in"),
            "records_out": report.get("records_out"), "rejected": report.get("rejected"), "stages": stages}
