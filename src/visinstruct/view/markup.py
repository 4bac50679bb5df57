"""A turn's text cut into pieces the page renders: plain text, `<image>` chips, `<st>phrase<ed> [box]` references
and bare `[x1, y1, x2, y2]` boxes (LLaVA-1.5's plain-text form), with the record's boxes collected for drawing.

Only 4-number lists in [0, 1] with x1 <= x2 and y1 <= y2 count as boxes (core.boxes.is_box); other bracketed
numbers stay text. Which frame the numbers are in (the image's own, or LLaVA-1.5's square-padded one) is not in
the text: `frame_hint` guesses (markup → native, bare boxes → padded) and the page lets the user switch.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.boxes import BOX_PATTERN, is_box
from ..core.records import IMAGE_TOKEN

MAX_CHARS = 100_000  # longer turns are cut for display (the page says how much was left out)
_NUMBER = r"\s*(?:\d+(?:\.\d+)?|\.\d+)\s*"
_BOX = r"\[" + ",".join([_NUMBER] * 4) + r"\]"  # core.boxes.BOX_PATTERN without its groups
_JOINER = r"\s*(?:,|and|и|和|、)?\s*"
_PIECE = re.compile(rf"(?P<image>{re.escape(IMAGE_TOKEN)})"
                    rf"|<st>(?P<phrase>.*?)<ed>(?P<boxes>(?:{_JOINER}{_BOX})*)"
                    rf"|(?P<box>{_BOX})", re.S)


def _numbers(text: str) -> list[float]:
    match = BOX_PATTERN.fullmatch(text.strip())
    return [float(v) for v in match.groups()] if match else []


def segments(text: str, boxes: list[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
    """The pieces of one turn; every box found is appended to `boxes` (its index is its number on the page)."""
    shown = text[:MAX_CHARS]
    pieces: list[dict[str, Any]] = []
    position = 0
    for match in _PIECE.finditer(shown):
        if match.start() > position:
            pieces.append({"t": "text", "v": shown[position:match.start()]})
        position = match.end()
        if match.group("image"):
            pieces.append({"t": "image"})
        elif match.group("box") is not None:
            pieces.append(_bare_box(match.group("box"), boxes, turn))
        else:
            pieces.append(_reference(match.group("phrase"), match.group("boxes"), boxes, turn))
    if position < len(shown):
        pieces.append({"t": "text", "v": shown[position:]})
    if len(text) > MAX_CHARS:
        pieces.append({"t": "cut", "v": f"… {len(text) - MAX_CHARS:,} more characters not shown"})
    return _merged(pieces)


def _merged(pieces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neighbouring text pieces joined (a bracketed list that is not a box is text like the rest)."""
    merged: list[dict[str, Any]] = []
    for piece in pieces:
        if piece["t"] == "text" and merged and merged[-1]["t"] == "text":
            merged[-1] = {"t": "text", "v": merged[-1]["v"] + piece["v"]}
        else:
            merged.append(piece)
    return merged


def _bare_box(raw: str, boxes: list[dict[str, Any]], turn: int) -> dict[str, Any]:
    values = _numbers(raw)
    if not is_box(values):
        return {"t": "text", "v": raw}
    boxes.append({"xyxy": values, "label": f"#{len(boxes) + 1}", "turn": turn})
    return {"t": "box", "v": raw, "box": len(boxes) - 1}


def _reference(phrase: str, tail: str, boxes: list[dict[str, Any]], turn: int) -> dict[str, Any]:
    """`<st>phrase<ed>` and the boxes after it; a box that is not one is kept as text of the tail."""
    chips: list[dict[str, Any]] = []
    position = 0
    for match in BOX_PATTERN.finditer(tail):
        if match.start() > position:
            chips.append({"t": "text", "v": tail[position:match.start()]})
        position = match.end()
        values = [float(v) for v in match.groups()]
        if is_box(values):
            boxes.append({"xyxy": values, "label": phrase.strip() or f"#{len(boxes) + 1}", "turn": turn})
            chips.append({"t": "box", "v": match.group(), "box": len(boxes) - 1})
        else:
            chips.append({"t": "text", "v": match.group()})
    return {"t": "ref", "v": phrase, "boxes": _merged(chips)}


def frame_hint(texts: list[str]) -> str:
    """`native` when the record uses `<st>…<ed>` markup (SVIT's native rows), else `padded` (LLaVA-1.5 text)."""
    return "native" if any("<st>" in text for text in texts) else "padded"
