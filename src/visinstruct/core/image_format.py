"""An image's format from its first bytes (never decoded): what an embedded or copied image file is."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

SIGNATURES = (
    (b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
    (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"),
)


def image_extension(data: bytes) -> str | None:
    """The extension of the image format these bytes start with (None: not an image we know)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return ".avif"
    return next((ext for magic, ext in SIGNATURES if data.startswith(magic)), None)


def require_image(data: bytes, path: Path, where: str) -> str:
    """The extension of the image format `data` starts with; an empty or non-image file is refused."""
    ext = image_extension(data)
    if ext is None:
        what = "an empty file" if not data else f"starts with {bytes(data[:8])!r}"
        raise UserError(f"{where}: {path} is not a known image format ({what})")
    return ext
