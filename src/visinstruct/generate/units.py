"""Units of work: one (scene, task, language, sample index), keyed by a hash of its full request."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.referring import seeded_index
from ..core.tokens import estimate_tokens
from ..sources.scene import Scene
from .prompts import PromptPack, build_messages, load_pack
from .tasks import Task
from .vlm import DEFAULT_MAX_PIXELS, estimate_image_tokens, fingerprint, prepare_image


@dataclass
class Sampling:
    """Decoding settings sent with every request (None: the server's default)."""

    temperature: float | None
    top_p: float | None
    max_tokens: int


@dataclass
class Unit:
    """One request to the teacher and what is needed to turn its reply into a record."""

    unit_id: str
    key: str
    scene: Scene
    pack: PromptPack
    sample: int
    request: dict[str, Any]
    prompt_estimate: int
    max_side: int = 1024
    max_pixels: int = DEFAULT_MAX_PIXELS

    def with_image(self) -> dict[str, Any]:
        """The request with the image placeholder replaced by the prepared image's data URL."""
        prepared = prepare_image(self.scene.file, self.max_side, self.max_pixels)
        *head, last = self.request["messages"]
        text = last["content"][0]
        image = {"type": "image_url", "image_url": {"url": prepared.data_url()}}
        return {**self.request, "messages": [*head, {**last, "content": [text, image]}]}


def request_key(request: dict[str, Any]) -> str:
    """Hash of everything that shapes the request (model, messages, sampling, seed)."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _request(model: str, messages: list[dict[str, str]], sampling: Sampling, seed: int) -> dict[str, Any]:
    request: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": sampling.max_tokens,
                               "seed": seed}
    if sampling.temperature is not None:
        request["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        request["top_p"] = sampling.top_p
    return request


@dataclass
class ImageOptions:
    """How images are prepared for a VLM teacher."""

    max_side: int = 1024
    max_pixels: int = DEFAULT_MAX_PIXELS


def _vlm_image(scene: Scene, images: ImageOptions) -> tuple[str, int]:
    """(placeholder naming the image's hash, estimated image tokens): read once per scene, not per task."""
    return (f"visinstruct-image:{fingerprint(scene.file)}:{images.max_side}",
            estimate_image_tokens(scene.file, images.max_side))


def _last_turn(scene: Scene, pack: PromptPack, image: tuple[str, int] | None) -> tuple[list[dict[str, Any]], int]:
    """The messages for one scene and the estimated tokens of the last user turn."""
    if image is None:
        messages = build_messages(pack, scene)
        return messages, estimate_tokens(messages[-1]["content"]) + 4
    placeholder, image_tokens = image
    return build_messages(pack, scene, placeholder), estimate_tokens(pack.user) + image_tokens + 4


def make_units(scenes: Iterable[Scene], tasks: list[Task], lang: str, samples: int, model: str, sampling: Sampling,
               images: ImageOptions | None = None, assigned: Iterable[str | None] | None = None) -> Iterator[Unit]:
    """Every unit, scene by scene, in a stable order. VLM requests hold an image placeholder (hash of its bytes).

    `assigned` (from `--task-mix`) names the one task of each scene, in scene order (None: no task).
    """
    images = images or ImageOptions()
    packs = [load_pack(task, lang) for task in tasks]
    vlm = any(t.mode == "vlm" for t in tasks)
    fixed = {p.task: sum(estimate_tokens(m["content"]) + 4 for m in build_messages(p, Scene("", "", []))[:-1])
             for p in packs}
    choices = iter(assigned) if assigned is not None else None
    for scene in scenes:
        only = next(choices) if choices is not None else ""
        if only is None:
            continue
        image = _vlm_image(scene, images) if vlm else None
        for pack in packs:
            if (only and pack.task.name != only) or (pack.task.referring and not (scene.boxes or scene.regions)):
                continue  # not this scene's task, or nothing to refer to
            messages, last_tokens = _last_turn(scene, pack, image)
            for sample in range(samples):
                unit_id = f"{scene.image_id}-{pack.task.name}-{sample}"
                request = _request(model, messages, sampling, seeded_index(unit_id, 2**31))
                yield Unit(unit_id, request_key(request), scene, pack, sample, request,
                           fixed[pack.task] + last_tokens, images.max_side, images.max_pixels)
