"""Scenes: what a text-only teacher reads about one image (captions, object boxes, regions).

Boxes are `[x1, y1, x2, y2]` floats in [0, 1] relative to the image's
own width and height, rounded to 3 decimals.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..core.boxes import format_box


@dataclass
class Box:
    """One object: a category name and a normalized `[x1, y1, x2, y2]` box; `crowd` marks a COCO iscrowd=1
    region (several objects of the category under one box)."""

    category: str
    bbox: list[float]
    crowd: bool = False


@dataclass
class Scene:
    """One image and its annotations (regions: Visual Genome region phrases with their boxes)."""

    image_id: str
    image: str
    captions: list[str]
    boxes: list[Box] = field(default_factory=list)
    source: str = ""
    regions: list[Box] = field(default_factory=list)
    width: float | None = None
    height: float | None = None
    file: Path | None = None  # the image itself, for a VLM teacher


VIEWS = ("captions", "full", "regions")


def _lines(boxes: list[Box]) -> str:
    return "\n".join(f"{b.category}: {format_box(b.bbox)}" for b in boxes)


def scene_text(scene: Scene, view: str) -> str:
    """What the teacher reads, by view; sections are separated by a blank line.

    - `captions`: captions one per line (region phrases without boxes when there are no captions);
    - `full`: captions, then one `name: [box]` line per object, then one per region;
    - `regions`: the region and object lines only (for referring QA).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown scene view {view!r}")
    captions = "\n".join(scene.captions or [r.category for r in scene.regions])
    if view == "captions":
        return captions
    sections = [captions] if view == "full" else []
    sections += [_lines(boxes) for boxes in (scene.boxes, scene.regions) if boxes]
    return "\n\n".join(s for s in sections if s)


def pixel_box_problem(bbox: list[float], width: float, height: float) -> str | None:
    """Why a pixel `[x, y, w, h]` box cannot be shown to the teacher, or None when it can.

    Such boxes are common in real annotation files, so sources drop them (counted), not stop.
    A box that only overhangs the image is fine: it is clamped to the image.
    """
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        return "not finite"
    if w <= 0 or h <= 0:
        return "zero or negative width/height"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside its image"
    return None


@dataclass
class Dropped:
    """Boxes a source left out, counted by reason, with the place of the first one (for the warning)."""

    counts: Counter[str] = field(default_factory=Counter)
    first: str = ""

    def add(self, reason: str, where: str) -> None:
        """Count one dropped box; `where` names the file and the entry."""
        self.first = self.first or where
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"dropped {self.total} box(es) that cannot be shown ({reasons}); first: {self.first}"


def normalize_xywh(bbox: list[float], width: float, height: float) -> list[float]:
    """COCO pixel `[x, y, w, h]` → `[x1, y1, x2, y2]` in [0, 1], 3 decimals."""
    x, y, w, h = bbox
    corners = [x / width, y / height, (x + w) / width, (y + h) / height]
    return [round(min(1.0, max(0.0, v)), 3) for v in corners]


def join_image(prefix: str, name: str) -> str:
    """Join `--image-prefix` and a file name with exactly one slash between them."""
    if not prefix:
        return name
    return prefix.rstrip("/") + "/" + name.lstrip("/")
