"""LLaVA → WebDataset tar shards: per sample the image file(s) and a json with the record."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import orjson

from ..errors import UserError
from ..records import read_records
from .files import NameBook, image_extension, inside, safe_stem


def _member(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


class TarShards:
    """Tar files of `shard_size` samples each, written to a temporary name and renamed when complete."""

    def __init__(self, out: Path, shard_size: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.shard_size, self.index, self.count = out, shard_size, 0, 0
        self.tar: tarfile.TarFile | None = None
        self.tmp: Path | None = None

    def add(self, key: str, files: list[tuple[str, bytes]]) -> None:
        if self.tar is None:
            self.tmp = self.out / f".shard-{self.index:06d}.tar.tmp"
            self.tar = tarfile.open(self.tmp, "w")  # noqa: SIM115 - spans many add() calls; close() ends it
        now = time.time()
        for suffix, data in files:
            _member(self.tar, f"{key}.{suffix}", data, now)
        self.count += 1
        if self.count == self.shard_size:
            self.close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            os.replace(self.tmp, self.out / f"shard-{self.index:06d}.tar")
            self.tar, self.index, self.count = None, self.index + 1, 0


def llava_to_webdataset(src: Path, out: Path, image_root: Path, shard_size: int = 1000) -> int:
    """Write shards `shard-000000.tar`, ...; keys are safe, unique and dot-free. Returns samples written."""
    shards, book, n = TarShards(out, shard_size), NameBook(), 0
    for n, record in enumerate(read_records(src), start=1):
        where = f"{src}: record {n - 1} (id {record.get('id')!r})"
        key = book.claim(safe_stem(str(record.get("id", n - 1)), f"sample{n - 1}").replace(".", "_"))
        files: list[tuple[str, bytes]] = []
        paths = record.get("image")
        paths = [] if paths is None else paths if isinstance(paths, list) else [paths]
        for k, relative in enumerate(paths):
            files.append(_image_file(inside(image_root, relative, where), where, k if len(paths) > 1 else None))
        files.append(("json", orjson.dumps(record)))
        shards.add(key, files)
    shards.close()
    return n


def _image_file(path: Path, where: str, index: int | None) -> tuple[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{where}: cannot read image {path} ({exc.strerror or exc})") from None
    ext = image_extension(data)
    if ext is None:
        raise UserError(f"{where}: {path} is not a known image format")
    return (ext[1:] if index is None else f"{index}{ext}"), data
