"""COCO sources: the official captions + instances files, and LLaVA's caps-boxes jsonl, as scenes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.io import read_json, read_jsonl
from .scene import Box, Dropped, Scene, join_image, normalize_xywh, pixel_box_problem

CAPS_BOX_SLACK = 0.001  # one step of the 3-decimal rounding: values this close to [0, 1] are clamped


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_annotations(path: Path) -> Any:
    """A whole annotation file; a byte that is not UTF-8 is reported at its line and byte offset."""
    try:
        return read_json(path)
    except UserError:
        _check_utf8(path)
        raise


def _check_utf8(path: Path) -> None:
    """Raise a UserError locating the first non-UTF-8 byte (the JSON parser reports such files at char 0)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset "
                        f"{exc.start:,})") from None


def _entries(doc: Any, key: str, path: Path) -> list[dict]:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise UserError(f"{path}: expected a JSON object with a '{key}' list (a COCO annotation file)")
    for i, entry in enumerate(doc[key]):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: {key}[{i}] is not an object: {entry!r:.80}")
    return doc[key]


def _coco_images(doc: Any, path: Path) -> dict[Any, dict]:
    images = {}
    for i, img in enumerate(_entries(doc, "images", path)):
        w, h = img.get("width"), img.get("height")
        if "id" not in img or not isinstance(img.get("file_name"), str):
            raise UserError(f"{path}: images[{i}] needs 'id' and 'file_name': {img!r:.120}")
        if not (_is_number(w) and _is_number(h) and w > 0 and h > 0):
            raise UserError(f"{path}: images[{i}] (id {img['id']}) has no positive width/height")
        images[img["id"]] = img
    return images


def _coco_captions(doc: Any, path: Path, images: dict[Any, dict]) -> dict[Any, list[str]]:
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(_entries(doc, "annotations", path)):
        image_id, caption = ann.get("image_id"), ann.get("caption")
        if image_id not in images:
            raise UserError(f"{path}: annotations[{i}] refers to unknown image_id {image_id!r}")
        if not isinstance(caption, str):
            raise UserError(f"{path}: annotations[{i}] (image_id {image_id}) has no 'caption' string")
        if caption.strip():
            captions.setdefault(image_id, []).append(caption.strip())
    return captions


def _coco_boxes(path: Path, images: dict[Any, dict], dropped: Dropped, doc: Any = None,
                images_from: str = "the captions file") -> dict[Any, list[Box]]:
    doc = _read_annotations(path) if doc is None else doc
    names = {}
    for i, cat in enumerate(_entries(doc, "categories", path)):
        if "id" not in cat or not isinstance(cat.get("name"), str):
            raise UserError(f"{path}: categories[{i}] needs 'id' and 'name'")
        names[cat["id"]] = cat["name"]
    boxes: dict[Any, list[Box]] = {}
    for i, ann in enumerate(_entries(doc, "annotations", path)):
        image_id, bbox = ann.get("image_id"), ann.get("bbox")
        where = f"{path}: annotations[{i}] (id {ann.get('id')}, image_id {image_id})"
        if image_id not in images:
            raise UserError(f"{where} refers to an image not in {images_from}")
        if ann.get("category_id") not in names:
            raise UserError(f"{where} has unknown category_id {ann.get('category_id')!r}")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise UserError(f"{where} has a bbox that is not 4 numbers: {bbox!r:.80}")
        img = images[image_id]
        problem = pixel_box_problem(bbox, img["width"], img["height"])
        if problem:
            dropped.add(problem, where)
            continue
        norm = normalize_xywh(bbox, img["width"], img["height"])
        boxes.setdefault(image_id, []).append(Box(names[ann["category_id"]], norm, bool(ann.get("iscrowd"))))
    return boxes


def load_coco_captions(path: Path) -> dict[Any, list[str]]:
    """COCO image id → its captions (for Visual Genome images that have a `coco_id`)."""
    doc = _read_annotations(path)
    return _coco_captions(doc, path, _coco_images(doc, path))


def load_coco(captions_path: Path, instances_path: Path | None, image_prefix: str = "",
              source: str = "", dropped: Dropped | None = None) -> Iterator[Scene]:
    """Scenes from official COCO files, in the captions file's image order.

    Images without any caption make no scene (a text-only teacher has nothing to read);
    images without boxes still do. Boxes with no area or wholly outside their image are
    dropped and counted in `dropped`.
    """
    doc = _read_annotations(captions_path)  # read once: the captions file holds both images and captions
    images = _coco_images(doc, captions_path)
    captions = _coco_captions(doc, captions_path, images)
    boxes = _coco_boxes(instances_path, images, dropped if dropped is not None else Dropped()) \
        if instances_path else {}
    for image_id, img in images.items():
        if image_id in captions:
            yield Scene(_image_key(image_id), join_image(image_prefix, img["file_name"]),
                        captions[image_id], boxes.get(image_id, []), source,
                        width=img["width"], height=img["height"])


def load_coco_instances(path: Path, image_prefix: str = "", source: str = "",
                        dropped: Dropped | None = None) -> Iterator[Scene]:
    """Scenes from an instances file alone (its own `images` list): every image, its boxes with their crowd
    flag, its size, no captions (for checking answers against the annotations, not for a teacher)."""
    doc = _read_annotations(path)
    images = _coco_images(doc, path)
    boxes = _coco_boxes(path, images, dropped if dropped is not None else Dropped(), doc, "its 'images' list")
    del doc  # the parsed file is the large part: free it before the scenes stream out
    for image_id, img in images.items():
        yield Scene(_image_key(image_id), join_image(image_prefix, img["file_name"]), [],
                    boxes.get(image_id, []), source, width=img["width"], height=img["height"])


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
    seen: set[str] = set()
    for n, row in read_jsonl(path):
        scene = _caps_boxes_row(row, f"{path}:{n}", image_prefix, source)
        if scene.image_id in seen:
            raise UserError(f"{path}:{n}: duplicate id {scene.image_id!r} (record ids would collide)")
        seen.add(scene.image_id)
        yield scene
