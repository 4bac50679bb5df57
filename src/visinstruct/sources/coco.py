"""COCO sources: the official captions + instances files, and LLaVA's caps-boxes jsonl, as scenes.

The official files are streamed: each top-level list (`images`, `categories`, `annotations`) is read in its
own pass with ijson (three passes over an instances file, two over a captions file), so memory holds the
compact tables built from them (per image: file name and size; per object: its category and normalized
box), never the parsed file. An instances file of COCO train (450 MB, ~860k objects) parsed whole takes
several GB; streamed, only the boxes kept.
"""

from __future__ import annotations

import codecs
import itertools
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import ijson

from ..core.errors import UserError
from ..core.io import BOM, newlines_before, open_input, read_jsonl
from ..core.seen import SeenIds
from .scene import Box, Dropped, Scene, join_image, normalize_xywh, pixel_box_problem

CAPS_BOX_SLACK = 0.001  # one step of the 3-decimal rounding: values this close to [0, 1] are clamped
_MISSING = object()
Image = tuple[str, float, float]  # file name, width, height


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---- streaming the top-level lists -----------------------------------------------------------------------

def _open(path: Path) -> IO[bytes]:
    """The file, positioned after a UTF-8 byte order mark when it has one."""
    handle = open_input(path)
    if handle.read(len(BOM)) != BOM:
        handle.seek(0)
    return handle


def _first_line(exc: Exception) -> str:
    """The first line of ijson's message (its C backend gives several lines, as bytes)."""
    raw = exc.args[0] if exc.args else ""
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_error(path: Path, handle: IO[bytes], exc: Exception) -> UserError:
    """A parser failure as one line: the first byte that is not UTF-8 when there is one, else where the
    parser had read to (exact for a truncated file; within one read buffer otherwise) and its reason."""
    _check_utf8(path)
    offset = handle.tell()
    line = newlines_before(path, [offset])[0] + 1
    return UserError(f"{path}: not valid JSON near line {line}, byte {offset:,} ({_first_line(exc)})")


def _entries(path: Path, key: str) -> Iterator[tuple[int, dict]]:
    """(index, entry) of the top-level `key` list, streamed; an entry that is not an object, a missing list
    and invalid JSON are one-line UserErrors."""
    count = 0
    with _open(path) as handle:
        try:
            for count, entry in enumerate(ijson.items(handle, f"{key}.item", use_float=True), start=1):
                if not isinstance(entry, dict):
                    raise UserError(f"{path}: {key}[{count - 1}] is not an object: {entry!r:.80}")
                yield count - 1, entry
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise _parse_error(path, handle, exc) from None
    if not count:
        _check_is_list(path, key)


def _check_is_list(path: Path, key: str) -> None:
    """A list with no entry is fine; a missing key or another type is a UserError (another kind of file)."""
    with _open(path) as handle:
        try:
            value = next(ijson.items(handle, key, use_float=True), _MISSING)
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise _parse_error(path, handle, exc) from None
    if not isinstance(value, list):
        raise UserError(f"{path}: expected a JSON object with a '{key}' list (a COCO annotation file)")


def _check_utf8(path: Path) -> None:
    """Raise a UserError locating the first byte that is not UTF-8, read block by block."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = lines = 0
    with open_input(path) as handle:
        for block in itertools.chain(iter(lambda: handle.read(1 << 20), b""), [b""]):
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:  # exc.object: the bytes held back from the last block + this one
                at = done - (len(exc.object) - len(block)) + exc.start
                line = lines + block[:max(0, at - done)].count(b"\n") + 1
                raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte "
                                f"offset {at:,})") from None
            done, lines = done + len(block), lines + block.count(b"\n")


# ---- the tables ------------------------------------------------------------------------------------------

def _coco_images(path: Path) -> dict[Any, Image]:
    """Image id → (file name, width, height), from the file's `images` list."""
    images: dict[Any, Image] = {}
    for i, img in _entries(path, "images"):
        w, h = img.get("width"), img.get("height")
        if "id" not in img or not isinstance(img.get("file_name"), str):
            raise UserError(f"{path}: images[{i}] needs 'id' and 'file_name': {img!r:.120}")
        if not (_is_number(w) and _is_number(h) and w > 0 and h > 0):
            raise UserError(f"{path}: images[{i}] (id {img['id']}) has no positive width/height")
        images[img["id"]] = (img["file_name"], w, h)
    return images


