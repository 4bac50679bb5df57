"""LLaVA records + their images → a Hugging Face dataset folder that `datasets.load_dataset(folder)` reads
offline: `data/<split>-0000i-of-0000n.parquet` (shards from parquet_write: image bytes embedded, the Image
feature in the schema's `huggingface` metadata) and a README.md card. The folder is built under a temporary
name and replaces OUT only when the shards and the card are complete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import UserError
from .hf_card import card_text
from .io import AtomicDir, write_bytes
from .parquet_survey import Survey
from .parquet_write import ParquetSink
from .step import Item

DEFAULT_SHARD_BYTES = 500 * 10**6  # what `push_to_hub` cuts shards at by default (max_shard_size="500MB")
_SPLIT = re.compile(r"[A-Za-z0-9_]+")


def check_split(name: str) -> str:
    """A split name `datasets` accepts and a shard file name can carry."""
    if not _SPLIT.fullmatch(name) or name == "all":
        raise UserError(f"--split {name!r}: use letters, digits and '_' (e.g. train, validation, test; "
                        "'all' is reserved by datasets)")
    return name


class HfFolderSink:
    """The shards go to `<tmp>/data/`, the card to `<tmp>/README.md`; `<tmp>` replaces OUT at the end. The card
    is titled `title` (default: OUT's name) and says the folder was written by `made_by`."""

    def __init__(self, out: Path, found: Survey, split: str, title: str | None = None,
                 made_by: str = "`visinstruct convert --to hf-folder`") -> None:
        self.out, self.found, self.split = out, found, split
        self.title, self.made_by = title or out.name, made_by
        self.folder = AtomicDir(out)
        self.shards: ParquetSink | None = None
        self.count = 0

    def __enter__(self) -> HfFolderSink:
        tmp = self.folder.__enter__()
        self.shards = ParquetSink(self.out, self.found, self.split, folder=tmp / "data")
        return self

    def write(self, item: Item) -> None:
        assert self.shards is not None
        self.shards.write(item)
        self.count = self.shards.count

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        assert self.shards is not None
        try:
            self.shards.__exit__(kind, error, trace)
            if kind is None:
                text = card_text(self.title, self.found, self.shards.writer, self.split, self.made_by)
                write_bytes(self.folder.tmp / "README.md", text.encode("utf-8"))
        except BaseException as exc:
            kind, error = type(exc), exc
            raise
        finally:
            self.folder.__exit__(kind, error, trace)
