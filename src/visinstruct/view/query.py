"""Search and filters over records: a cheap test on a record's raw JSON bytes first, the exact test after parsing.

- `text`: case-insensitive substring of a turn's text (`conversations[].value` or `messages[].content`);
- `id`: substring of the record's id;
- `source`, `task`, `lang`: equal to the record's value (`source` falls back to `data_source`, `task` to `type`);
- `reason`: a rejects file's `reject_reason` code (the part before `:`) or its `reject_stage`.
The raw test (of one row, or of a whole chunk of rows at once) can only say "cannot match". JSON writes a string
as it is except `"`, `\\`, control characters (short escapes such as `\\n`) and, with some writers, `/` or any
character as `\\uXXXX` (Python's json.dumps escapes every non-ASCII one). So a searched value holding none of
those characters appears among the raw bytes whenever a field holds it, and is looked for there: ASCII text in
the lowered bytes, other text with a caseless bytes pattern (see `caseless`). Where `\\u` escapes are present,
only ASCII values are looked for (and only when no escape stands for an ASCII letter); otherwise, and for a query
with a quote or a slash, the record is parsed and tested.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import orjson

from . import caseless

FILTERS = ("source", "task", "lang", "reason")
FALLBACK = {"source": "data_source", "task": "type"}
_ESCAPABLE = re.compile(r'["\\/\x00-\x1f]')  # characters a JSON writer may escape with a short sequence
_ASCII_ESCAPE = re.compile(rb"\\u(?:00[0-7][0-9a-fA-F]|0130|212[aA])")  # an escape of ASCII, İ or the Kelvin sign
_LOWER_TO_ASCII = ("\u0130".encode(), "\u212a".encode())  # the only non-ASCII letters lowering to ASCII


def field_value(record: Any, name: str) -> str | None:
    """The record's value of a filter field as text, or None when it has none."""
    if not isinstance(record, dict):
        return None
    if name == "reason":
        reason = record.get("reject_reason")
        return reason.split(":", 1)[0].strip() if isinstance(reason, str) else None
    value = record.get(name)
    if value is None and name in FALLBACK:
        value = record.get(FALLBACK[name])
    return None if value is None else str(value)


def turns(record: Any) -> list[tuple[str, str]]:
    """(role, text) of every turn: LLaVA `conversations` (`from`/`value`) or the `messages` layout."""
    if not isinstance(record, dict):
        return []
    found, role, key = record.get("conversations"), "from", "value"
    if not isinstance(found, list):
        found, role, key = record.get("messages"), "role", "content"
    if not isinstance(found, list):
        return []
    return [(str(turn.get(role, "")), turn[key]) for turn in found
            if isinstance(turn, dict) and isinstance(turn.get(key), str)]


def turn_texts(record: Any) -> list[str]:
    """The text of every turn."""
    return [text for _, text in turns(record)]


class _Plan(NamedTuple):
    """What `may_match` looks for: byte strings every match holds (the id text, `"value"` of a field, `"code` of a
    reason), and the lowered text (as ASCII bytes, as a caseless bytes pattern) when raw bytes can be searched."""

    literals: list[bytes]
    folded: str | None = None
    ascii: bytes | None = None
    pattern: re.Pattern[bytes] | None = None


@dataclass(frozen=True)
class Query:
    """What a search asks for; empty fields ask for nothing."""

    text: str = ""
    id: str = ""
    source: str = ""
    task: str = ""
    lang: str = ""
    reason: str = ""

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Query:
        return cls(**{f.name: params.get(f.name, "").strip() for f in fields(cls)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def may_match(self, raw: bytes) -> bool:
        """False only when the raw JSON of a record (or of many) cannot match (see the module docstring)."""
        escaped = b"\\u" in raw
        if escaped and _ASCII_ESCAPE.search(raw):
            return True  # an ASCII letter (or one lowering to ASCII) may hide behind an escape: parse
        plan = self._plan
        for literal in plan.literals:
            if literal not in raw and not (escaped and not literal.isascii()):
                return False
        if plan.folded is None:
            return True
        if plan.ascii is not None:
            if raw.isascii() or not any(mark in raw for mark in _LOWER_TO_ASCII):
                return plan.ascii in raw.lower()  # ASCII text lowers the same as bytes
            return escaped or plan.folded in raw.decode("utf-8", "replace").lower()
        if escaped:
            return True
        if raw.isascii():
            return False  # non-ASCII text cannot be in ASCII bytes without escapes
        if plan.pattern is not None:
            return plan.pattern.search(raw) is not None
        return plan.folded in raw.decode("utf-8", "replace").lower()

    @property
    def ascii_text(self) -> bytes | None:
        """The lowered text query as bytes when it is ASCII and holds nothing a JSON writer escapes."""
        return self._plan.ascii

    @functools.cached_property
    def _plan(self) -> _Plan:
        literals = [self.id.encode()] if self.id else []
        literals += [b'"' + getattr(self, name).encode() + b'"' for name in ("source", "task", "lang")
                     if getattr(self, name)]
        if self.reason:
            literals.append(b'"' + self.reason.encode())
        literals = [literal for literal in literals if not _ESCAPABLE.search(literal.decode().strip('"'))]
        if not self.text or _ESCAPABLE.search(self.text):
            return _Plan(literals)
        folded = self.text.lower()
        if folded.isascii():
            return _Plan(literals, folded, folded.encode())
        return _Plan(literals, folded, None, caseless.pattern(folded))

    def matches(self, record: Any) -> bool:
        """The exact test on a parsed record."""
        if not isinstance(record, dict):
            return not self
        if self.id and self.id not in str(record.get("id", "")):
            return False
        for name in ("source", "task", "lang"):
            wanted = getattr(self, name)
            if wanted and field_value(record, name) != wanted:
                return False
        if self.reason and self.reason not in (field_value(record, "reason"), record.get("reject_stage")):
            return False
        if self.text:
            folded = self.text.lower()
            return any(folded in text.lower() for text in turn_texts(record))
        return True

    def test(self, payload: bytes | Any) -> tuple[bool, Any]:
        """(matches, record) for raw bytes or an already parsed record; bytes that are not JSON never match
        (the caller counts them: `orjson.JSONDecodeError` propagates)."""
        if isinstance(payload, bytes):
            if not self.may_match(payload):
                return False, None
            payload = orjson.loads(payload)
        return self.matches(payload), payload
