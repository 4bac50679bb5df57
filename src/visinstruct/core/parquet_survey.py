"""The pass before parquet shards are written: every LLaVA record read once, before anything is written, to
learn the columns (extra keys and one type each), whether any record has several images, the rows of each
shard (from a ShardPlan) and the value counts a dataset card shows. Memory: the keys, their types and at most
CARD_VALUES counted values per card key; nothing per record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .shards import ShardPlan

CARD_KEYS = ("task", "lang", "source")  # counted in the survey for a dataset card
CARD_VALUES = 1000  # distinct values counted per key; later new values are not


def kind(value: Any) -> str:
    """A JSON value's type in words: null, bool, int, float, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    names = {int: "int", float: "float", str: "string", list: "list", dict: "object"}
    return next((name for cls, name in names.items() if isinstance(value, cls)), type(value).__name__)


def check_turns(record: dict[str, Any], where: str) -> None:
    """`conversations` is a list of {"from": str, "value": str} objects."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise UserError(f"{where}: 'conversations' must be a list, got {kind(turns)}")
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise UserError(f"{where}: conversations[{n}] must be an object, got {kind(turn)}")
        for key in ("from", "value"):
            if not isinstance(turn.get(key), str):
                raise UserError(f"{where}: conversations[{n}].{key} must be a string, got {kind(turn.get(key))}")


@dataclass
class Survey:
    """How many records, which extra keys (and the type of each), whether any has several images, the rows
    of each shard, and value counts of the card keys. `add` each record, then `finish`."""

    count: int = 0
    extras: tuple[str, ...] = ()
    multi_image: bool = False
    kinds: dict[str, str] | None = None  # extra key → one JSON type (int and float together: number)
    shards: list[int] = field(default_factory=list)  # rows per shard (from the ShardPlan)
    with_images: int = 0  # records with at least one image
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # CARD_KEYS → value → records
    _extras: dict[str, None] = field(default_factory=dict, repr=False)
    _seen: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # key → (type, first where)

    def add(self, record: Any, where: str) -> None:
        """Check one record's shape and learn its columns."""
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise UserError(f"{where}: not a LLaVA record (needs a 'conversations' list)")
        self.count += 1
        self.multi_image |= isinstance(record.get("image"), list)
        self.with_images += record.get("image") not in (None, [])
        _count_card_keys(self.counts, record)
        for key, value in record.items():
            if key not in ("id", "image", "conversations"):
                self._extras.setdefault(key)
                _merge_kind(key, self._seen, value, where)

    def finish(self, plan: ShardPlan | None = None) -> Survey:
        """Settle the columns and the shards (all rows in one shard without a plan)."""
        self.extras = tuple(self._extras)
        self.kinds = {key: first for key, (first, _) in self._seen.items()}
        self.shards = plan.finish() if plan is not None else [self.count]
        return self


def _merge_kind(key: str, seen: dict[str, tuple[str, str]], value: Any, where: str) -> None:
    """Record the type of `value` under `key`; a second, different type is refused (a column has one)."""
    found = kind(value)
    if found == "null":
        return
    if key not in seen:
        seen[key] = (found, where)
        return
    first, first_where = seen[key]
    if found == first or (found in ("int", "float") and first == "number"):
        return
    if {found, first} == {"int", "float"}:
        seen[key] = ("number", first_where)
        return
    raise UserError(f"{where}: key {key!r} is {found} here but {first} at {first_where}; "
                    "a parquet column holds one type")


def _count_card_keys(counts: dict[str, dict[str, int]], record: dict[str, Any]) -> None:
    for key in CARD_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            seen = counts.setdefault(key, {})
            if value in seen or len(seen) < CARD_VALUES:
                seen[value] = seen.get(value, 0) + 1
