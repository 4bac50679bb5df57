"""Image files for conversions: real format from the bytes, safe unique names, paths kept inside a root."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserError

SIGNATURES = (
    (b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
    (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"),
)
_UNSAFE = re.compile(r"[^\w.-]+")


def image_extension(data: bytes) -> str | None:
    """The extension of the image format these bytes start with (None: not an image we know)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return ".avif"
    return next((ext for magic, ext in SIGNATURES if data.startswith(magic)), None)


def safe_stem(name: str, fallback: str) -> str:
    """A file-name stem from an id: no separators, no leading dots, nothing that climbs out of a folder."""
    stem = re.sub(r"[._]{2,}", "_", _UNSAFE.sub("_", name)).strip("._")[:120]
    return stem or fallback


class NameBook:
    """Hands out file names that never collide (case-insensitively), in a stable order."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, stem: str) -> str:
        name, n = stem, 1
        while name.lower() in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name.lower())
        return name


def inside(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, refusing absolute paths and paths that climb out of the root."""
    if not isinstance(relative, str) or not relative:
        raise UserError(f"{where}: 'image' must be a non-empty path string, got {relative!r}")
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(f"{where}: image path {relative!r} escapes the image root (absolute or '..')")
    return root / candidate


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write to a temporary name beside `path`, then rename: a killed run never leaves a half image."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
