"""The LLaVA record: building one, and reading its images whatever shape `image` has."""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"


def make_conversations(pairs: list[tuple[str, str]], split: str) -> list[dict[str, str]]:
    """Alternating human/gpt turns; on the train split the first human turn starts with `<image>\\n`."""
    turns = []
    for i, (question, answer) in enumerate(pairs):
        if i == 0 and split == "train":
            question = f"{IMAGE_TOKEN}\n{question}"
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def make_record(record_id: str, image: str, pairs: list[tuple[str, str]], split: str,
                task: str, lang: str, source: str) -> dict[str, Any]:
    """One LLaVA record with the provenance keys `task`, `lang` and `source`."""
    return {"id": record_id, "image": image, "conversations": make_conversations(pairs, split),
            "task": task, "lang": lang, "source": source}


def images_of(record: dict[str, Any]) -> list[Any]:
    """The record's images as a list: `image` may be one path, a list of paths (multi-image), or absent."""
    image = record.get("image")
    return [] if image is None else image if isinstance(image, list) else [image]


def image_token_count(record: dict[str, Any]) -> int:
    """How many `<image>` tokens the record's turns hold."""
    return sum(t["value"].count(IMAGE_TOKEN) for t in record.get("conversations") or []
               if isinstance(t, dict) and isinstance(t.get("value"), str))


def vg_image_file_name(image: dict[str, Any]) -> str:
    """A Visual Genome image's file: `VG_100K/1.jpg` from its URL (the last two path parts), or its own name."""
    if isinstance(image.get("file_name"), str):
        return image["file_name"]
    url = image.get("url")
    if isinstance(url, str) and "/" in url:
        return "/".join(url.rstrip("/").split("/")[-2:])
    return f"{image['image_id'] if 'image_id' in image else image['id']}.jpg"
