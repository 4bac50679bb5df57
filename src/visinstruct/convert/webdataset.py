"""LLaVA → WebDataset tar shards: per sample the image file(s) and a json with the record."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import UserError
from ..core.image_format import require_image
from ..core.io import AtomicDir, AtomicFile, inside
from ..core.records import images_of
from ..core.step import Item, Step
from .checks import check_llava
from .files import NameBook, safe_stem


def _member(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


class TarShards:
    """Tar files of `shard_size` samples each, each written through the atomic writer."""

    def __init__(self, out: Path, shard_size: int) -> None:
        self.out, self.shard_size, self.index, self.count = out, shard_size, 0, 0
        self.file: AtomicFile | None = None
        self.tar: tarfile.TarFile | None = None

    def add(self, key: str, files: list[tuple[str, bytes]]) -> None:
        if self.tar is None:
            self.file = AtomicFile(self.out / f"shard-{self.index:06d}.tar")
            self.tar = tarfile.open(fileobj=self.file.__enter__(), mode="w")  # noqa: SIM115 - closed in close()
        now = time.time()
        for suffix, data in files:
            _member(self.tar, f"{key}.{suffix}", data, now)
        self.count += 1
        if self.count == self.shard_size:
            self.close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.file.__exit__(None, None, None)
            self.tar, self.file, self.index, self.count = None, None, self.index + 1, 0

    def abort(self) -> None:
        if self.file is not None:
            self.file.__exit__(RuntimeError, None, None)
            self.tar = self.file = None


class WdsFilesStep(Step):
    """Stateless: each record's image files read (bytes as they are) and its json, ready for a tar."""

    name = "read_images"
    batch_size = 32  # items carry image bytes: keep what is in flight small

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def process(self, items: list[Item]) -> list[Item]:
        for item in items:
            record = item.record
            where = check_llava(record, item.where)
            paths = images_of(record)
            files = [_image_file(inside(self.root, relative, where), where, k if len(paths) > 1 else None)
                     for k, relative in enumerate(paths)]
            item.extra = {"files": [*files, ("json", orjson.dumps(record))]}
        return items


class TarSink:
    """Keys handed out in order (safe, unique, dot-free); samples appended to `shard-NNNNNN.tar` files in a
    folder that replaces OUT only when every shard is written (a failed run leaves OUT as it was)."""

    def __init__(self, out: Path, shard_size: int) -> None:
        self.folder, self.shard_size, self.book, self.count = AtomicDir(out), shard_size, NameBook(), 0

    def __enter__(self) -> TarSink:
        self.shards = TarShards(self.folder.__enter__(), self.shard_size)
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        try:
            if kind is None:
                self.shards.close()
            else:
                self.shards.abort()
        except BaseException as exc:
            self.folder.__exit__(type(exc), exc, None)
            raise
        self.folder.__exit__(kind, error, trace)

    def write(self, item: Item) -> None:
        fallback = f"sample{item.index}"
        key = self.book.claim(safe_stem(str(item.record.get("id", item.index)), fallback).replace(".", "_"))
        self.shards.add(key, item.extra["files"])
        self.count += 1



def _image_file(path: Path, where: str, index: int | None) -> tuple[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{where}: cannot read image {path} ({exc.strerror or exc})") from None
    ext = require_image(data, path, where)
    return (ext[1:] if index is None else f"{index}{ext}"), data
