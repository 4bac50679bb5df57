"""Scenes from the official Visual Genome files, read streaming (objects.json is ~400 MB).

`image_data.json`, `objects.json`, `region_descriptions.json` and, when present, `attributes.json`
list the images in the same order; they are walked in lockstep with ijson, so memory holds one
image's annotations at a time. COCO captions are added for images with a `coco_id` when a COCO
captions file is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from ..core.errors import UserError
from ..core.records import vg_image_file_name
from .coco import load_coco_captions
from .scene import Box, Scene, join_image, normalize_xywh


class _Stream:
    """One VG file as a stream of per-image entries, with one entry of look-ahead."""

    def __init__(self, path: Path, handle: BinaryIO, id_keys: tuple[str, ...]) -> None:
        self.path, self.id_keys, self.index = path, id_keys, -1
        self._items = ijson.items(handle, "item", use_float=True)
        self._next: dict | None = None
        self.popped = -1  # index of the entry `pop` returned last
        self._advance()

    def _advance(self) -> None:
        try:
            self._next = next(self._items)
            self.index += 1
        except StopIteration:
            self._next = None
        except ijson.JSONError as exc:
            raise UserError(f"{self.path}: not valid JSON after entry {self.index} ({exc})") from None
        if self._next is not None and not isinstance(self._next, dict):
            raise UserError(f"{self.path}: entry {self.index} is not an object")

    def _id(self, entry: dict) -> Any:
        for key in self.id_keys:
            if key in entry:
                return entry[key]
        raise UserError(f"{self.path}: entry {self.index} has no image id ({' or '.join(self.id_keys)})")

    def pop(self) -> tuple[Any, dict] | None:
        """The next entry with its image id, or None at the end of the file."""
        if self._next is None:
            return None
        entry, self.popped = self._next, self.index
        self._advance()
        return self._id(entry), entry

    def unread(self) -> str | None:
        """A description of the first entry nobody took (None when the file was read to its end)."""
        if self._next is None:
            return None
        return f"{self.path}: entry {self.index} (image {self._id(self._next)})"

    def take(self, image_id: Any) -> dict | None:
        """The entry for `image_id` if it is next; None when this file has no entry for it."""
        if self._next is None or self._id(self._next) != image_id:
            return None
        entry = self._next
        self._advance()
        return entry


def _box(item: dict, width: float, height: float, path: Path, image_id: Any, keys: tuple[str, str]) -> list[float]:
    try:
        xywh = [float(item["x"]), float(item["y"]), float(item[keys[0]]), float(item[keys[1]])]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: image {image_id}: an entry needs numeric x, y, {keys[0]}, {keys[1]}: "
                        f"{str(item)[:120]}") from None
    return normalize_xywh(xywh, width, height)


def _attributes(entry: dict | None) -> dict[Any, list[str]]:
    if not entry:
        return {}
    return {obj.get("object_id"): [a.strip() for a in obj.get("attributes") or [] if a.strip()]
            for obj in entry.get("attributes", [])}


def _objects(entry: dict | None, attrs: dict[Any, list[str]], size: tuple[float, float], path: Path,
             image_id: Any) -> list[Box]:
    boxes, seen = [], set()
    for obj in (entry or {}).get("objects", []):
        names = obj.get("names") or ([obj["name"]] if obj.get("name") else [])
        if not names:
            continue
        words = attrs.get(obj.get("object_id"), obj.get("attributes") or [])[:2]
        name = " ".join([*words, names[0].strip()])
        box = Box(name, _box(obj, *size, path, image_id, ("w", "h")))
        key = (names[0].strip().lower(), tuple(box.bbox))  # VG repeats objects; the first one wins
        if key not in seen:
            seen.add(key)
            boxes.append(box)
    return boxes


def _regions(entry: dict | None, size: tuple[float, float], path: Path, image_id: Any) -> list[Box]:
    regions, seen = [], set()
    for region in (entry or {}).get("regions", []):
        phrase = " ".join(str(region.get("phrase", "")).split()).rstrip(".")
        if phrase:
            box = Box(phrase, _box(region, *size, path, image_id, ("width", "height")))
            if (phrase.lower(), tuple(box.bbox)) not in seen:
                seen.add((phrase.lower(), tuple(box.bbox)))
                regions.append(box)
    return regions


def load_vg(folder: Path, coco_captions: Path | None = None, image_prefix: str = "",
            source: str = "") -> Iterator[Scene]:
    """One scene per image of `image_data.json`, with objects (attributes folded in) and regions."""
    paths = {name: folder / f"{name}.json" for name in ("image_data", "objects", "region_descriptions", "attributes")}
    for name in ("image_data", "objects", "region_descriptions"):
        if not paths[name].exists():
            raise UserError(f"{folder}: Visual Genome folder has no {name}.json")
    captions = load_coco_captions(coco_captions) if coco_captions else {}
    with ExitStack() as stack:
        def stream(name: str, keys: tuple[str, ...]) -> _Stream:
            return _Stream(paths[name], stack.enter_context(paths[name].open("rb")), keys)
        images = stream("image_data", ("image_id", "id"))
        objects = stream("objects", ("image_id", "id"))
        regions = stream("region_descriptions", ("id", "image_id"))
        attributes = stream("attributes", ("image_id", "id")) if paths["attributes"].exists() else None
        while (item := images.pop()) is not None:
            image_id, image = item
            width, height = image.get("width"), image.get("height")
            if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
                raise UserError(f"{images.path}: entry {images.popped} (image {image_id}) has no positive "
                                "width/height")
            size = (float(width), float(height))
            attrs = _attributes(attributes.take(image_id)) if attributes else {}
            yield Scene(str(image_id), join_image(image_prefix, vg_image_file_name(image)),
                        captions.get(image.get("coco_id"), []),
                        _objects(objects.take(image_id), attrs, size, objects.path, image_id), source,
                        _regions(regions.take(image_id), size, regions.path, image_id), size[0], size[1])
        for stream in (objects, regions, attributes):
            left = stream.unread() if stream is not None else None
            if left:
                raise UserError(f"{left} is out of image_data.json's order or names an unknown image")