def _coco_captions(path: Path, images: dict[Any, Image]) -> dict[Any, list[str]]:
    captions: dict[Any, list[str]] = {}
    for i, ann in _entries(path, "annotations"):
        image_id, caption = ann.get("image_id"), ann.get("caption")
        if image_id not in images:
            raise UserError(f"{path}: annotations[{i}] refers to unknown image_id {image_id!r}")
        if not isinstance(caption, str):
            raise UserError(f"{path}: annotations[{i}] (image_id {image_id}) has no 'caption' string")
        if caption.strip():
            captions.setdefault(image_id, []).append(caption.strip())
    return captions


def _coco_categories(path: Path) -> dict[Any, str]:
    names = {}
    for i, cat in _entries(path, "categories"):
        if "id" not in cat or not isinstance(cat.get("name"), str):
            raise UserError(f"{path}: categories[{i}] needs 'id' and 'name'")
        names[cat["id"]] = cat["name"]
    return names


class _Boxes:
    """Each image's boxes packed in one array of doubles, five per box (x1, y1, x2, y2 normalized, then
    category index × 2 + crowd flag): ~40 bytes a box where Box objects take ~340. Handed out as Box
    objects one image at a time (`pop`)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.packed: dict[Any, array] = {}

    def add(self, image_id: Any, name: str, box: list[float], crowd: bool) -> None:
        k = self.index.get(name)
        if k is None:
            k = self.index[name] = len(self.names)
            self.names.append(name)
        packed = self.packed.get(image_id)
        if packed is None:
            packed = self.packed[image_id] = array("d")
        packed.extend(box)
        packed.append(2 * k + crowd)

    def pop(self, image_id: Any) -> list[Box]:
        """The boxes of one image (in file order), forgotten here."""
        packed = self.packed.pop(image_id, ())
        return [Box(self.names[int(packed[i + 4]) // 2], list(packed[i:i + 4]), bool(int(packed[i + 4]) % 2))
                for i in range(0, len(packed), 5)]


def _coco_boxes(path: Path, images: dict[Any, Image], dropped: Dropped,
                images_from: str = "the captions file") -> _Boxes:
    """Every image's objects (normalized boxes), from an instances file's `annotations`."""
    names = _coco_categories(path)
    boxes = _Boxes()
    for i, ann in _entries(path, "annotations"):
        image_id, bbox = ann.get("image_id"), ann.get("bbox")
        where = f"{path}: annotations[{i}] (id {ann.get('id')}, image_id {image_id})"
        if image_id not in images:
            raise UserError(f"{where} refers to an image not in {images_from}")
        if ann.get("category_id") not in names:
            raise UserError(f"{where} has unknown category_id {ann.get('category_id')!r}")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise UserError(f"{where} has a bbox that is not 4 numbers: {bbox!r:.80}")
        _, width, height = images[image_id]
        problem = pixel_box_problem(bbox, width, height)
        if problem:
            dropped.add(problem, where)
            continue
        boxes.add(image_id, names[ann["category_id"]], normalize_xywh(bbox, width, height), bool(ann.get("iscrowd")))
    return boxes


# ---- scenes ----------------------------------------------------------------------------------------------

def load_coco_captions(path: Path) -> dict[Any, list[str]]:
    """COCO image id → its captions (for Visual Genome images that have a `coco_id`)."""
    return _coco_captions(path, _coco_images(path))


def load_coco(captions_path: Path, instances_path: Path | None, image_prefix: str = "",
              source: str = "", dropped: Dropped | None = None) -> Iterator[Scene]:
    """Scenes from official COCO files, in the captions file's image order.

    Images without any caption make no scene (a text-only teacher has nothing to read);
    images without boxes still do. Boxes with no area or wholly outside their image are
    dropped and counted in `dropped`.
    """
    images = _coco_images(captions_path)  # the captions file lists the images and their captions
    captions = _coco_captions(captions_path, images)
    boxes = _coco_boxes(instances_path, images, dropped if dropped is not None else Dropped()) \
        if instances_path else _Boxes()
    for image_id, (file_name, width, height) in images.items():
        if image_id in captions:
            yield Scene(_image_key(image_id), join_image(image_prefix, file_name), captions[image_id],
                        boxes.pop(image_id), source, width=width, height=height)


def load_coco_instances(path: Path, image_prefix: str = "", source: str = "",
                        dropped: Dropped | None = None) -> Iterator[Scene]:
    """Scenes from an instances file alone (its own `images` list): every image, its boxes with their crowd
    flag, its size, no captions (for checking answers against the annotations, not for a teacher). Each
    image's boxes are handed over as its scene goes out, so they are not held twice."""
    images = _coco_images(path)
    boxes = _coco_boxes(path, images, dropped if dropped is not None else Dropped(), "its 'images' list")
    for image_id, (file_name, width, height) in images.items():
        yield Scene(_image_key(image_id), join_image(image_prefix, file_name), [],
                    boxes.pop(image_id), source, width=width, height=height)


