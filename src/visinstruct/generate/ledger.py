"""A SQLite ledger of generation units: what was asked, what came back, and how it ended.

Replies are committed as they arrive (WAL journal; the online runner groups those of up to 0.1 s in one
commit), so a killed run loses at most that much, and a re-run skips every unit whose reply is already here.

Compact layout (format 2): the part of a request that many units share — model, sampling, system prompt
and few-shot examples — is stored once in `prefixes`; a unit row holds the prefix id, its seed and its last
user turn (the scene text, or the VLM image placeholder), zlib-compressed with the prefix as a preset
dictionary. The request is rebuilt exactly (`request()`), so its hash is the unit key again. A ledger of the
first format (one full request per row) is converted in place when it is opened for writing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import sqlite3
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import UserError
from ..core.io import shard_name

FORMAT = "2"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS prefixes (id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, head TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    unit_id TEXT NOT NULL,
    status TEXT NOT NULL,            -- answered | failed | submitted (in a batch, waiting)
    prefix INTEGER,                  -- prefixes.id (NULL: an answer copied from a ledger shard, counted there)
    last BLOB,                       -- the last user turn, zlib with the prefix as dictionary
    seed INTEGER,
    reply TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER,           -- prompt tokens served from the server's prefix cache (when it says)
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    out_end INTEGER,                 -- .jsonl output: the file's size once this unit's lines were appended
    records INTEGER,                 -- ... and how many lines they were
    batch TEXT                       -- the batch's input file id while the unit waits in it (batches row)
)""",
    # generate --batch (generate/batch.py): one row per uploaded batch input file; `id` is the batch id once
    # the batch is created; status: uploaded | the server's status | collected; detail: JSON (budget estimate,
    # last request counts)
    "CREATE TABLE IF NOT EXISTS batches (input_file TEXT PRIMARY KEY, id TEXT, status TEXT NOT NULL, "
    "units INTEGER NOT NULL, created REAL NOT NULL, detail TEXT)",
)
_COLUMNS = ("key, status, reply, finish_reason, prompt_tokens, completion_tokens, reason, cached_tokens, out_end, "
            "records")
BATCH_UPLOADED, BATCH_COLLECTED = "uploaded", "collected"  # batches.status around the server's own statuses
CHUNK = 500  # keys per membership query (SQLite allows 32,766 variables; small batches keep latency flat)


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
    cached_tokens: int | None = None
    out_end: int | None = None
    records: int | None = None


def split_request(request: dict[str, Any]) -> tuple[dict[str, Any], Any, int | None]:
    """(shared head, last user turn's content, seed): the head is everything but the last message and seed."""
    *messages, last = request["messages"]
    head = {k: v for k, v in request.items() if k not in ("messages", "seed")}
    head["messages"] = messages
    return head, last["content"], request.get("seed")


