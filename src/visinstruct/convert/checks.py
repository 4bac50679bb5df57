"""What a record must hold before it is written in another format: turns of strings and real image bytes.

A wrong value stops the conversion with the record's file:line (or row) and the problem, before anything
is written through; nothing is coerced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .files import image_extension


def kind(value: Any) -> str:
    """A JSON value's type in words: null, bool, int, float, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    names = {int: "int", float: "float", str: "string", list: "list", dict: "object"}
    return next((name for cls, name in names.items() if isinstance(value, cls)), type(value).__name__)


def check_llava(record: Any, where: str) -> str:
    """A LLaVA record (an object with turns of strings); returns `where` with the record's id, for messages."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: the record must be an object, got {kind(record)}")
    where = f"{where} (id {record.get('id')!r})"
    check_turns(record, where)
    return where


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


def require_image(data: bytes, path: Path, where: str) -> str:
    """The extension of the image format `data` starts with; an empty or non-image file is refused."""
    ext = image_extension(data)
    if ext is None:
        what = "an empty file" if not data else f"starts with {bytes(data[:8])!r}"
        raise UserError(f"{where}: {path} is not a known image format ({what})")
    return ext
