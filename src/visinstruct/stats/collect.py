"""One pass over the records: every count and histogram `stats` reports, in memory that does not grow with the
number of records (histogram bins, counters capped in distinct keys, a reservoir sample)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.records import IMAGE_TOKEN, images_of
from ..core.tokens import TokenCounter
from .images import image_size
from .tally import CappedCounter, Histogram, Reservoir

ROLES = {"gpt": "gpt", "assistant": "gpt", "human": "human", "user": "human"}
EXAMPLES = 5  # example records kept per problem kind
KINDS = {str: "string", bool: "bool", int: "int64", float: "float64", list: "list", dict: "object",
         type(None): "null"}


@dataclass
class Sampled:
    """A record kept for the report's sample, with where it came from."""

    index: int
    where: str
    record: Any


@dataclass
class Collector:
    """Accumulates the statistics of a stream of records."""

    tokens: TokenCounter
    image_root: Path | None = None
    sample_size: int = 24
    seed: int = 0
    records: int = 0
    by_file: Counter = field(default_factory=Counter)
    source: CappedCounter = field(default_factory=CappedCounter)
    task: CappedCounter = field(default_factory=CappedCounter)
    lang: CappedCounter = field(default_factory=CappedCounter)
    rounds: CappedCounter = field(default_factory=lambda: CappedCounter(200))
    images: CappedCounter = field(default_factory=lambda: CappedCounter(200))
    image_tokens: CappedCounter = field(default_factory=lambda: CappedCounter(200))
    mismatch: CappedCounter = field(default_factory=lambda: CappedCounter(200))
    problems: CappedCounter = field(default_factory=lambda: CappedCounter(200))
    image_status: CappedCounter = field(default_factory=lambda: CappedCounter(50))
    examples: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, set[str]] = field(default_factory=dict)
    hist: dict[str, Histogram] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = ("chars_human", "chars_gpt", "tokens_human", "tokens_gpt", "tokens_record", "messages",
                 "image_width", "image_height", "image_long_side")
        self.hist = {name: Histogram() for name in names}
        self.sample = Reservoir(self.sample_size, self.seed)

    def add(self, where: str, record: Any, file: Path) -> None:
        """Count one record."""
        index = self.records
        self.records += 1
        self.by_file[str(file)] += 1
        self._categories(record if isinstance(record, dict) else {}, file)
        if not isinstance(record, dict):
            self._problem("record is not an object", where)
            return
        self.sample.offer(Sampled(index, where, record))
        self._columns(record)
        tags = self._turns(record, where)
        self._images(record, tags, where)

    def _categories(self, record: dict[str, Any], file: Path) -> None:
        """Source (`source`, `data_source`, else the file's name), task (`task`, `type`) and language."""
        self.source.add(_label(record.get("source", record.get("data_source")), file.name))
        self.task.add(_label(record.get("task", record.get("type")), "(none)"))
        self.lang.add(_label(record.get("lang"), "(none)"))

    def _turns(self, record: dict[str, Any], where: str) -> int:
        """Counts turns, characters and tokens; returns the record's `<image>` tags."""
        turns = record.get("conversations")
        if not isinstance(turns, list):
            self._problem("no conversations list", where)
            turns = []
        texts, roles, tags = [], [], 0
        for turn in turns:
            value, role = (turn.get("value"), turn.get("from")) if isinstance(turn, dict) else (None, None)
            role = ROLES.get(role) if isinstance(role, str) else None
            if role is None or not isinstance(value, str):
                self._problem("turn without a known role and a text value", where)
                continue
            if IMAGE_TOKEN in value:
                tags += value.count(IMAGE_TOKEN)
                value = value.replace(IMAGE_TOKEN, "").strip()
            texts.append(value)
            roles.append(role)
        counts = self.tokens.count_each(texts)
        hist = self.hist
        for text, role, count in zip(texts, roles, counts, strict=True):
            hist["chars_" + role].add(len(text))
            hist["tokens_" + role].add(count)
        self.hist["tokens_record"].add(sum(counts))
        self.hist["messages"].add(len(texts))
        self.rounds.add(roles.count("gpt"))
        return tags

    def _images(self, record: dict[str, Any], tags: int, where: str) -> None:
        images = images_of(record)
        self.images.add(len(images))
        self.image_tokens.add(tags)
        if tags != len(images):
            self.mismatch.add(f"{tags} <image> for {len(images)} image{'s' if len(images) != 1 else ''}")
            self._example("<image> tokens ≠ images", where)
        if self.image_root is None:
            return
        for relative in images:
            size = image_size(self.image_root, relative)
            if isinstance(size, str):
                self.image_status.add(size)
                self._example(f"image {size}", where)
                continue
            self.image_status.add("ok")
            self.hist["image_width"].add(size[0])
            self.hist["image_height"].add(size[1])
            self.hist["image_long_side"].add(max(size))

    def _columns(self, record: dict[str, Any]) -> None:
        """The JSON type of each top-level key (for the card's features), for at most 100 keys."""
        for key, value in record.items():
            kinds = self.columns.get(key)
            if kinds is None:
                if len(self.columns) >= 100:
                    continue
                kinds = self.columns[key] = set()
            if len(kinds) < 4:
                kinds.add(KINDS.get(type(value), "string"))

    def _problem(self, kind: str, where: str) -> None:
        self.problems.add(kind)
        self._example(kind, where)

    def _example(self, kind: str, where: str) -> None:
        found = self.examples.get(kind)
        if found is None and len(self.examples) < 50:
            found = self.examples[kind] = []
        if found is not None and len(found) < EXAMPLES:
            found.append(where)

    def as_dict(self) -> dict[str, Any]:
        """Everything counted, as plain JSON values."""
        mismatched = sum(self.mismatch.counts.values())
        return {
            "records": self.records, "files": dict(self.by_file), "tokens_method": self.tokens.method,
            "tokens_exact": self.tokens.exact, "by_source": self.source.as_dict(), "by_task": self.task.as_dict(),
            "by_lang": self.lang.as_dict(), "rounds_per_record": _numeric(self.rounds),
            "images_per_record": _numeric(self.images), "image_tokens_per_record": _numeric(self.image_tokens),
            "image_token_mismatch": {"records": mismatched, "by_kind": self.mismatch.as_dict()},
            "problems": self.problems.as_dict(), "examples": self.examples,
            "image_files": self.image_status.as_dict() if self.image_root else None,
            "columns": {key: sorted(kinds) for key, kinds in self.columns.items()},
            "histograms": {name: hist.as_dict() for name, hist in self.hist.items()},
        }


def _label(value: Any, default: str) -> str:
    """A category's label: the value as text, or `default` when it is absent or empty."""
    if value is None or value == "":
        return default
    return value if isinstance(value, str) else str(value)


def _numeric(counter: CappedCounter) -> dict[str, int]:
    """A counter of small integers, in numeric order."""
    return dict(sorted(counter.counts.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0] or 0)
                                                               if kv[0].isdigit() else 0, kv[0])))
