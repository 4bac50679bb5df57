"""Images for a VLM teacher: found on disk, checked, oriented, downscaled only when needed, sent as data URLs.

Bytes are sent as they are when the format is one every VLM server takes (JPEG, PNG, WebP, GIF), no
EXIF rotation is pending and the long side is within `max_side`; otherwise the image is decoded,
turned upright, downscaled and re-encoded (JPEG, or PNG when it has transparency).
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
DEFAULT_MAX_PIXELS = 100_000_000
EXIF_ORIENTATION = 0x0112


class ImageError(Exception):
    """An image that cannot be sent; the message says why."""


@dataclass
class Prepared:
    """What goes to the teacher."""

    data: bytes
    mime: str
    width: int
    height: int
    reencoded: bool

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image in a format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image header: {exc}") from None
    if image.width * image.height > max_pixels:
        raise ImageError(f"refused: {image.width} x {image.height} = {image.width * image.height:,} pixels is "
                         f"above the limit of {max_pixels:,} (a decompression bomb?)")
    return image


def prepare_image(path: Path, max_side: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Read, check and (only when it must) re-encode one image; ImageError says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    image = _open(data, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode ({image.format}): {exc}") from None
    rotated = image.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
    if image.format in SENDABLE and not rotated and max(image.size) <= max_side:
        return Prepared(data, SENDABLE[image.format], image.width, image.height, False)
    upright = ImageOps.exif_transpose(image)
    upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        upright.save(out, "PNG", optimize=False)
        mime = "image/png"
    else:
        upright.convert("RGB").save(out, "JPEG", quality=90)
        mime = "image/jpeg"
    return Prepared(out.getvalue(), mime, upright.width, upright.height, True)


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes (what the request depends on), or a marker when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    except OSError as exc:
        return f"unreadable-{exc.errno}"


def estimate_image_tokens(path: Path, max_side: int) -> int:
    """Rough VLM image tokens: one per 28 x 28 patch of the size sent (Qwen2-VL style), from the header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:
        return 0
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale / 28)) * max(1, round(height * scale / 28))
