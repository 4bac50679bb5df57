"""Boxes in answers checked against the annotated boxes, in the frame the record's boxes are in.

`native`: boxes normalized to the image itself (`<st>obj<ed> [x1, y1, x2, y2]` markup, as `generate` and SVIT
write them); `llava15`: boxes in LLaVA-1.5's square-padded frame (`convert --from svit`, `generate
--referring-style llava15`: no tags). `auto` takes native for a record with `<st>` tags, llava15 otherwise.
The annotated boxes are moved into the padded frame for the comparison, which needs the image's size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.boxes import BOX_PATTERN, format_box, is_box, pad_box

if TYPE_CHECKING:
    from .annotations import Facts

FRAMES = ("auto", "native", "llava15")
_BETWEEN = re.compile(r"^(?:\s*\[[^\[\]]*\]\s*(?:,|and|и|和|、)?)*\s*$")


@dataclass(slots=True)
class AnswerBox:
    """A box found in an answer, with its text and the `<st>name<ed>` it belongs to (empty when none)."""

    box: list[float]
    text: str
    name: str


def _name_before(text: str, at: int) -> str:
    """The `<st>name<ed>` right before position `at` (only boxes and separators between), else ''."""
    end = text.rfind("<ed>", 0, at)
    if end < 0 or not _BETWEEN.match(text[end + 4:at]):
        return ""
    start = text.rfind("<st>", 0, end)
    return text[start + 4:end].strip() if start >= 0 else ""


def answer_boxes(text: str) -> list[AnswerBox]:
    """Every `[x1, y1, x2, y2]` box in [0, 1] in an answer, in order."""
    found = []
    for match in BOX_PATTERN.finditer(text):
        values = [float(v) for v in match.groups()]
        if is_box(values):
            found.append(AnswerBox(values, match.group(), _name_before(text, match.start())))
    return found


def frame_of(texts: list[str], option: str) -> str:
    """The frame of a record's boxes: the option itself, or for `auto` native with `<st>` tags, else llava15."""
    if option != "auto":
        return option
    return "native" if any("<st>" in t for t in texts) else "llava15"


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes."""
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def annotated_in(facts: Facts, frame: str) -> list[tuple[str, list[float]]] | None:
    """The annotated boxes in `frame`; None when that frame needs a size the annotations do not give."""
    if frame == "native":
        return facts.boxes
    if facts.size is None:
        return None
    width, height = facts.size
    return [(label, pad_box(box, width, height)) for label, box in facts.boxes]


def unmatched_detail(box: AnswerBox, annotated: list[tuple[str, list[float]]], threshold: float) -> str | None:
    """Why a box matches no annotated box (best IoU below `threshold`), or None when one matches."""
    best, label, other = 0.0, "", None
    for name, candidate in annotated:
        overlap = iou(box.box, candidate)
        if overlap > best:
            best, label, other = overlap, name, candidate
    if best >= threshold:
        return None
    if other is None:
        return "overlaps no annotated box"
    return f"best IoU {best:.2f} (below {threshold:g}) with '{label}' {format_box(other)}"
