"""`--schema`: the record keys each published dataset uses, written from the same generated records.

- `llava` (default): `id` (unique per record), `image`, `conversations`, and the provenance keys `task`, `lang`,
  `source` (and `topic` for SVIT-style topic conversations); trainers ignore the extra keys.
- `llava-instruct-ru`: LLaVA-Instruct-ru's four fields: `type` (the task), `conversations`, `id` (the image's id
  in its annotations — COCO's id, an integer, so not unique per row) and `image`.
- `svit`: SVIT's native rows: one row per unit, `{"image_id", "conversations": [{"topic"?, "content": [{"from":
  "user"|"gpt", "value"}]}]}`, no `<image>` token; tasks marked `single_turn_rows` (complex reasoning, referring
  QA) give each question/answer pair its own conversation, as SVIT's files do. `convert --from svit` reads it back.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UserError
from ..core.records import IMAGE_TOKEN
from .tasks import Task

SCHEMAS = ("llava", "llava-instruct-ru", "svit")
_SVIT_ROLES = {"human": "user", "gpt": "gpt"}


def check_schema(schema: str, referring_style: str) -> None:
    """Refuse combinations a schema cannot hold."""
    if schema not in SCHEMAS:
        raise UserError(f"unknown schema {schema!r}; choose from {', '.join(SCHEMAS)}")
    if schema == "svit" and referring_style != "native":
        raise UserError("--schema svit keeps SVIT's native <st>…<ed> [box] markup: use --referring-style native "
                        "(then `convert --from svit` makes LLaVA-1.5 rows)")


def _image_id(image_id: str) -> int | str:
    return int(image_id) if image_id.isdigit() else image_id


def _svit_turns(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for turn in turns:
        value = turn["value"]
        if value.startswith(IMAGE_TOKEN):
            value = value[len(IMAGE_TOKEN):].lstrip("\n")
        out.append({"from": _SVIT_ROLES[turn["from"]], "value": value})
    return out


def _svit_conversations(record: dict[str, Any], task: Task) -> list[dict[str, Any]]:
    turns = _svit_turns(record["conversations"])
    if task.single_turn_rows:
        return [{"content": turns[i:i + 2]} for i in range(0, len(turns), 2)]
    conversation: dict[str, Any] = {"topic": record["topic"]} if record.get("topic") else {}
    return [{**conversation, "content": turns}]


def shape(schema: str, image_id: str, task: Task, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows one unit's records become under `schema`."""
    if not records or schema == "llava":
        return records
    if schema == "llava-instruct-ru":
        return [{"type": r["task"], "conversations": r["conversations"], "id": _image_id(image_id),
                 "image": r["image"]} for r in records]
    conversations = [c for r in records for c in _svit_conversations(r, task)]
    return [{"image_id": _image_id(image_id), "conversations": conversations}]
