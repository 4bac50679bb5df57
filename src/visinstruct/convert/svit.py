"""SVIT's native rows → LLaVA-1.5 records.

A row is `{"image_id", "conversations": [{"content": [{"from": "user"|"gpt", "value"}]}]}` with several
conversations per image. Each conversation becomes one record: roles mapped, `<image>\\n` before the
first question; in referring conversations (`<st>…<ed>` markup) the tags are removed, every box is moved
into the square-padded frame and each question gets a response-format instruction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
from PIL import Image

from ..errors import UserError
from ..prompts import format_instruction, load_pack
from ..records import IMAGE_TOKEN, read_records, write_records
from ..referring import to_llava15
from ..visual_genome import image_file_name

ROLES = {"user": "human", "human": "human", "gpt": "gpt", "assistant": "gpt"}
ImageInfo = tuple[str, float, float]  # file (relative to the image root), width, height


def sizes_from_image_data(path: Path) -> dict[str, ImageInfo]:
    """image id → (file, width, height) from a Visual Genome `image_data.json` (streamed)."""
    found = {}
    with path.open("rb") as handle:
        for image in ijson.items(handle, "item", use_float=True):
            image_id = image.get("image_id", image.get("id"))
            found[str(image_id)] = (image_file_name(image), float(image["width"]), float(image["height"]))
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


def convert_row(row: dict[str, Any], info: ImageInfo, where: str) -> Iterator[dict[str, Any]]:
    """The LLaVA-1.5 records of one SVIT row."""
    file, width, height = info
    pack = load_pack("referring_qa", "en")
    extras = {k: v for k, v in row.items() if k not in ("image_id", "conversations")}
    for k, conversation in enumerate(row["conversations"]):
        record_id = f"{row['image_id']}_{k}"
        turns = _turns(conversation, f"{where}, conversation {k}")
        if any("<st>" in t["value"] for t in turns):
            for i, turn in enumerate(turns):
                turn["value"] = to_llava15(turn["value"], width, height)
                if turn["from"] == "human":
                    turn["value"] += " " + format_instruction(pack, record_id, i // 2)
        if not turns[0]["value"].startswith(IMAGE_TOKEN):
            turns[0]["value"] = f"{IMAGE_TOKEN}\n{turns[0]['value']}"
        more = {key: v for key, v in conversation.items() if key != "content"}
        yield {"id": record_id, "image": file, "conversations": turns, **extras, **more}


def svit_to_llava(src: Path, out: Path, image_data: Path | None, image_root: Path | None) -> int:
    """Convert SVIT rows; image sizes come from `image_data.json` or the image headers under the root."""
    if image_data:
        sizes = sizes_from_image_data(image_data)
    elif image_root:
        sizes = sizes_from_root(image_root)
    else:
        raise UserError("SVIT → LLaVA-1.5 needs image sizes: give --image-data image_data.json or --image-root DIR")

    def records() -> Iterator[dict[str, Any]]:
        for n, row in enumerate(read_records(src)):
            where = f"{src}: row {n}"
            if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("conversations"), list):
                raise UserError(f"{where}: needs 'image_id' and a 'conversations' list")
            info = sizes.get(str(row["image_id"]))
            if info is None:
                raise UserError(f"{where}: no size known for image {row['image_id']!r}")
            yield from convert_row(row, info, f"{where} (image {row['image_id']})")

    return write_records(out, records())
