"""Referring QA markup: `<st>name<ed> [x1, y1, x2, y2]` (several boxes after a plural), checked or converted.

`native` keeps the markup as the teacher wrote it, once checked; `llava15` removes `<st>`/`<ed>` and
moves every box into the square-padded frame, as LLaVA-1.5 trains on them, with a response-format
instruction after each question. The instructions live here: this project's own (generation, three
languages) and the three SVIT's published LLaVA-1.5 rows use (SVIT conversion). One is drawn per
question by a seed from the record id and the turn, so a conversion gives the same text on every run.
"""

from __future__ import annotations

import hashlib
import re

from .boxes import is_box, pad_boxes_in_text

# Appended to a referring question in the LLaVA-1.5 style, one drawn per turn by a seed.
FORMAT_INSTRUCTIONS = {
    "en": ("Give the bounding box of every object you mention.",
           "Include the coordinates [x1, y1, x2, y2] of each object you refer to.",
           "Answer briefly and mark each object you name with its box.",
           "When you point at something in the image, add its box as [x1, y1, x2, y2]."),
    "ru": ("Укажи рамку каждого объекта, который называешь.",
           "Добавь координаты [x1, y1, x2, y2] для каждого упомянутого объекта.",
           "Ответь кратко и отметь рамкой каждый названный объект.",
           "Когда указываешь на что-то на изображении, добавляй его рамку в виде [x1, y1, x2, y2]."),
    "zh": ("请给出你提到的每个物体的边框。", "请为提到的每个物体附上坐标 [x1, y1, x2, y2]。",
           "请简要回答，并为每个提到的物体标出边框。", "指出图中的物体时，请以 [x1, y1, x2, y2] 的形式附上它的边框。"),
}

# SVIT's `format/llava-v1.5` rows: one of these, sampled per question, after each referring question.
SVIT_INSTRUCTIONS = ("Provide the bounding boxes of the mentioned objects.",
                     "Include the coordinates for each mentioned object.",
                     "Locate the objects with their coordinates.")
# Between a referring question and its SVIT instruction. SVIT's card says only that the instruction is
# appended; a space, as this project appends its own instructions (see README, `convert`).
INSTRUCTION_SEPARATOR = " "


class MarkupError(ValueError):
    """Referring markup that is broken; the message says where."""


def seeded_index(key: str, n: int) -> int:
    """A stable choice in range(n) derived from `key` (same key → same choice on every run)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def pick_instruction(choices: tuple[str, ...], record_id: str, turn: int) -> str:
    """One of `choices` for question `turn` of a record, drawn by a seed from its id and the turn."""
    return choices[seeded_index(f"{record_id}:{turn}", len(choices))]


def format_instruction(lang: str, record_id: str, turn: int) -> str:
    """This project's response-format instruction in `lang` for question `turn` of a record."""
    return pick_instruction(FORMAT_INSTRUCTIONS[lang], record_id, turn)


def svit_instruction(record_id: str, turn: int) -> str:
    """One of SVIT's three response-format instructions for question `turn` of a record."""
    return pick_instruction(SVIT_INSTRUCTIONS, record_id, turn)


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
                raise MarkupError(f"<st> at {open_at} is not closed before the next <st>")
            open_at = tag.start()
        else:
            if open_at is None:
                raise MarkupError(f"<ed> at {tag.start()} has no <st> before it")
            open_at = None
            ends.append(tag)
    if open_at is not None:
        raise MarkupError(f"<st> at {open_at} is never closed with <ed>")
    return ends


def check_markup(text: str) -> int:
    """Raise MarkupError with the reason if the markup is broken; return the number of references."""
    ends = _check_tags(text)
    for end in ends:
        boxes = _BOXES_AFTER.match(text, end.end())
        if not boxes:
            name = text[text.rfind("<st>", 0, end.start()) + 4: end.start()]
            raise MarkupError(f"<st>{name}<ed> is not followed by a box")
        for match in _BRACKETS.finditer(boxes.group()):
            numbers = _numbers(match.group(1))
            if numbers is None or len(numbers) != 4:
                raise MarkupError(f"box {match.group()} does not have 4 numbers")
    for match in _BRACKETS.finditer(text):
        numbers = _numbers(match.group(1))
        if numbers is not None and len(numbers) == 4 and not is_box(numbers):
            raise MarkupError(f"box {match.group()} is not 4 numbers in [0, 1] with x1 <= x2 and y1 <= y2")
    return len(ends)


def check_pairs(pairs: list[tuple[str, str]]) -> None:
    """Every turn's markup is sound and the reply refers to at least one object."""
    if sum(check_markup(q) + check_markup(a) for q, a in pairs) == 0:
        raise MarkupError("no <st>…<ed> object reference with a box in the reply")


def to_llava15(text: str, width: float, height: float, rounding: str = "exact") -> str:
    """Tags removed, boxes in the square-padded frame (`rounding`: `exact` or `svit`, see core.boxes)."""
    return pad_boxes_in_text(text.replace("<st>", "").replace("<ed>", ""), width, height, rounding)
