"""Image files for conversions: real format from the bytes, safe unique names, """

from __future__ import annotations

import re

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
