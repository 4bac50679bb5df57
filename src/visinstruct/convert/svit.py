"""SVIT's native rows → LLaVA-1.5 records.

A row is `{"image_id", "conversations": [{"content": [{"from": "user"|"gpt", "value"}]}]}` with several
conversations per image. Each conversation becomes one record: roles mapped, `<image>\\n` before the
first question; in referring conversations (`<st>…<ed>` markup in any turn) the tags are removed, every
box is moved into the square-padded frame and each question gets one of SVIT's three response-format
instructions, as in SVIT's published `format/llava-v1.5` rows. Boxes are padded with SVIT's own
rounding by default (integer pixels, `//` 2 shift) or with exact arithmetic (`rounding="exact"`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.boxes import BOX_ROUNDINGS
from ..core.errors import UserError
from ..core.io import stream_items
from ..core.records import IMAGE_TOKEN, vg_image_file_name
from ..core.referring import INSTRUCTION_SEPARATOR, svit_instruction, to_llava15
from ..core.step import Item, Step

ROLES = {"user": "human", "human": "human", "gpt": "gpt", "assistant": "gpt"}
ImageInfo = tuple[str, float, float]  # file (relative to the image root), width, height


def sizes_from_image_data(path: Path) -> dict[str, ImageInfo]:
    """image id → (file, width, height) from a Visual Genome `image_data.json` (streamed)."""
    found = {}
    for n, image in enumerate(stream_items(path)):
        try:
            image_id = image.get("image_id", image.get("id"))
            found[str(image_id)] = (vg_image_file_name(image), float(image["width"]), float(image["height"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise UserError(f"{path}: entry {n} needs an image id, width and height") from None
    return found


def sizes_from_root(root: Path) -> dict[str, ImageInfo]:
    """image id → (file, width, height), by file stem, reading only image headers under `root`."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            try:
                with Image.open(path) as image:
                    found[path.stem] = (path.relative_to(root).as_posix(), *map(float, image.size))
            except OSError:
                continue
    return found


def _turns(conversation: Any, where: str) -> list[dict[str, str]]:
    content = conversation.get("content") if isinstance(conversation, dict) else None
    if not isinstance(content, list) or not content:
        raise UserError(f"{where}: needs a non-empty 'content' list")
    turns = []
    for i, turn in enumerate(content):
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise UserError(f"{where}: turn {i} needs 'from' (user or gpt) and a string 'value'")
        if role != ("human" if i % 2 == 0 else "gpt"):
            raise UserError(f"{where}: turn {i} breaks the user/gpt alternation")
        turns.append({"from": role, "value": turn["value"]})
    return turns


def to_referring_llava15(turns: list[dict[str, str]], record_id: str, width: float, height: float,
                         rounding: str) -> None:
    """In place: tags removed, boxes padded, and an SVIT instruction after every question."""
    for i, turn in enumerate(turns):
        turn["value"] = to_llava15(turn["value"], width, height, rounding)
        if turn["from"] == "human":
            turn["value"] += INSTRUCTION_SEPARATOR + svit_instruction(record_id, i // 2)


def convert_row(row: dict[str, Any], info: ImageInfo, where: str,
                rounding: str = "svit") -> Iterator[dict[str, Any]]:
    """The LLaVA-1.5 records of one SVIT row."""
    file, width, height = info
    extras = {k: v for k, v in row.items() if k not in ("image_id", "conversations")}
    for k, conversation in enumerate(row["conversations"]):
        record_id = f"{row['image_id']}_{k}"
        turns = _turns(conversation, f"{where}, conversation {k}")
        if any("<st>" in t["value"] for t in turns):
            to_referring_llava15(turns, record_id, width, height, rounding)
        if not turns[0]["value"].startswith(IMAGE_TOKEN):
            turns[0]["value"] = f"{IMAGE_TOKEN}\n{turns[0]['value']}"
        more = {key: v for key, v in conversation.items() if key != "content"}
        yield {"id": record_id, "image": file, "conversations": turns, **extras, **more}


class SvitStep(Step):
    """Stateless flat-map: one SVIT row in, its LLaVA-1.5 records out (image sizes looked up by image id)."""

    name = "svit_to_llava"

    def __init__(self, sizes: dict[str, ImageInfo], rounding: str = "svit") -> None:
        super().__init__()
        if rounding not in BOX_ROUNDINGS:
            raise UserError(f"unknown box rounding {rounding!r}; choose from {', '.join(BOX_ROUNDINGS)}")
        self.sizes, self.rounding = sizes, rounding

    def process(self, items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            row = item.record
            if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("conversations"), list):
                raise UserError(f"{item.where}: needs 'image_id' and a 'conversations' list")
            info = self.sizes.get(str(row["image_id"]))
            if info is None:
                raise UserError(f"{item.where}: no size known for image {row['image_id']!r}")
            out += [Item(item.index, record, item.where)
                    for record in convert_row(row, info, f"{item.where} (image {row['image_id']})", self.rounding)]
        return out


def svit_sizes(image_data: Path | None, image_root: Path | None) -> dict[str, ImageInfo]:
    """Image sizes from `image_data.json` or from the image headers under the root."""
    if image_data:
        return sizes_from_image_data(image_data)
    if image_root:
        return sizes_from_root(image_root)
    raise UserError("SVIT → LLaVA-1.5 needs image sizes: give --image-data image_data.json or --image-root DIR")
