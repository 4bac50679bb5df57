"""A SQLite ledger of generation units: what was asked, what came back, and how it ended.

Each reply is committed as soon as it arrives (WAL journal), so a killed run loses nothing that
was answered, and a re-run skips every unit whose reply is already here.
"""

from __future__ import annotations

import glob
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..core.errors import UserError
from ..core.io import shard_name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    unit_id TEXT NOT NULL,
    status TEXT NOT NULL,            -- answered | failed
    request TEXT NOT NULL,
    reply TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
)
"""


@dataclass
class Entry:
    """One unit as the ledger holds it."""

    key: str
    status: str
    reply: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    reason: str | None


class Ledger:
    """Unit outcomes keyed by request hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            raise UserError(f"{path}: the ledger path is a folder; give a file path (--ledger)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"{path}: cannot open the ledger ({exc})") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            self.db.close()
            raise UserError(f"{path}: not a usable ledger ({exc}); is --ledger another file?") from None

    def answered_keys(self) -> set[str]:
        """Keys whose reply is stored: these are never requested again."""
        return {row[0] for row in self.db.execute("SELECT key FROM units WHERE status = 'answered'")}

    def record_answer(self, key: str, unit_id: str, request: dict, reply: str, finish_reason: str | None,
                      prompt_tokens: int, completion_tokens: int, attempts: int) -> None:
        """Store a reply; committed before this returns."""
        self._upsert(key, unit_id, "answered", request, reply, finish_reason,
                     prompt_tokens, completion_tokens, None, attempts)

    def record_failure(self, key: str, unit_id: str, request: dict, reason: str, attempts: int) -> None:
        """Store a unit whose retries ran out (a later run tries it again)."""
        self._upsert(key, unit_id, "failed", request, None, None, 0, 0, reason, attempts)

    def _upsert(self, key: str, unit_id: str, status: str, request: dict, reply: str | None,
                finish_reason: str | None, prompt_tokens: int, completion_tokens: int,
                reason: str | None, attempts: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, unit_id, status, orjson.dumps(request).decode(), reply, finish_reason,
             prompt_tokens, completion_tokens, reason, attempts, time.time()),
        )

    def get(self, key: str) -> Entry | None:
        """The stored outcome of one unit, or None if it was never tried."""
        row = self.db.execute(
            "SELECT key, status, reply, finish_reason, prompt_tokens, completion_tokens, reason "
            "FROM units WHERE key = ?", (key,)).fetchone()
        return Entry(*row) if row else None

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def shard_path(ledger: Path, rank: int, shards: int) -> Path:
    """`<ledger>.shard-00003-of-00004.sqlite`, beside the main ledger."""
    return ledger.with_name(shard_name(ledger.name + ".shard", rank, shards, ".sqlite"))


def ledger_paths(ledger: Path) -> list[Path]:
    """The main ledger (if any) and every shard file beside it, whatever the number of shards it was run with."""
    shards = sorted(ledger.parent.glob(glob.escape(ledger.name) + ".shard-*-of-*.sqlite"))
    return ([ledger] if ledger.exists() else []) + shards


def answered_in(paths: list[Path]) -> set[str]:
    """Keys answered in any of these ledger files."""
    answered: set[str] = set()
    for path in paths:
        ledger = Ledger(path)
        try:
            answered |= ledger.answered_keys()
        finally:
            ledger.close()
    return answered
