"""`visinstruct convert`: detect the formats, pick the conversion, run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..records import read_records, write_records
from .messages import llava_to_messages, messages_to_llava
from .parquet import llava_to_parquet, parquet_to_llava
from .svit import svit_to_llava
from .webdataset import llava_to_webdataset

FORMATS = ("llava", "parquet", "messages", "wds", "svit")
ROUTES = {("parquet", "llava"), ("llava", "parquet"), ("llava", "messages"), ("messages", "llava"),
          ("llava", "wds"), ("svit", "llava")}


@dataclass
class ConvertOptions:
    """Everything `convert` needs besides input and output."""

    to: str
    source_format: str | None = None
    image_root: Path | None = None
    images_out: Path | None = None
    workers: int = 1
    shard_size: int | None = None
    image_data: Path | None = None


def detect(path: Path) -> str:
    """The input's format, from its extension and its first record."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return "parquet"
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise UserError(f"{path}: cannot tell the format from the name; give --from")
    first = next(iter(read_records(path)), None)  # streamed: only the first record is parsed
    if not isinstance(first, dict):
        raise UserError(f"{path}: the first record is not an object; give --from")
    if "messages" in first:
        return "messages"
    conversations = first.get("conversations")
    if "image_id" in first and isinstance(conversations, list) and conversations and "content" in conversations[0]:
        return "svit"
    if isinstance(conversations, list):
        return "llava"
    raise UserError(f"{path}: unknown record layout (keys: {', '.join(first)}); give --from")


def _map(src: Path, out: Path, step) -> int:
    def records():
        for n, record in enumerate(read_records(src)):
            if not isinstance(record, dict):
                raise UserError(f"{src}: record {n} is not an object")
            yield step(record, f"{src}: record {n} (id {record.get('id')!r})")
    return write_records(out, records())


def convert(src: Path, out: Path, opts: ConvertOptions) -> int:
    """Run one conversion; returns the number of records (rows, samples) written."""
    source = opts.source_format or detect(src)
    if (source, opts.to) not in ROUTES:
        routes = ", ".join(f"{a}→{b}" for a, b in sorted(ROUTES))
        raise UserError(f"no conversion from {source} to {opts.to} (available: {routes})")
    root = opts.image_root or src.parent
    if (source, opts.to) == ("parquet", "llava"):
        return parquet_to_llava(src, out, opts.images_out or out.parent / "images", opts.workers)
    if (source, opts.to) == ("llava", "parquet"):
        return llava_to_parquet(src, out, root, opts.shard_size or 5000)
    if (source, opts.to) == ("llava", "messages"):
        return _map(src, out, llava_to_messages)
    if (source, opts.to) == ("messages", "llava"):
        return _map(src, out, messages_to_llava)
    if (source, opts.to) == ("llava", "wds"):
        return llava_to_webdataset(src, out, root, opts.shard_size or 1000)
    return svit_to_llava(src, out, opts.image_data, opts.image_root)
