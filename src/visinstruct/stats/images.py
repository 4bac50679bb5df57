"""Images under an image root: sizes from the file header only (PIL reads no pixels for `.size`), and small
thumbnails as data URLs for the HTML report. Paths are checked with core's `inside` (no escaping the root)."""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.errors import UserError
from ..core.io import inside

THUMB_SIDE = 256
SIZE_CACHE = 4096  # images shared by several records (one per task) are opened once while they are recent


def image_size(root: Path, relative: Any) -> tuple[int, int] | str:
    """(width, height) of one image of a record, or why there is none: `not a path`, `escapes the root`,
    `missing` or `unreadable`."""
    if not isinstance(relative, str) or not relative:
        return "not a path"
    return _cached_size(str(root), relative)


@functools.lru_cache(maxsize=SIZE_CACHE)
def _cached_size(root: str, relative: str) -> tuple[int, int] | str:
    try:
        path = inside(Path(root), relative, relative)
    except UserError:
        return "escapes the root"
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        return "missing"
    except Exception:  # PIL raises many kinds (OSError, SyntaxError, DecompressionBombError) for a bad file
        return "missing" if not path.is_file() else "unreadable"


def thumbnail_url(root: Path, relative: Any) -> str | None:
    """A data URL of the image shrunk to at most THUMB_SIDE pixels a side (JPEG, or PNG when it has alpha);
    None when the path is unsafe, missing or not an image."""
    if not isinstance(relative, str) or not relative:
        return None
    try:
        path = inside(root, relative, relative)
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at a reduced scale
            image.thumbnail((THUMB_SIDE, THUMB_SIDE))
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            converted = image.convert("RGBA" if alpha else "RGB")
    except Exception:  # an unsafe path (UserError), a missing or undecodable file: no thumbnail
        return None
    buffer = io.BytesIO()
    converted.save(buffer, "PNG" if alpha else "JPEG", quality=80)
    kind = "png" if alpha else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def clear_cache() -> None:
    """Forget cached sizes (a new run may see changed files)."""
    _cached_size.cache_clear()