def join_request(head: dict[str, Any], last: Any, seed: int | None) -> dict[str, Any]:
    """The request `split_request` took apart (same key)."""
    request = {k: v for k, v in head.items() if k != "messages"}
    request["messages"] = [*head["messages"], {"role": "user", "content": last}]
    if seed is not None:
        request["seed"] = seed
    return request


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
            old = _columns(self.db, "units")
            if "request" in old:
                _upgrade(self.db, path)
            for statement in _SCHEMA:
                self.db.execute(statement)
            self.db.execute("INSERT OR IGNORE INTO info VALUES ('format', ?)", (FORMAT,))
        except sqlite3.Error as exc:
            self.db.close()
            raise UserError(f"{path}: not a usable ledger ({exc}); is --ledger another file?") from None
        self._prefixes: dict[str, tuple[int, Any]] = {}

    # ---- writing ------------------------------------------------------------------------------------------
    def _prefix(self, head: dict[str, Any]) -> tuple[int, Any]:
        """(id, a compressor primed with the head as its dictionary) of a request head, stored once.

        Priming costs ~100 µs per unit, copying a primed compressor ~19 µs; memLevel 4 keeps its state small
        enough to be copied without fresh pages (the scene texts are short: the bytes out are the same)."""
        body = orjson.dumps(head, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(body).hexdigest()[:32]
        found = self._prefixes.get(digest)
        if found is None:
            self.db.execute("INSERT OR IGNORE INTO prefixes (hash, head) VALUES (?, ?)", (digest, body.decode()))
            (pid,) = self.db.execute("SELECT id FROM prefixes WHERE hash = ?", (digest,)).fetchone()
            found = self._prefixes[digest] = (pid, zlib.compressobj(6, zlib.DEFLATED, 15, 4, zdict=body[-32768:]))
        return found

    def _pack(self, request: dict[str, Any]) -> tuple[int, bytes, int | None]:
        head, last, seed = split_request(request)
        pid, primed = self._prefix(head)
        packer = primed.copy()
        return pid, packer.compress(orjson.dumps(last)) + packer.flush(), seed

    def hold(self) -> None:
        """Let the next writes join one open transaction (until `commit`): one commit for many answers."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def commit(self) -> None:
        """Commit what `hold` kept open (nothing when no transaction is open)."""
        if self.db.in_transaction:
            self._write("COMMIT", ())

    def _write(self, sql: str, params: tuple) -> None:
        """One statement that writes; a full disk or an I/O error is a one-line UserError."""
        try:
            self.db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise UserError(f"{self.path}: cannot write the ledger ({exc}); what was committed before is kept: "
                            "re-run to continue") from None

    def record_answer(self, key: str, unit_id: str, request: dict, reply: str, finish_reason: str | None,
                      prompt_tokens: int, completion_tokens: int, attempts: int,
                      cached_tokens: int | None = None, *, out: tuple[int, int] | None = None) -> None:
        """Store a reply; committed before this returns unless `hold` opened a transaction. `out`: (the
        .jsonl's size once this unit's lines are appended, how many lines): they are written after the commit."""
        self._upsert(key, unit_id, "answered", request, reply, finish_reason,
                     prompt_tokens, completion_tokens, cached_tokens, None, attempts, out or (None, None))

    def record_failure(self, key: str, unit_id: str, request: dict, reason: str, attempts: int) -> None:
        """Store a unit whose retries ran out (a later run tries it again)."""
        self._upsert(key, unit_id, "failed", request, None, None, 0, 0, None, reason, attempts, (None, None))

    def _upsert(self, key: str, unit_id: str, status: str, request: dict, reply: str | None,
                finish_reason: str | None, prompt_tokens: int, completion_tokens: int, cached: int | None,
                reason: str | None, attempts: int, out: tuple[int | None, int | None]) -> None:
        pid, last, seed = self._pack(request)
        self._write(
            "INSERT OR REPLACE INTO units (key, unit_id, status, prefix, last, seed, reply, finish_reason, "
            "prompt_tokens, completion_tokens, cached_tokens, reason, attempts, updated, out_end, records) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, unit_id, status, pid, last, seed, reply, finish_reason, prompt_tokens, completion_tokens,
             cached, reason, attempts, time.time(), *out))

    def copy_answer(self, unit_id: str, entry: Entry) -> None:
        """Bring a shard's answer into this ledger (reply and usage; its request stays in the shard)."""
        self.db.execute(
            "INSERT INTO units (key, unit_id, status, reply, finish_reason, prompt_tokens, completion_tokens, "
            "cached_tokens, attempts, updated) VALUES (?, ?, 'answered', ?, ?, ?, ?, ?, 1, ?) "
            "ON CONFLICT (key) DO UPDATE SET status = 'answered', reply = excluded.reply, "
            "finish_reason = excluded.finish_reason, prompt_tokens = excluded.prompt_tokens, "
            "completion_tokens = excluded.completion_tokens, cached_tokens = excluded.cached_tokens "
            "WHERE status != 'answered'",
            (entry.key, unit_id, entry.reply, entry.finish_reason, entry.prompt_tokens, entry.completion_tokens,
             entry.cached_tokens, time.time()))

    def mark_written(self, key: str, end: int, records: int) -> None:
        """The unit's `records` lines are in the .jsonl output, which was `end` bytes long after them."""
        self.db.execute("UPDATE units SET out_end = ?, records = ? WHERE key = ?", (end, records, key))

    def written_end(self, within: int | None = None) -> int:
        """The output size the ledger vouches for (lines are appended in order, so every byte up to it belongs
        to a unit marked written); `within`: the largest such size not beyond a file of that size."""
        if within is None:
            (end,) = self.db.execute("SELECT MAX(out_end) FROM units").fetchone()
        else:
            (end,) = self.db.execute("SELECT MAX(out_end) FROM units WHERE out_end <= ?", (within,)).fetchone()
        return end or 0

    def forget_written(self, beyond: int = -1) -> None:
        """Units whose lines end beyond this size are no longer in the output (all of them by default)."""
        self.db.execute("UPDATE units SET out_end = NULL, records = NULL WHERE out_end > ?", (beyond,))

    def set_info(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (name, value))

    def info(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM info WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    # ---- reading ------------------------------------------------------------------------------------------
    def answered_keys(self) -> set[str]:
        """Keys whose reply is stored (a whole ledger shard: Ray actors hold their shard's set)."""
        return {row[0] for row in self.db.execute("SELECT key FROM units WHERE status = 'answered'")}

    def answered_among(self, keys: list[str]) -> set[str]:
        """Which of these keys are answered (one query per CHUNK keys: no set of the whole ledger)."""
        return _among(self.db, keys, "status = 'answered'")

    def get(self, key: str) -> Entry | None:
        """The stored outcome of one unit, or None if it was never tried."""
        row = self.db.execute(f"SELECT {_COLUMNS} FROM units WHERE key = ?", (key,)).fetchone()
        return Entry(*row) if row else None

    def entries(self, keys: list[str]) -> dict[str, Entry]:
        """The stored outcomes of these keys (absent keys left out)."""
        return {row[0]: Entry(*row) for row in rows_among(self.db, _COLUMNS, keys)}

    def keys_among(self, keys: list[str], status: str) -> set[str]:
        """Which of these keys have this status (one query per CHUNK keys)."""
        return _among(self.db, keys, "status = ?", (status,))

    def request(self, key: str) -> dict[str, Any] | None:
        """The unit's request, rebuilt from its prefix and last turn (None: not stored)."""
        row = self.db.execute("SELECT prefix, last, seed FROM units WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] is None:
            return None
        pid, last, seed = row
        (head,) = self.db.execute("SELECT head FROM prefixes WHERE id = ?", (pid,)).fetchone()
        body = head.encode()
        unpacker = zlib.decompressobj(zdict=body[-32768:])
        return join_request(orjson.loads(body), orjson.loads(unpacker.decompress(last) + unpacker.flush()), seed)

    def spent_tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens of every answered unit in this ledger (answers copied from a shard are
        counted in the shard)."""
        row = self.db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM units "
                              "WHERE status = 'answered' AND prefix IS NOT NULL").fetchone()  # copies: in shards
        return row[0] or 0, row[1] or 0

    # ---- batches (generate --batch) ---------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (not inside `hold`: batch mode never holds)."""
        assert not self.db.in_transaction, "a ledger transaction inside another"
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def open_batches(self, created: bool | None = None) -> list[tuple[str, str | None, str, str]]:
        """(input file, batch id, status, detail) of the batches not collected, oldest first; `created`: only
        those with (True) or without (False) a batch id."""
        where = {None: "1", True: "id IS NOT NULL", False: "id IS NULL"}[created]
        return self.db.execute(f"SELECT input_file, id, status, detail FROM batches WHERE status != ? AND {where} "
                               "ORDER BY created", (BATCH_COLLECTED,)).fetchall()

    def add_batch(self, input_file: str, keys: list[str], estimate: tuple[int, int], reason: str) -> None:
        """In ONE transaction: the uploaded file's batch row, and its units marked as waiting in it."""
        detail = orjson.dumps({"estimate": list(estimate)}).decode()
        with self.transaction():
            self.db.execute("INSERT INTO batches (input_file, id, status, units, created, detail) "
                            "VALUES (?, NULL, ?, ?, ?, ?)",
                            (input_file, BATCH_UPLOADED, len(keys), time.time(), detail))
            for part in chunks(keys, CHUNK):
                self.db.execute(f"UPDATE units SET status = 'submitted', batch = ?, reason = ? "
                                f"WHERE key IN ({','.join('?' * len(part))})", (input_file, reason, *part))

    def batch_state(self, input_file: str, status: str, batch_id: str | None = None,
                    counts: dict[str, Any] | None = None) -> None:
        """Note a batch's status (and its id once created, its request counts when seen)."""
        self.db.execute("UPDATE batches SET id = COALESCE(?, id), status = ?, "
                        "detail = json_set(detail, '$.request_counts', json(?)) WHERE input_file = ?",
                        (batch_id, status, orjson.dumps(counts or {}).decode(), input_file))

    def end_batch(self, input_file: str, reason: str) -> tuple[int, tuple[int, int]]:
        """In ONE transaction: the batch collected, and its units still waiting failed with `reason` (a later
        run submits them again); (how many, the batch's token estimate)."""
        with self.transaction():
            missed = self.db.execute("UPDATE units SET status = 'failed', batch = NULL, updated = ?, reason = ? "
                                     "WHERE status = 'submitted' AND batch = ?",
                                     (time.time(), reason, input_file)).rowcount
            self.db.execute("UPDATE batches SET status = ? WHERE input_file = ?", (BATCH_COLLECTED, input_file))
            (detail,) = self.db.execute("SELECT detail FROM batches WHERE input_file = ?", (input_file,)).fetchone()
        prompt, completion = orjson.loads(detail)["estimate"]
        return missed, (prompt, completion)

    def unit_state(self, key: str) -> tuple[str, str, str | None] | None:
        """(unit id, status, the input file of the batch it waits in) of a stored unit."""
        return self.db.execute("SELECT unit_id, status, batch FROM units WHERE key = ?", (key,)).fetchone()

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def rows_among(db: sqlite3.Connection, columns: str, keys: list[str], where: str = "1",
               params: tuple = ()) -> Iterator[tuple]:
    """`columns` of the units with these keys (and `where`), one query per CHUNK keys."""
    for start in range(0, len(keys), CHUNK):
        part = keys[start:start + CHUNK]
        marks = ",".join("?" * len(part))
        yield from db.execute(f"SELECT {columns} FROM units WHERE {where} AND key IN ({marks})", (*params, *part))


def _among(db: sqlite3.Connection, keys: list[str], where: str, params: tuple = ()) -> set[str]:
    return {row[0] for row in rows_among(db, "key", keys, where, params)}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Convert a first-format ledger (a full request per row) to the compact one, in one transaction, then
    VACUUM it."""
    print(f"generate: converting {path} to the compact ledger format (once)", file=sys.stderr, flush=True)
    before = _size(path)
    ledger = Ledger.__new__(Ledger)  # the open connection, before the compact schema exists
    ledger.db, ledger.path, ledger._prefixes = db, path, {}
    with ledger.transaction():
        db.execute("ALTER TABLE units RENAME TO units_v1")
        for statement in _SCHEMA:
            db.execute(statement)
        rows = db.execute("SELECT key, unit_id, status, request, reply, finish_reason, prompt_tokens, "
                          "completion_tokens, reason, attempts, updated FROM units_v1")
        for key, unit_id, status, request, reply, finish, prompt, completion, reason, attempts, updated in rows:
            pid, last, seed = ledger._pack(orjson.loads(request))
            db.execute("INSERT INTO units (key, unit_id, status, prefix, last, seed, reply, finish_reason, "
                       "prompt_tokens, completion_tokens, reason, attempts, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (key, unit_id, status, pid, last, seed, reply, finish, prompt, completion, reason, attempts,
                        updated))
        db.execute("DROP TABLE units_v1")
    try:  # give back the pages the full requests took (VACUUM copies what is left, once)
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:  # converted already: the file just stays larger than it needs to be
        print(f"warning: {path}: converted, but not compacted ({exc}); `sqlite3 {path} VACUUM` does it later",
              file=sys.stderr, flush=True)
        return
    print(f"generate: {path} converted: {before / 1e6:,.1f} MB → {_size(path) / 1e6:,.1f} MB",
          file=sys.stderr, flush=True)


def _size(path: Path) -> int:
    """Bytes of a SQLite file with its WAL."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def shard_path(ledger: Path, rank: int, shards: int) -> Path:
    """`<ledger>.shard-00003-of-00004.sqlite`, beside the main ledger."""
    return ledger.with_name(shard_name(ledger.name + ".shard", rank, shards, ".sqlite"))


def ledger_paths(ledger: Path) -> list[Path]:
    """The main ledger (if any) and every shard file beside it, whatever the number of shards it was run with."""
    shards = sorted(ledger.parent.glob(glob.escape(ledger.name) + ".shard-*-of-*.sqlite"))
    return ([ledger] if ledger.exists() else []) + shards


class ReadOnly:
    """Existing ledger files opened read-only (a dry run creates and converts nothing)."""

    def __init__(self, paths: list[Path]) -> None:
        self.dbs = []
        for path in paths:
            try:
                self.dbs.append(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True))
                self.dbs[-1].execute("SELECT key, status FROM units LIMIT 1")
            except sqlite3.Error as exc:
                self.close()
                raise UserError(f"{path}: not a usable ledger ({exc}); is --ledger another file?") from None

    def answered_among(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for db in self.dbs:
            found |= _among(db, keys, "status = 'answered'")
        return found

    def close(self) -> None:
        for db in self.dbs:
            db.close()


def answered_in(paths: list[Path]) -> set[str]:
    """Keys answered in any of these ledger files (a whole set: for small ledgers and tests)."""
    answered: set[str] = set()
    for path in paths:
        ledger = Ledger(path)
        try:
            answered |= ledger.answered_keys()
        finally:
            ledger.close()
    return answered


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to `size` items, in order."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
