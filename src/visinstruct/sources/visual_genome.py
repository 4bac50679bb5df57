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
from .scene import Box, Dropped, Scene, join_image, normalize_xywh, pixel_box_problem


def _first_line(exc: Exception) -> str:
    """The first line of a parser error (ijson's C backend gives several lines, as bytes)."""
    message = exc.args[0] if exc.args and not isinstance(exc, UnicodeDecodeError) else str(exc)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__


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
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.path}: not valid JSON after entry {self.index} ({_first_line(exc)})") from None
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


def _box(item: dict, size: tuple[float, float], path: Path, image_id: Any, keys: tuple[str, str],
         dropped: Dropped) -> list[float] | None:
    """The normalized box of an object or region; None (counted in `dropped`) when it has no area or
    lies outside the image."""
    try:
        xywh = [float(item["x"]), float(item["y"]), float(item[keys[0]]), float(item[keys[1]])]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: image {image_id}: an entry needs numeric x, y, {keys[0]}, {keys[1]}: "
                        f"{str(item)[:120]}") from None
    problem = pixel_box_problem(xywh, *size)
    if problem:
        dropped.add(problem, f"{path}: image {image_id}: {str(item)[:80]}")
        return None
    return normalize_xywh(xywh, *size)


def _items(entry: dict | None, key: str, path: Path, image_id: Any) -> list[dict]:
    """The `key` list of one image's entry, each item an object (else a one-line error naming the image)."""
    items = (entry or {}).get(key) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UserError(f"{path}: image {image_id}: '{key}' must be a list of objects")
    return items


def _attributes(entry: dict | None, path: Path, image_id: Any) -> dict[Any, list[str]]:
    return {obj.get("object_id"): [str(a).strip() for a in obj.get("attributes") or [] if str(a).strip()]
            for obj in _items(entry, "attributes", path, image_id)}


def _objects(entry: dict | None, attrs: dict[Any, list[str]], size: tuple[float, float], path: Path,
             image_id: Any, dropped: Dropped) -> list[Box]:
    boxes, seen = [], set()
    for obj in _items(entry, "objects", path, image_id):
        names = obj.get("names") or ([obj["name"]] if obj.get("name") else [])
        if not names:
            continue
        words = attrs.get(obj.get("object_id"), obj.get("attributes") or [])[:2]
        name = " ".join([*words, names[0].strip()])
        bbox = _box(obj, size, path, image_id, ("w", "h"), dropped)
        if bbox is None:
            continue
        box = Box(name, bbox)
        key = (names[0].strip().lower(), tuple(box.bbox))  # VG repeats objects; the first one wins
        if key not in seen:
            seen.add(key)
            boxes.append(box)
    return boxes


def _regions(entry: dict | None, size: tuple[float, float], path: Path, image_id: Any,
             dropped: Dropped) -> list[Box]:
    regions, seen = [], set()
    for region in _items(entry, "regions", path, image_id):
        phrase = " ".join(str(region.get("phrase", "")).split()).rstrip(".")
        bbox = _box(region, size, path, image_id, ("width", "height"), dropped) if phrase else None
        if bbox is not None:
            box = Box(phrase, bbox)
            if (phrase.lower(), tuple(box.bbox)) not in seen:
                seen.add((phrase.lower(), tuple(box.bbox)))
                regions.append(box)
    return regions


def vg_files(folder: Path) -> dict[str, Path]:
    """The Visual Genome files `--vg` reads (attributes.json is optional)."""
    return {name: folder / f"{name}.json" for name in ("image_data", "objects", "region_descriptions", "attributes")}


def load_vg(folder: Path, coco_captions: Path | None = None, image_prefix: str = "",
            source: str = "", dropped: Dropped | None = None) -> Iterator[Scene]:
    """One scene per image of `image_data.json`, with objects (attributes folded in) and regions.
    Boxes with no area or wholly outside their image are dropped and counted in `dropped`."""
    paths = vg_files(folder)
    for name in ("image_data", "objects", "region_descriptions"):
        if not paths[name].exists():
            raise UserError(f"{folder}: Visual Genome folder has no {name}.json")
    for path in paths.values():
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: expected a file, got a folder")
    dropped = dropped if dropped is not None else Dropped()
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
            attrs = _attributes(attributes.take(image_id), attributes.path, image_id) if attributes else {}
            yield Scene(str(image_id), join_image(image_prefix, vg_image_file_name(image)),
                        captions.get(image.get("coco_id"), []),
                        _objects(objects.take(image_id), attrs, size, objects.path, image_id, dropped), source,
                        _regions(regions.take(image_id), size, regions.path, image_id, dropped), size[0], size[1])
        for stream in (objects, regions, attributes):
            left = stream.unread() if stream is not None else None
            if left:
                raise UserError(f"{left} is out of image_data.json's order or names an unknown image")
