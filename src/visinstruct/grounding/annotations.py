"""What the annotations say about each image (categories present, counts, crowd regions, boxes, size),
read through the shared source readers and joined to records by the image's file name.

Join: a record's `image` with `--image-prefix` stripped is looked up among the annotation file names
(COCO `file_name`, caps-boxes `image`, Visual Genome `VG_100K/1.jpg`); failing that, its base name is
looked up among the annotations' base names, used only when exactly one annotated image has it.
"""

from __future__ import annotations

import functools
import posixpath
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..core.errors import UserError
from ..sources.coco import load_caps_boxes, load_coco_instances
from ..sources.scene import Box, Dropped, Scene
from ..sources.visual_genome import load_vg
from .boxes import iou
from .scan import scan
from .vocab import categories, lexicon, normalize

SAME_OBJECT_IOU = 0.5  # Visual Genome boxes of one category overlapping this much are one object named twice
SOURCES = ("coco-instances", "caps-boxes", "vg")
_EMPTY: Mapping[str, int] = MappingProxyType({})  # shared by the many images without a crowd region
_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Facts:
    """One image's annotations, as the audit reads them (kept compact: a COCO-train-sized file has ~120k)."""

    present: frozenset[str]                # categories annotated (plus those its captions or regions name)
    counts: Mapping[str, int]              # objects per category outside crowd regions
    crowd: Mapping[str, int]               # crowd regions per category (each holds one object or more)
    labels: tuple[str, ...]                # the label of every object and region ...
    coords: array                          # ... and its normalized box: 4 doubles each, in the same order
    size: tuple[float, float] | None       # width, height in pixels, when the source gives them
    names: frozenset[str] = frozenset()    # Visual Genome: the object names themselves
    lower_only: bool = False               # counts are lower bounds (Visual Genome: objects repeat and go missing)

    @property
    def boxes(self) -> list[tuple[str, list[float]]]:
        """(label, normalized `[x1, y1, x2, y2]`) of every object and region."""
        return [(label, list(self.coords[4 * i:4 * i + 4])) for i, label in enumerate(self.labels)]


@dataclass
class Annotations:
    """The facts of every annotated image, by file name and by base name (None: several images share it)."""

    kind: str
    path: Path
    by_path: dict[str, Facts] = field(default_factory=dict)
    by_base: dict[str, Facts | None] = field(default_factory=dict)
    dropped: Dropped = field(default_factory=Dropped)

    def add(self, image: str, facts: Facts) -> None:
        self.by_path[image] = facts
        base = posixpath.basename(image)
        self.by_base[base] = None if base in self.by_base else facts

    def find(self, image: Any, prefix: str) -> tuple[Facts | None, str]:
        """The facts of a record's `image`, or None with why: `no image`, `several images`, `no annotations`."""
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if isinstance(image, list) and image:
            return None, "several images"
        if not isinstance(image, str) or not image:
            return None, "no image"
        stripped = image
        if prefix and image.startswith(prefix.rstrip("/") + "/"):
            stripped = image[len(prefix.rstrip("/")) + 1:]
        facts = self.by_path.get(stripped) or self.by_path.get(image) or self.by_base.get(posixpath.basename(image))
        return (facts, "") if facts is not None else (None, "no annotations")


@functools.lru_cache(maxsize=65536)
def label_categories(name: str) -> tuple[tuple[str, ...], bool]:
    """The categories an annotation's object name stands for (a COCO name itself, else through the English
    table), and whether the name is a plural (a group: `people`, `cars`)."""
    if name in _coco_names():
        return (name,), False
    mentions = scan(name, "en", labels=True)
    cats = tuple(dict.fromkeys(c for m in mentions for c in m.entry.categories))
    plural = any(normalize(name)[m.start:m.end].split()[-1] in lexicon("en").plurals for m in mentions)
    return cats, plural


@functools.lru_cache(maxsize=1)
def _coco_names() -> frozenset[str]:
    return frozenset(categories())


def _prose_categories(texts: Iterable[str]) -> set[str]:
    """Categories that human captions or region phrases name, one category per mention, not negated."""
    found: set[str] = set()
    for text in texts:
        found.update(m.entry.categories[0] for m in scan(text, "en")
                     if len(m.entry.categories) == 1 and not m.negated)
    return found


def _objects(boxes: list[Box], vg: bool) -> tuple[Counter[str], Counter[str], set[str]]:
    """Counts outside crowds, crowd regions and categories present. In Visual Genome a plural name is a
    group (a crowd) and boxes of one category that overlap by SAME_OBJECT_IOU are one object."""
    counts: Counter[str] = Counter()
    crowd: Counter[str] = Counter()
    present: set[str] = set()
    kept: dict[str, list[list[float]]] = {}
    for box in boxes:
        cats, plural = label_categories(box.category)
        present.update(cats)
        if len(cats) != 1:
            continue
        cat = cats[0]
        if box.crowd or (vg and plural):
            crowd[cat] += 1
        elif not vg or all(iou(box.bbox, seen) < SAME_OBJECT_IOU for seen in kept.get(cat, [])):
            kept.setdefault(cat, []).append(box.bbox)
            counts[cat] += 1
    return counts, crowd, present


def facts_of(scene: Scene, kind: str) -> Facts:
    """The facts of one scene from a source of `kind`."""
    vg = kind == "vg"
    counts, crowd, present = _objects(scene.boxes, vg)
    present |= _prose_categories(scene.captions + ([r.category for r in scene.regions] if vg else []))
    every = scene.boxes + scene.regions
    coords = array("d", [v for b in every for v in b.bbox])
    size = (float(scene.width), float(scene.height)) if scene.width and scene.height else None
    names = frozenset(n for b in scene.boxes for n in (b.category.lower(), b.category.lower().split()[-1])) \
        if vg else _NONE
    return Facts(frozenset(present), dict(counts) if counts else _EMPTY, dict(crowd) if crowd else _EMPTY,
                 tuple(b.category for b in every), coords, size, names, vg)


def _scenes(kind: str, path: Path, dropped: Dropped) -> Iterator[Scene]:
    if kind == "coco-instances":
        return load_coco_instances(path, dropped=dropped)
    if kind == "caps-boxes":
        return load_caps_boxes(path)
    if not path.is_dir():
        raise UserError(f"{path}: --vg expects the Visual Genome folder")
    return load_vg(path, dropped=dropped)


def load_annotations(kind: str, path: Path) -> Annotations:
    """Every image of the annotation source, indexed for the join (bad files: a one-line UserError)."""
    if kind not in SOURCES:
        raise ValueError(f"unknown annotation source {kind!r}")
    if kind != "vg" and path.is_dir():
        raise UserError(f"{path}: --{kind} expects a file, got a folder")
    annotations = Annotations(kind, path)
    for scene in _scenes(kind, path, annotations.dropped):
        annotations.add(scene.image, facts_of(scene, kind))
    if not annotations.by_path:
        raise UserError(f"{path}: no annotated image in it")
    return annotations
