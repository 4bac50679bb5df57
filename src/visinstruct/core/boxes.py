"""Boxes inside text: find `[x1, y1, x2, y2]` (normalized), move them into LLaVA-1.5's square-padded frame.

LLaVA-1.5 pads an image to a square with the image centred on the long side (`expand2square`). A box
normalized to the original image is mapped to pixels, shifted on the short axis by the padding and
divided by the long side. Two roundings of that arithmetic exist:
- `exact`: pixels stay fractional and the shift is (long - short) / 2;
- `svit`: what SVIT's `tools/expand_to_square.py` did for its published LLaVA-1.5 rows: pixels rounded
  to integers first (Python's `round`, ties to even), the shift is (long - short) // 2.
Both end with 3 decimals. Every box is transformed exactly once (one pass over the text); lists that
are not boxes (not 4 numbers, numbers outside [0, 1], or x1 > x2 / y1 > y2) are left as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

_NUMBER = r"\s*(\d+(?:\.\d+)?|\.\d+)\s*"
BOX_PATTERN = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")


def is_box(values: list[float]) -> bool:
    """Four numbers in [0, 1] with x1 <= x2 and y1 <= y2."""
    x1, y1, x2, y2 = values
    return all(0.0 <= v <= 1.0 for v in values) and x1 <= x2 and y1 <= y2


def format_box(values: list[float]) -> str:
    """`[0.37, 0.584, 0.504, 0.709]`: how boxes are written everywhere in this project."""
    x1, y1, x2, y2 = values
    return f"[{float(x1)!r}, {float(y1)!r}, {float(x2)!r}, {float(y2)!r}]"


def _check_size(width: float, height: float) -> None:
    if not (0 < width < math.inf and 0 < height < math.inf):  # NaN fails both comparisons
        raise ValueError(f"image size must be finite and positive, got {width} x {height}")


def pad_box(box: list[float], width: float, height: float, digits: int = 3) -> list[float]:
    """A box normalized to a `width` x `height` image, normalized to its square-padded frame instead."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    pixels = [x1 * width + dx, y1 * height + dy, x2 * width + dx, y2 * height + dy]
    return [round(v / side, digits) for v in pixels]


def pad_box_svit(box: list[float], width: float, height: float, digits: int = 3) -> list[float]:
    """`pad_box` with SVIT's integer pixels: each coordinate rounded to a pixel, shift (long - short) // 2."""
    _check_size(width, height)
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x1, y1, x2, y2 = (round(v * size) for v, size in zip(box, (width, height, width, height), strict=True))
    return [round(v / side, digits) for v in (x1 + dx, y1 + dy, x2 + dx, y2 + dy)]


PADDERS: dict[str, Callable[[list[float], float, float], list[float]]] = {"exact": pad_box, "svit": pad_box_svit}
BOX_ROUNDINGS = tuple(PADDERS)


def padder(rounding: str) -> Callable[[list[float], float, float], list[float]]:
    """The box padding function of a rounding name (`exact` or `svit`)."""
    if rounding not in PADDERS:
        raise ValueError(f"unknown box rounding {rounding!r}; choose from {', '.join(BOX_ROUNDINGS)}")
    return PADDERS[rounding]


def unpad_box(box: list[float], width: float, height: float) -> list[float]:
    """The inverse of `pad_box` (without rounding)."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    return [(x1 * side - dx) / width, (y1 * side - dy) / height, (x2 * side - dx) / width, (y2 * side - dy) / height]


def map_boxes(text: str, transform: Callable[[list[float]], list[float]]) -> str:
    """Replace every box in `text` by `transform(box)`, in one pass; non-boxes stay untouched."""
    def replace(match: re.Match) -> str:
        values = [float(v) for v in match.groups()]
        return format_box(transform(values)) if is_box(values) else match.group(0)
    return BOX_PATTERN.sub(replace, text)


def pad_boxes_in_text(text: str, width: float, height: float, rounding: str = "exact") -> str:
    """Every box in `text` moved into the square-padded frame of a `width` x `height` image."""
    _check_size(width, height)
    pad = padder(rounding)
    return map_boxes(text, lambda box: pad(box, width, height))


def find_boxes(text: str) -> list[list[float]]:
    """All 4-number bracketed lists in `text` (boxes or not: callers check with `is_box`)."""
    return [[float(v) for v in m.groups()] for m in BOX_PATTERN.finditer(text)]
