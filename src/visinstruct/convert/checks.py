"""What a record must hold before it is written in another format: turns of strings (the image bytes are
checked by core.image_format).

A wrong value stops the conversion with the record's file:line (or row) and the problem, before anything
is written through; nothing is coerced.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UserError
from ..core.parquet_survey import check_turns, kind


def check_llava(record: Any, where: str) -> str:
    """A LLaVA record (an object with turns of strings); returns `where` with the record's id, for messages."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: the record must be an object, got {kind(record)}")
    where = f"{where} (id {record.get('id')!r})"
    check_turns(record, where)
    return where