def _image_key(image_id: Any) -> str:
    """COCO ids are ints; LLaVA writes them zero-padded to 12 digits."""
    return f"{image_id:012d}" if isinstance(image_id, int) else str(image_id)


def _caps_boxes_row(row: Any, where: str, image_prefix: str, source: str) -> Scene:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    captions, instances = row.get("captions"), row.get("instances", [])
    if "id" not in row or not isinstance(row.get("image"), str):
        raise UserError(f"{where}: needs 'id' and 'image'")
    if not (isinstance(captions, list) and all(isinstance(c, str) for c in captions)):
        raise UserError(f"{where} (id {row['id']}): 'captions' must be a list of strings")
    if not isinstance(instances, list):
        raise UserError(f"{where} (id {row['id']}): 'instances' must be a list")
    boxes = []
    for j, inst in enumerate(instances):
        bbox = inst.get("bbox") if isinstance(inst, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))
                and isinstance(inst.get("category"), str)):
            raise UserError(f"{where} (id {row['id']}): instances[{j}] needs 'category' and a 4-number 'bbox'")
        boxes.append(Box(inst["category"], _caps_box(bbox, f"{where} (id {row['id']}): instances[{j}]")))
    caps = [c.strip() for c in captions if c.strip()]
    return Scene(str(row["id"]), join_image(image_prefix, row["image"]), caps, boxes, source)


def _caps_box(bbox: list[float], where: str) -> list[float]:
    """A caps-boxes box: normalized `[x1, y1, x2, y2]`; anything else means a wrong file, so it is refused."""
    if any(v < -CAPS_BOX_SLACK or v > 1 + CAPS_BOX_SLACK for v in bbox):
        raise UserError(f"{where}: bbox {bbox} is outside [0, 1] (caps-boxes boxes are normalized "
                        "[x1, y1, x2, y2]; pixel boxes belong in a COCO instances file)")
    if bbox[0] > bbox[2] or bbox[1] > bbox[3]:
        raise UserError(f"{where}: bbox {bbox} is inverted (x1 > x2 or y1 > y2; expected [x1, y1, x2, y2])")
    return [round(min(1.0, max(0.0, float(v))), 3) for v in bbox]


def load_caps_boxes(path: Path, image_prefix: str = "", source: str = "") -> Iterator[Scene]:
    """Scenes from LLaVA's caps-boxes jsonl: `{"id", "image", "captions", "instances"}` per line."""
    seen = SeenIds()  # 8 bytes per id: the file may hold millions of scenes
    for n, row in read_jsonl(path):
        scene = _caps_boxes_row(row, f"{path}:{n}", image_prefix, source)
        if not seen.add(scene.image_id):
            raise UserError(f"{path}:{n}: duplicate id {scene.image_id!r} (record ids would collide)")
        yield scene
