"""Images in a mixture: one image folder for the whole mixture (paths rewritten into it), what "the same image"
means (the same path in that folder, or a perceptual hash within `phash_distance` bits), and the set of images
that `exclude_images_of` keeps out.

Paths are compared as written after the rewrite, normalized (`./a/../b.jpg` is `b.jpg`); images are hashed
from their source's image folder, each file once while it stays in a bounded cache.
"""

from __future__ import annotations

import os
import posixpath
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import safe_relative, stays_inside
from ..core.phash import PhashIndex, image_files, phash_file
from ..core.records import images_of
from .rows import Rows
from .sources import file_rows

CACHE_SIZE = 1 << 16


def prefix_for(root: Path | None, mix_root: Path | None) -> str | None:
    """What to put before a source's image paths so that they are relative to the mixture's image folder:
    `coco/` for root /data/coco under /data, "" when either is unknown; None when root lies outside."""
    if root is None or mix_root is None:
        return ""
    relative = os.path.relpath(os.path.realpath(root), os.path.realpath(mix_root))
    if relative == os.curdir:
        return ""
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return Path(relative).as_posix() + "/"


def rewrite_images(record: dict[str, Any], prefix: str) -> None:
    """Put `prefix` before each relative image path of the record (a string or a list of them)."""
    if not prefix or "image" not in record:
        return
    image = record["image"]
    if isinstance(image, str):
        record["image"] = _prefixed(image, prefix)
    elif isinstance(image, list):
        record["image"] = [_prefixed(i, prefix) if isinstance(i, str) else i for i in image]


def _prefixed(path: str, prefix: str) -> str:
    return path if not path or path.startswith("/") else prefix + path


def path_key(path: str) -> str:
    """A path normalized for comparison."""
    return posixpath.normpath(path.replace("\\", "/"))


def path_keys(record: dict[str, Any]) -> list[str]:
    """The record's image paths (string ones), normalized."""
    return [path_key(p) for p in images_of(record) if isinstance(p, str) and p]


class Hasher:
    """Perceptual hashes of image files under a root, with a bounded cache; counts files it could not read."""

    def __init__(self) -> None:
        self.cache: OrderedDict[Path, int | None] = OrderedDict()
        self.unreadable = 0

    def hash(self, root: Path, relative: str) -> int | None:
        """The hash of root/relative; None (counted) when the path leaves the root or the file is unreadable."""
        path = safe_relative(relative)
        if path is None or not stays_inside(root, path):
            self.unreadable += 1
            return None
        full = root / path
        if full in self.cache:
            self.cache.move_to_end(full)
            value = self.cache[full]
        else:
            value = phash_file(full)
            self.cache[full] = value
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        if value is None:
            self.unreadable += 1
        return value

    def record(self, root: Path, record: dict[str, Any]) -> list[int]:
        """Hashes of a record's readable images (its paths as the source wrote them, under `root`)."""
        found = (self.hash(root, p) for p in images_of(record) if isinstance(p, str))
        return [h for h in found if h is not None]


@dataclass
class Excluded:
    """The images of `exclude_images_of`: their paths (in the mixture's folder) and their hashes."""

    paths: set[str] = field(default_factory=set)
    index: PhashIndex | None = None
    images: int = 0

    def matches(self, paths: list[str], hashes: list[int]) -> bool:
        """Whether one of a record's images is one of these (by path, or by hash when hashes are given)."""
        if any(p in self.paths for p in paths):
            return True
        return self.index is not None and any(self.index.near(h) for h in hashes)



def excluded_images(entries: list[Any], mix_root: Path | None, hasher: Hasher | None, distance: int) -> Excluded:
    """Collect every image of the exclusion entries (ExcludeSpec): paths always, hashes when `hasher`."""
    excluded, hashes = Excluded(), []
    for entry in entries:
        root = entry.image_root or (entry.path if entry.path.is_dir() else entry.path.parent)
        prefix = prefix_for(root, mix_root) or ""
        for relative in _entry_images(entry):
            key = path_key(prefix + relative)
            if key in excluded.paths:
                continue
            excluded.paths.add(key)
            if hasher is not None:
                value = hasher.hash(root, relative)
                if value is not None:
                    hashes.append(value)
    excluded.images = len(excluded.paths)
    if hasher is not None:
        excluded.index = PhashIndex(np.array(hashes, dtype=np.uint64), distance)
    return excluded


def _entry_images(entry: Any) -> Iterable[str]:
    """The relative image paths an exclusion entry names: an image folder's files, or its records' images."""
    if not entry.files:
        return image_files(entry.path)
    return (p for _, _, record, _ in file_rows(entry.files, Rows.span(0, None))
            if isinstance(record, dict) for p in images_of(record) if isinstance(p, str) and p)
