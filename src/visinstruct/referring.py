"""Referring QA markup: `<st>name<ed> [x1, y1, x2, y2]` (several boxes after a plural), checked or converted.

`native` keeps the markup as the teacher wrote it, once checked; `llava15` removes `<st>`/`<ed>` and
moves every box into the square-padded frame, as LLaVA-1.5 trains on them.
"""

from __future__ import annotations

import re

from .boxes import is_box, pad_boxes_in_text
from .parse import ReplyParseError

_TAG = re.compile(r"<st>|<ed>")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_BOXES_AFTER = re.compile(r"\s*\[[^\[\]]*\](?:\s*(?:,|and|и|和|、)?\s*\[[^\[\]]*\])*")
_NUMBER = re.compile(r"^\s*-?(?:\d+(?:\.\d+)?|\.\d+)\s*$")


def _numbers(inner: str) -> list[float] | None:
    parts = inner.split(",")
    if not all(_NUMBER.match(p) for p in parts):
        return None
    return [float(p) for p in parts]


def _check_tags(text: str) -> list[re.Match]:
    """The `<ed>` matches, once every `<st>` is closed before the next one opens."""
    ends, open_at = [], None
    for tag in _TAG.finditer(text):
        if tag.group() == "<st>":
            if open_at is not None:
                raise ReplyParseError(f"<st> at {open_at} is not closed before the next <st>")
            open_at = tag.start()
        else:
            if open_at is None:
                raise ReplyParseError(f"<ed> at {tag.start()} has no <st> before it")
            open_at = None
            ends.append(tag)
    if open_at is not None:
        raise ReplyParseError(f"<st> at {open_at} is never closed with <ed>")
    return ends


def check_markup(text: str) -> int:
    """Raise ReplyParseError with the reason if the markup is broken; return the number of references."""
    ends = _check_tags(text)
    for end in ends:
        boxes = _BOXES_AFTER.match(text, end.end())
        if not boxes:
            name = text[text.rfind("<st>", 0, end.start()) + 4: end.start()]
            raise ReplyParseError(f"<st>{name}<ed> is not followed by a box")
        for match in _BRACKETS.finditer(boxes.group()):
            numbers = _numbers(match.group(1))
            if numbers is None or len(numbers) != 4:
                raise ReplyParseError(f"box {match.group()} does not have 4 numbers")
    for match in _BRACKETS.finditer(text):
        numbers = _numbers(match.group(1))
        if numbers is not None and len(numbers) == 4 and not is_box(numbers):
            raise ReplyParseError(f"box {match.group()} is not 4 numbers in [0, 1] with x1 <= x2 and y1 <= y2")
    return len(ends)


def check_pairs(pairs: list[tuple[str, str]]) -> None:
    """Every turn's markup is sound and the reply refers to at least one object."""
    if sum(check_markup(q) + check_markup(a) for q, a in pairs) == 0:
        raise ReplyParseError("no <st>…<ed> object reference with a box in the reply")


def to_llava15(text: str, width: float, height: float) -> str:
    """Tags removed, boxes in the square-padded frame."""
    return pad_boxes_in_text(text.replace("<st>", "").replace("<ed>", ""), width, height)
