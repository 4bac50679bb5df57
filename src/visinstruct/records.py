"""LLaVA records and their files (json list or jsonl, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from .errors import UserError

IMAGE_TOKEN = "<image>"


def make_conversations(pairs: list[tuple[str, str]], split: str) -> list[dict[str, str]]:
    """Alternating human/gpt turns; on the train split the first human turn starts with `<image>\\n`."""
    turns = []
    for i, (question, answer) in enumerate(pairs):
        if i == 0 and split == "train":
            question = f"{IMAGE_TOKEN}\n{question}"
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def make_record(record_id: str, image: str, pairs: list[tuple[str, str]], split: str,
                task: str, lang: str, source: str) -> dict[str, Any]:
    """One LLaVA record with the provenance keys `task`, `lang` and `source`."""
    return {"id": record_id, "image": image, "conversations": make_conversations(pairs, split),
            "task": task, "lang": lang, "source": source}


def output_format(path: Path) -> str:
    """`json` (a list) or `jsonl`, chosen by the file extension."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return suffix[1:]
    raise UserError(f"{path}: expected a .json or .jsonl file")


class RecordWriter:
    """Streams records to a temporary file beside `path` and renames it on a clean exit.

    On an exception the temporary file is deleted: a reader never sees half a file, and a failed
    run leaves no debris (nor a stale temp from a run killed earlier).
    """

    def __init__(self, path: Path) -> None:
        self.path, self.format, self.count = path, output_format(path), 0
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.handle = self.tmp.open("wb")
        if self.format == "json":
            self.handle.write(b"[")

    def write(self, record: Any) -> None:
        if self.format == "json":
            self.handle.write(b"\n" if self.count == 0 else b",\n")
        self.handle.write(orjson.dumps(record))
        if self.format == "jsonl":
            self.handle.write(b"\n")
        self.count += 1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is not None:
            self.handle.close()
            self.tmp.unlink(missing_ok=True)
            return
        if self.format == "json":
            self.handle.write(b"\n]\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp, self.path)


def write_records(path: Path, records: Iterable[Any]) -> int:
    """Write all records atomically (see RecordWriter); returns how many."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records from a .json list (streamed with ijson) or .jsonl; errors name the file and the record."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        if output_format(path) == "jsonl":
            for n, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise UserError(f"{path}:{n}: not valid JSON ({exc})") from None
            return
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head[:1] != b"[":
            raise UserError(f"{path}: the top level is not a JSON list of records "
                            f"(starts with {head[:20].decode('utf-8', 'replace')!r}); use .jsonl for one per line")
        handle.seek(0)
        count = 0
        try:
            for record in ijson.items(handle, "item", use_float=True):
                yield record
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            where = f" near byte {handle.tell():,}" if not handle.closed else ""
            raise UserError(f"{path}: not valid JSON after {count} records{where} "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
