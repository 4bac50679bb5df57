"""Image-folder sources (VLM mode): one scene per image file in a folder, or per line of a list file."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import UserError
from ..core.io import safe_relative
from .scene import Scene, join_image


def _lines(path: Path) -> list[str]:
    """The list file's lines; a byte that is not UTF-8 is reported with its line and byte offset."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset "
                        f"{exc.start:,})") from None


def _list_file(path: Path) -> list[tuple[Path, str]]:
    entries = []
    for n, line in enumerate(_lines(path), start=1):
        name = line.strip()
        if name and not name.startswith("#"):
            if safe_relative(name) is None:
                raise UserError(f"{path}:{n}: image paths must be relative to the list's folder: {name}")
            entries.append((path.parent / name, name))
    return entries


def image_scenes(source: Path, image_prefix: str = "", label: str = "") -> list[Scene]:
    """One scene per file under a folder (hidden files skipped) or per line of a list file."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(source).parts))
        entries = [(p, p.relative_to(source).as_posix()) for p in files]
    elif source.is_file():
        entries = _list_file(source)
    else:
        raise UserError(f"{source}: no such folder or list file")
    if not entries:
        what = "the folder holds no file but hidden ones" if source.is_dir() else "the list file names no image"
        raise UserError(f"no images in {source} ({what})")
    return [Scene(os.path.splitext(rel)[0], join_image(image_prefix, rel), [], source=label, file=path)
            for path, rel in entries]
