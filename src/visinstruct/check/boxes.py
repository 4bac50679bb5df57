"""Box conventions found in a record's text, a stated approximation:

- `norm1`: `[x1, y1, x2, y2]` with every number in [0, 1] (LLaVA-1.5, SVIT, this project);
- `norm1000`: Qwen-VL's `(x1,y1),(x2,y2)` (inside `<box>` or `<|box_start|>`), or bracketed integers none
  above 1000 (integer pixels of an image under 1000 px read the same: the text cannot tell them apart);
- `pixels`: bracketed numbers above 1000, or fractional numbers above 1.

Lists whose x1 > x2 or y1 > y2 are not boxes. With the image size (from --image-root) a `norm1` box is known
to be in the native frame, not LLaVA-1.5's square-padded one, when it reaches into the padding band of a
non-square image (padded boxes keep the short axis inside [pad, 1 - pad], pad = (long - short) / 2 / long).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..core.boxes import BOX_PATTERN

QWEN_BOX = re.compile(r"\(\s*\d+\s*,\s*\d+\s*\)\s*,\s*\(\s*\d+\s*,\s*\d+\s*\)")
TOLERANCE = 0.001  # boxes are written with 3 decimals


def _convention(raw: tuple[str, ...]) -> str | None:
    values = [float(v) for v in raw]
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        return None
    if all(v <= 1.0 for v in values):
        return "norm1"
    if any(v > 1000 for v in values) or any(v != int(v) for v in values):
        return "pixels"
    return "norm1000"


def _outside_band(box: list[float], size: tuple[int, int]) -> bool:
    """True when a [0,1] box cannot be in the square-padded frame of a `size` image."""
    width, height = size
    if width == height or width <= 0 or height <= 0:
        return False
    pad = (max(width, height) - min(width, height)) / 2 / max(width, height)
    low, high = (box[1], box[3]) if width > height else (box[0], box[2])
    return low < pad - TOLERANCE or high > 1 - pad + TOLERANCE


def find_conventions(texts: Iterable[str], size: tuple[int, int] | None) -> tuple[set[str], bool]:
    """The conventions of the boxes in `texts`, and whether a `norm1` box is surely in the native frame."""
    found: set[str] = set()
    native = False
    for text in texts:
        for match in BOX_PATTERN.finditer(text):
            convention = _convention(match.groups())
            if convention:
                found.add(convention)
                if convention == "norm1" and size and _outside_band([float(v) for v in match.groups()], size):
                    native = True
        if QWEN_BOX.search(text):
            found.add("norm1000")
    return found, native
