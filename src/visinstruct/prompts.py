"""Prompt packs: per-language, per-task teacher prompts stored as data under `prompt_packs/`.

A pack holds a system message, few-shot examples (scene text → reference reply), the turn labels
the examples use and, for `detail_description`, the list of human instructions to draw from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .errors import UserError
from .scenes import Scene, scene_text

LANGS = ("en", "ru", "zh")
TASKS = ("conversation", "detail_description", "complex_reasoning", "referring_qa")
DEFAULT_TASKS = ("conversation", "detail_description", "complex_reasoning")
# A VLM teacher sees the pixels instead of annotations (llava-instruct-zh-600k style).
VLM_TASKS = ("dialogue", "complex_reasoning", "captioning")
MODES = {"text": TASKS, "vlm": VLM_TASKS}
# What each task's teacher reads (see scenes.scene_text): LLaVA gave the conversation task captions
# only, the other two captions and boxes; referring QA reads the boxed regions (SVIT).
TASK_VIEW = {"conversation": "captions", "detail_description": "full", "complex_reasoning": "full",
             "referring_qa": "regions"}


@dataclass(frozen=True)
class PromptPack:
    """The teacher prompt for one task in one language."""

    task: str
    lang: str
    system: str
    examples: tuple[tuple[str, str], ...]
    question_label: str
    answer_label: str
    max_pairs: int
    instructions: tuple[str, ...]
    format_instructions: tuple[str, ...] = ()
    mode: str = "text"
    user: str = ""  # vlm: the text sent with the image


@cache
def load_pack(task: str, lang: str, mode: str = "text") -> PromptPack:
    """Read `prompt_packs/<lang>/<task>.json` (vlm mode: `vlm_<task>.json`) shipped inside the package."""
    tasks = MODES.get(mode, ())
    if task not in tasks:
        raise UserError(f"unknown {mode} task {task!r}; choose from {', '.join(tasks)}")
    if lang not in LANGS:
        raise UserError(f"unknown language {lang!r}; choose from {', '.join(LANGS)}")
    name = f"{task}.json" if mode == "text" else f"vlm_{task}.json"
    raw = json.loads(resources.files(__package__).joinpath("prompt_packs", lang, name).read_text("utf-8"))
    return PromptPack(
        task=task, lang=lang, system=raw["system"],
        examples=tuple((ex["scene"], ex["reply"]) for ex in raw["examples"]),
        question_label=raw["labels"]["question"], answer_label=raw["labels"]["answer"],
        max_pairs=int(raw.get("max_pairs", 1)), instructions=tuple(raw.get("instructions", ())),
        format_instructions=tuple(raw.get("format_instructions", ())), mode=mode, user=raw.get("user", ""),
    )


def build_messages(pack: PromptPack, scene: Scene, image_url: str | None = None) -> list[dict[str, Any]]:
    """System message, few-shot user/assistant pairs, then this scene (or the image) as the last user turn."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": pack.system}]
    for example_scene, reply in pack.examples:
        messages.append({"role": "user", "content": example_scene})
        messages.append({"role": "assistant", "content": reply})
    if pack.mode == "vlm":
        content: Any = [{"type": "text", "text": pack.user}, {"type": "image_url", "image_url": {"url": image_url}}]
    else:
        content = scene_text(scene, TASK_VIEW[pack.task])
    messages.append({"role": "user", "content": content})
    return messages


def seeded_index(key: str, n: int) -> int:
    """A stable choice in range(n) derived from `key` (same key → same choice on every run)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def format_instruction(pack: PromptPack, unit_id: str, turn: int) -> str:
    """The response-format instruction appended to a referring question (LLaVA-1.5 style), seeded."""
    return pack.format_instructions[seeded_index(f"{unit_id}:{turn}", len(pack.format_instructions))]


def detail_instruction(pack: PromptPack, unit_id: str) -> str:
    """The human turn of a detail_description record, drawn by a seed derived from the unit id."""
    return pack.instructions[seeded_index(unit_id, len(pack.instructions))]
