"""Images under --image-root: inside the root, present, and with a header PIL can read (its size is kept for
the box checks). Only the header is read: a file cut short after a good header passes here, as it would
pass the trainer's Image.open until the pixels are decoded (`validate --check-images` decodes them all)."""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

from ..core.io import safe_relative, stays_inside

Probe = tuple[str | None, str, tuple[int, int] | None]  # (problem kind or None, detail, (width, height))


@functools.lru_cache(maxsize=1 << 16)  # records share images (several tasks per photo); bounded memory
def probe(root: Path, name: str) -> Probe:
    """What is wrong with image `name` under `root`, or its size."""
    relative = safe_relative(name)
    if relative is None or not stays_inside(root, relative):
        return "image_outside_root", f"{name!r} is not a relative path inside the image root", None
    path = root / relative
    if not path.is_file():
        return "image_missing", f"{name} not found under {root}", None
    try:
        with Image.open(path) as image:
            return None, "", image.size
    except Exception as exc:  # PIL raises several types for bad files; all mean the trainer's load fails
        reason = str(exc).splitlines()[0] if str(exc) else ""
        return "image_undecodable", f"{name}: {type(exc).__name__}{': ' + reason if reason else ''}", None


def image_problems(root: Path, images: list[str]) -> tuple[list[tuple[str, str]], list[tuple[int, int] | None]]:
    """Problems of the record's images and the size of each (None when unreadable)."""
    problems, sizes = [], []
    for name in images:
        kind, detail, size = probe(root, name)
        if kind:
            problems.append((kind, detail))
        sizes.append(size)
    return problems, sizes
