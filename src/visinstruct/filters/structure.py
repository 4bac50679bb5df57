"""Structure checks shared by `validate` and the filter's first stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ..core.io import safe_relative, stays_inside
from ..core.records import IMAGE_TOKEN, image_token_count, images_of
from .base import Reject, Verdict

ROLES = ("human", "gpt", "system")


def _turn_problems(turns: list[Any]) -> list[str]:
    problems = []
    expected = "human"
    start = 1 if turns and isinstance(turns[0], dict) and turns[0].get("from") == "system" else 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            problems.append(f"bad_turn: turn {i} is not an object")
            continue
        if turn.get("from") not in ROLES:
            problems.append(f"bad_from: turn {i} has from={turn.get('from')!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            problems.append(f"bad_value: turn {i} value is {type(value).__name__}, not a string")
        elif not value.strip() or value.strip() == IMAGE_TOKEN:
            problems.append(f"empty_value: turn {i} is empty")
        if i >= start and turn.get("from") in ("human", "gpt"):
            if turn.get("from") != expected:
                problems.append(f"no_alternation: turn {i} is {turn.get('from')}, expected {expected}")
            expected = "gpt" if turn.get("from") == "human" else "human"
    if turns and isinstance(turns[-1], dict) and turns[-1].get("from") != "gpt":
        problems.append("not_ending_with_gpt: the last turn is not from gpt")
    return problems


def _image_problems(record: dict[str, Any], image_root: Path | None, check_images: bool,
                    allow_untagged: bool) -> list[str]:
    images = images_of(record)
    wrong = [name for name in images if not isinstance(name, str) or not name]
    if wrong:  # checked with or without an image root: no tool can open `"image": 5`
        return [f"bad_image: {wrong[0]!r} is not an image path (a non-empty string)"]
    tokens = image_token_count(record)
    problems = []
    if tokens != len(images) and not (allow_untagged and tokens == 0 and len(images) == 1):
        problems.append(f"image_token_mismatch: {tokens} <image> token(s) for {len(images)} image(s)")
    for name in images if image_root else []:
        path = safe_relative(name)
        if path is None or not stays_inside(image_root, path):
            problems.append(f"bad_image_path: {name!r} is not a relative path inside the image root")
            continue
        full = image_root / path
        if not full.is_file():
            problems.append(f"image_missing: {name} not found under {image_root}")
        elif check_images:
            try:
                with Image.open(full) as image:
                    image.load()
            except Exception as exc:
                problems.append(f"image_undecodable: {name} ({type(exc).__name__}: {exc})")
    return problems


def problems(record: Any, image_root: Path | None = None, check_images: bool = False,
             allow_untagged: bool = False) -> list[str]:
    """Everything structurally wrong with one record, each as `code: details`."""
    if not isinstance(record, dict):
        return [f"not_an_object: the record is a {type(record).__name__}"]
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["no_conversations: missing or empty 'conversations' list"]
    found = _turn_problems(turns)
    if not found:
        found = _image_problems(record, image_root, check_images, allow_untagged)
    return found


class StructureFilter:
    """Stage 1: reject records with any structural problem (the first one is the reason)."""

    name = "structure"

    def __init__(self, image_root: Path | None = None, check_images: bool = False,
                 allow_untagged: bool = False) -> None:
        self.image_root, self.check_images, self.allow_untagged = image_root, check_images, allow_untagged

    def check(self, record: dict[str, Any]) -> Verdict:
        found = problems(record, self.image_root, self.check_images, self.allow_untagged)
        return Reject(found[0]) if found else None
