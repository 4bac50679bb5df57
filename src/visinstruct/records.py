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


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records to a temporary file beside `path`, then rename: a reader never sees half a file."""
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with tmp.open("wb") as handle:
            if fmt == "json":
                handle.write(b"[")
            for record in records:
                line = orjson.dumps(record)
                if fmt == "json":
                    handle.write(b"\n" if count == 0 else b",\n")
                handle.write(line)
                if fmt == "jsonl":
                    handle.write(b"\n")
                count += 1
            if fmt == "json":
                handle.write(b"\n]\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a finished-looking file nor debris
        raise
    os.replace(tmp, path)
    return count


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
        count = 0
        try:
            for record in ijson.items(handle, "item", use_float=True):
                yield record
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON after {count} records ({exc})") from None
