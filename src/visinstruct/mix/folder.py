"""`mix --out FOLDER`: the mixture as a Hugging Face dataset folder — `data/train-0000i-of-0000n.parquet` with
every image embedded (the `Image` feature) and a README.md card — that `datasets.load_dataset(FOLDER)` reads.

Two passes, so that memory never grows with the rows: first the mixture's records are read to learn the
columns and where each shard ends (FolderSurvey, nothing written); then the lock's rows are read again, each
record's images are read from the folder its paths are relative to, and core.parquet_write writes the shards
into a folder built beside OUT and renamed into place only when complete. The second pass always reads the
lock, so a mixture and a replay of its lock are the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import UserError
from ..core.hf_folder import DEFAULT_SHARD_BYTES, HfFolderSink
from ..core.io import write_json
from ..core.parquet_survey import Survey, check_turns
from ..core.parquet_write import image_list, image_value
from ..core.report import Progress
from ..core.shards import ShardPlan
from ..core.step import Item

# a record, where it was read (file:line), and the folder its image paths are relative to
Row = tuple[dict[str, Any], str, Path | None]


@dataclass
class FolderOptions:
    """Where the shards of a folder output end: after `shard_rows` rows and/or before `shard_bytes` bytes of
    image files + record text (neither: 500 MB, as `push_to_hub` and `convert --to hf-folder` cut)."""

    shard_rows: int | None = None
    shard_bytes: int | None = None

    def given(self) -> bool:
        return self.shard_rows is not None or self.shard_bytes is not None

    def plan(self) -> ShardPlan:
        if not self.given():
            return ShardPlan(max_bytes=DEFAULT_SHARD_BYTES)
        return ShardPlan(self.shard_rows, self.shard_bytes)


def output_kind(out: Path, opts: FolderOptions | None = None) -> str:
    """`json`/`jsonl` for a records file (by its suffix); `folder` for an existing folder or a new path without
    a suffix; anything else is refused, as are shard options for a records file."""
    if out.name in ("", ".."):
        raise UserError(f"{out}: name the output by its own name (e.g. ../mix), not '.' or '..'")
    suffix = out.suffix.lower()
    if suffix in (".json", ".jsonl"):
        if opts is not None and opts.given():
            raise UserError(f"{out}: --shard-rows and --shard-bytes apply to a folder output (parquet shards), "
                            "not to a .json/.jsonl file")
        return suffix[1:]
    if out.is_dir() or (not suffix and not out.exists()):
        return "folder"
    raise UserError(f"{out}: expected a .json or .jsonl file, or a folder for parquet shards (an existing folder, "
                    "or a new path without a suffix)")


def check_replaceable(out: Path) -> None:
    """An existing output folder is replaced whole: only an empty one, or an earlier dataset folder (a card and
    `data/` shards, nothing else), so that a mistyped `--out` never wipes unrelated files."""
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir()}
    data = out / "data"
    shards_only = data.is_dir() and all(p.suffix == ".parquet" and p.is_file() for p in data.iterdir())
    if names and not (names <= {"README.md", "data"} and shards_only):
        raise UserError(f"{out}: the folder holds other files than a dataset folder's README.md and data/*.parquet; "
                        "it would be replaced whole: give a new or empty folder")


class FolderSurvey:
    """Pass 1: the records' SHA-256 (as the lock counts it), their columns and the shard plan; writes nothing.
    A record without turns of strings, or (with a byte target) with an image that is not there, stops here."""

    def __init__(self, opts: FolderOptions) -> None:
        self.survey, self.plan = Survey(), opts.plan()
        self.digest, self.count = hashlib.sha256(), 0

    def add(self, record: dict[str, Any], where: str, root: Path | None) -> None:
        self.digest.update(orjson.dumps(record) + b"\n")
        self.survey.add(record, where)
        named = f"{where} (id {record.get('id')!r})"
        check_turns(record, named)
        self.plan.add(record, named, root)
        self.count += 1

    def finish(self) -> Survey:
        return self.survey.finish(self.plan)


def _image_digest(digest: Any, cell: Any) -> None:
    """Add a row's image bytes to the images' SHA-256 (each image's length, then its bytes)."""
    for image in image_list(cell):
        digest.update(len(image["bytes"]).to_bytes(8, "little"))
        digest.update(image["bytes"])


def write_folder(out: Path, rows: Iterable[Row], found: Survey, lock: dict[str, Any], lock_file: Path,
                 lock_out: Path | None, progress: bool | None) -> None:
    """Pass 2: the rows (the lock's, in order) into OUT's shards and card, then `lock_out` (when given), all
    before OUT is put in place. Sets the lock's `images_sha256`, or refuses images that differ from it."""
    if found.count == 0:
        raise UserError(f"{out}: the mixture has no records, and a dataset folder needs at least one (a "
                        ".json/.jsonl output may be empty)")
    records, images = hashlib.sha256(), hashlib.sha256()
    recipe = Path(str(lock.get("recipe") or "mixture")).name
    made_by = (f"`visinstruct mix` from the recipe `{recipe}`; the lock written beside this folder "
               "(`<folder>.lock.json`) names the source file and row of every record")
    with HfFolderSink(out, found, "train", Path(recipe).stem, made_by) as sink, \
            Progress("mix: parquet", found.count, progress) as bar:
        for index, (record, where, root) in enumerate(rows):
            records.update(orjson.dumps(record) + b"\n")
            if root is None:
                raise UserError(f"{where} (id {record.get('id')!r}): no image folder for this record")
            cell = image_value(record, root, f"{where} (id {record.get('id')!r})")
            _image_digest(images, cell)
            sink.write(Item(index, record, where, extra={
                "image": [cell] if found.multi_image and isinstance(cell, dict) else cell}))
            bar.update()
        if records.hexdigest() != lock["records_sha256"]:
            raise UserError(f"{out}: the records read for the shards differ from the locked ones (a source file "
                            "changed while the mixture was written?); nothing written")
        _check_images(lock, lock_file, images.hexdigest())
        if lock_out is not None:
            write_json(lock_out, lock)


def _check_images(lock: dict[str, Any], lock_file: Path, found: str) -> None:
    locked = lock.get("images_sha256")
    if locked is None:
        lock["images_sha256"] = found
    elif locked != found:
        raise UserError(f"{lock_file}: the images differ from the ones the lock was written with (SHA-256 "
                        f"{found[:12]}… ≠ {locked[:12]}…): an image under a source's image_root changed; "
                        "nothing written")


def require_roots(lock_file: Path, lock: dict[str, Any]) -> None:
    """A folder is written from a lock only when every source says where its images are."""
    for source in lock["sources"]:
        if not isinstance(source.get("image_root"), str):
            raise UserError(f"{lock_file}: source {source['name']!r} has no image_root (a lock written before "
                            "mix wrote folders): replay it to a .json/.jsonl file, or mix the recipe again")
