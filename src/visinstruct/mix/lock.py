"""The lock file written beside a mixture: exactly which rows of which file went in, in output order, with each
file's size and SHA-256, and the SHA-256 of the records written. Replaying it reads those rows again and makes
the same bytes; a source file that changed since is refused before anything is written.

    {"visinstruct_mix_lock": 1, "recipe": "/data/mix.yaml", "records": 1200, "records_sha256": "…",
     "sources": [{"name": "coco", "path": "/data/coco.json", "strategy": "random:1000", "image_prefix": "coco/",
                  "image_root": "/data", "records": 1000,
                  "files": [{"path": "/data/coco.json", "size": 123, "sha256": "…"}],
                  "take": [{"file": 0, "rows": "0-99,105,200-299"}]}, …],
     "images_sha256": "…"}

`take` lists chunks in output order; `rows` are row numbers within that file (0 = its first record), ends
inclusive. A `count` above a source's size makes several chunks over the same file (one per repeat).
`image_root` is the folder the source's written image paths are relative to (where a folder output reads the
images); `images_sha256`, the SHA-256 of the embedded images, is there once the mixture was written as a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.io import read_json
from .rows import Rows, RowsBuilder
from .sources import KINDS, SourceFile, fingerprint

VERSION = 1


def lock_path(out: Path) -> Path:
    """Where the lock of an output goes: `<out>.lock.json`."""
    return out.with_name(out.name + ".lock.json")


class TakeLog:
    """The rows of one source as they are written: (file, runs of rows) chunks in output order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, RowsBuilder]] = []
        self.records = 0

    def add(self, file: int, row: int) -> None:
        if not self.chunks or self.chunks[-1][0] != file or row <= self.chunks[-1][1].last:
            self.chunks.append((file, RowsBuilder()))
        self.chunks[-1][1].add(row)
        self.records += 1

    def entry(self, name: str, path: Path, strategy: str, prefix: str, root: Path,
              files: list[SourceFile]) -> dict[str, Any]:
        """The lock entry of the source; only files that gave rows are listed (and fingerprinted)."""
        used = sorted({file for file, _ in self.chunks})
        renumber = {old: new for new, old in enumerate(used)}
        return {"name": name, "path": str(path), "strategy": strategy, "image_prefix": prefix,
                "image_root": str(root), "records": self.records,
                "files": [{"path": str(files[i].path), **fingerprint(files[i].path)} for i in used],
                "take": [{"file": renumber[file], "rows": rows.build().to_text()} for file, rows in self.chunks]}


def make_lock(recipe: Path, entries: list[dict[str, Any]], records: int, records_sha256: str) -> dict[str, Any]:
    return {"visinstruct_mix_lock": VERSION, "recipe": str(recipe), "records": records,
            "records_sha256": records_sha256, "sources": entries}


def read_lock(path: Path) -> dict[str, Any]:
    """A lock file, its shape checked (one-line errors naming the lock and the entry)."""
    lock = read_json(path)
    if not isinstance(lock, dict) or lock.get("visinstruct_mix_lock") != VERSION:
        raise UserError(f"{path}: not a visinstruct mix lock (version {VERSION})")
    sources = lock.get("sources")
    if not isinstance(sources, list) or not isinstance(lock.get("records_sha256"), str):
        raise UserError(f"{path}: the lock has no sources list or no records_sha256")
    if not isinstance(lock.get("images_sha256", ""), str):
        raise UserError(f"{path}: images_sha256 must be a string")
    for n, source in enumerate(sources):
        _check_source(path, n, source)
    return lock


def _check_source(path: Path, n: int, source: Any) -> None:
    where = f"{path}: sources[{n}]"
    if not isinstance(source, dict) or not isinstance(source.get("name"), str) or not isinstance(
            source.get("image_prefix"), str) or not isinstance(source.get("image_root", ""), str):
        raise UserError(f"{where}: expected an object with name, image_prefix, image_root, files and take")
    files, take = source.get("files"), source.get("take")
    if not isinstance(files, list) or not isinstance(take, list):
        raise UserError(f"{where}: files and take must be lists")
    for file in files:
        if not (isinstance(file, dict) and isinstance(file.get("path"), str) and isinstance(file.get("size"), int)
                and isinstance(file.get("sha256"), str) and Path(file["path"]).suffix.lower() in KINDS):
            raise UserError(f"{where}: a file entry needs path (.json/.jsonl/.parquet), size and sha256")
    for chunk in take:
        if not (isinstance(chunk, dict) and isinstance(chunk.get("file"), int) and 0 <= chunk["file"] < len(files)
                and isinstance(chunk.get("rows"), str)):
            raise UserError(f"{where}: a take entry needs file (an index into files) and rows")
        try:
            Rows.from_text(chunk["rows"])
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None


def verify_files(path: Path, lock: dict[str, Any]) -> None:
    """Refuse to replay when a file the lock reads is missing or no longer has its recorded size and SHA-256."""
    for source in lock["sources"]:
        for file in source["files"]:
            target = Path(file["path"])
            if not target.is_file():
                raise UserError(f"{target}: not found (source {source['name']!r} of the lock {path})")
            found = fingerprint(target)
            if found["size"] != file["size"]:
                raise UserError(f"{target}: changed since the lock {path} was written "
                                f"(size {file['size']:,} → {found['size']:,} bytes); refusing to replay")
            if found["sha256"] != file["sha256"]:
                raise UserError(f"{target}: changed since the lock {path} was written (same size, different "
                                "content: SHA-256 differs); refusing to replay")


def lock_takes(source: dict[str, Any]) -> list[tuple[SourceFile, Rows]]:
    """The (file, rows) chunks of a lock's source, in output order."""
    files = [SourceFile(Path(f["path"]), KINDS[Path(f["path"]).suffix.lower()]) for f in source["files"]]
    return [(files[chunk["file"]], Rows.from_text(chunk["rows"])) for chunk in source["take"]]
