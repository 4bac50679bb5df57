"""Prompt packs: per-language, per-task teacher prompts stored as data under `prompt_packs/`.

A pack holds a system message, few-shot examples (scene text → reference reply), the turn labels
the examples use and, for description tasks, the list of human instructions to draw from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..core.errors import UserError
from ..core.referring import seeded_index
from ..sources.scene import Scene, scene_text
from .tasks import LANGS, Task


@dataclass(frozen=True)
class PromptPack:
    """The teacher prompt for one task in one language."""

    task: Task
    lang: str
    system: str
    examples: tuple[tuple[str, str], ...]
    question_label: str
    answer_label: str
    max_pairs: int
    instructions: tuple[str, ...]
    user: str = ""  # vlm: the text sent with the image


@cache
def load_pack(task: Task, lang: str) -> PromptPack:
    """Read `prompt_packs/<lang>/<pack file>.json` shipped inside the package."""
    if lang not in LANGS:
        raise UserError(f"unknown language {lang!r}; choose from {', '.join(LANGS)}")
    if not task.teacher:  # made from the annotations (presence): no teacher prompt
        return PromptPack(task, lang, "", (), "", "", 1, ())
    path = resources.files(__package__).joinpath("prompt_packs", lang, f"{task.pack_name}.json")
    raw = json.loads(path.read_text("utf-8"))
    return PromptPack(
        task=task, lang=lang, system=raw["system"],
        examples=tuple((ex["scene"], ex["reply"]) for ex in raw["examples"]),
        question_label=raw["labels"]["question"], answer_label=raw["labels"]["answer"],
        max_pairs=int(raw.get("max_pairs", 1)), instructions=tuple(raw.get("instructions", ())),
        user=raw.get("user", ""),
    )


def build_messages(pack: PromptPack, scene: Scene, image_url: str | None = None,
                   text: str | None = None) -> list[dict[str, Any]]:
    """System message, few-shot user/assistant pairs, then this scene (or the image) as the last user turn
    (`text`: the scene's text for the pack's view, when the caller has it already)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": pack.system}]
    for example_scene, reply in pack.examples:
        messages.append({"role": "user", "content": example_scene})
        messages.append({"role": "assistant", "content": reply})
    if pack.task.mode == "vlm":
        content: Any = [{"type": "text", "text": pack.user}, {"type": "image_url", "image_url": {"url": image_url}}]
    else:
        content = text if text is not None else scene_text(scene, pack.task.view)
    messages.append({"role": "user", "content": content})
    return messages


def detail_instruction(pack: PromptPack, unit_id: str) -> str:
    """The human turn of a description record, drawn by a seed derived from the unit id."""
    return pack.instructions[seeded_index(unit_id, len(pack.instructions))]
