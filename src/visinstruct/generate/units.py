"""Units of work: one (scene, task, language, sample index), keyed by a hash of its full request."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.referring import seeded_index
from ..core.tokens import TokenCounter, estimate_tokens
from ..sources.scene import Scene, scene_text
from .ledger import chunks
from .presence import Cooccurrence, presence_reply
from .prompts import PromptPack, build_messages, load_pack
from .tasks import Task
from .vlm import DEFAULT_MAX_PIXELS, estimate_image_tokens, fingerprint, prepare_image

GROUP = 256  # scenes whose units are sent task by task


@dataclass
class Sampling:
    """Decoding settings sent with every request (None: the server's default)."""

    temperature: float | None
    top_p: float | None
    max_tokens: int


@dataclass(frozen=True)
class SceneInfo:
    """What a unit keeps of its scene: ids, the image path (and file, for a VLM) and size — not the annotations."""

    image_id: str
    image: str
    source: str = ""
    width: float | None = None
    height: float | None = None
    file: Path | None = None

    @classmethod
    def of(cls, scene: Scene) -> SceneInfo:
        return cls(scene.image_id, scene.image, scene.source, scene.width, scene.height, scene.file)


@dataclass
class Unit:
    """One request to the teacher and what is needed to turn its reply into a record."""

    unit_id: str
    key: str
    info: SceneInfo
    pack: PromptPack
    sample: int
    request: dict[str, Any]
    prompt_estimate: int
    max_side: int = 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    local_reply: str | None = None  # a task with no teacher (presence): the reply, made from the annotations

    def with_image(self) -> dict[str, Any]:
        """The request with the image placeholder replaced by the prepared image's data URL."""
        prepared = prepare_image(self.info.file, self.max_side, self.max_pixels)
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


def _last_turn(scene: Scene, pack: PromptPack, image: tuple[str, int] | None,
               count: Callable[[str], int], texts: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """The messages for one scene and the tokens of the last user turn (`texts`: the scene's text by view,
    made once for all its tasks)."""
    if image is None:
        view = pack.task.view
        if view not in texts:
            texts[view] = scene_text(scene, view)
        messages = build_messages(pack, scene, text=texts[view])
        return messages, count(messages[-1]["content"]) + 4
    placeholder, image_tokens = image
    return build_messages(pack, scene, placeholder), count(pack.user) + image_tokens + 4


def make_units(scenes: Iterable[Scene], tasks: list[Task], lang: str, samples: int, model: str, sampling: Sampling,
               images: ImageOptions | None = None, assigned: Iterable[str | None] | None = None,
               counter: TokenCounter | None = None, cooc: Cooccurrence | None = None) -> Iterator[Unit]:
    """Every unit, in a stable order: GROUP scenes at a time, task by task within a group (so requests that
    share a prompt prefix go out together). VLM requests hold an image placeholder (hash of its bytes).

    `assigned` (from `--task-mix`) names the one task of each scene, in scene order (None: no task).
    `counter` (a real tokenizer, --tokenizer) counts prompt tokens; else they are estimated.
    `cooc` (co-occurrence counts over the whole input) is what the presence task picks absent objects from.
    """
    count = (lambda text: counter.count([text])) if counter is not None else estimate_tokens
    images = images or ImageOptions()
    packs = [load_pack(task, lang) for task in tasks]
    vlm = any(t.mode == "vlm" for t in tasks)
    fixed = {p.task: sum(count(m["content"]) + 4 for m in build_messages(p, Scene("", "", []))[:-1])
             for p in packs if p.task.teacher}
    choices = iter(assigned) if assigned is not None else None
    for group in chunks(scenes, GROUP):
        picked = [(scene, next(choices) if choices is not None else "") for scene in group]
        picked = [(scene, only) for scene, only in picked if only is not None]
        shown = {id(scene): _vlm_image(scene, images) for scene, _ in picked} if vlm else {}
        texts: dict[int, dict[str, str]] = {id(scene): {} for scene, _ in picked}
        for pack in packs:  # grouped by prompt prefix: a caching server sees the same prefix back to back
            for scene, only in picked:
                if (only and pack.task.name != only) or (pack.task.referring and not (scene.boxes or scene.regions)):
                    continue  # not this scene's task, or nothing to refer to
                if not pack.task.teacher:
                    yield from _local_units(scene, pack, samples, cooc or Cooccurrence())
                    continue
                yield from _units(scene, pack, shown.get(id(scene)), samples, model, sampling, images,
                                  fixed[pack.task], count, texts[id(scene)])


def _local_units(scene: Scene, pack: PromptPack, samples: int, cooc: Cooccurrence) -> Iterator[Unit]:
    """Units answered without a teacher (presence): the key hashes the reply, so new counts make new units."""
    info = SceneInfo.of(scene)
    for sample in range(samples):
        unit_id = f"{scene.image_id}-{pack.task.name}-{sample}"
        reply = presence_reply(scene, pack.lang, unit_id, cooc)
        if reply is None:
            continue  # nothing to ask about this image
        digest = hashlib.sha256(reply.encode()).hexdigest()
        request = {"model": f"visinstruct:{pack.task.name}", "max_tokens": 0,
                   "messages": [{"role": "user", "content": digest}], "seed": seeded_index(unit_id, 2**31)}
        yield Unit(unit_id, request_key(request), info, pack, sample, request, 0, local_reply=reply)


def _units(scene: Scene, pack: PromptPack, image: tuple[str, int] | None, samples: int, model: str,
           sampling: Sampling, images: ImageOptions, fixed: int, count: Callable[[str], int],
           texts: dict[str, str]) -> Iterator[Unit]:
    """The units of one scene and task, one per sample."""
    messages, last_tokens = _last_turn(scene, pack, image, count, texts)
    info = SceneInfo.of(scene)
    for sample in range(samples):
        unit_id = f"{scene.image_id}-{pack.task.name}-{sample}"
        request = _request(model, messages, sampling, seeded_index(unit_id, 2**31))
        yield Unit(unit_id, request_key(request), info, pack, sample, request, fixed + last_tokens,
                   images.max_side, images.max_pixels)
