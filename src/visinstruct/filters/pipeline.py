"""`visinstruct filter`: stream records through the stages, keep or reject each, write a report.

Stateless stages (structure, spelling, heuristics, language) run in `workers` processes on chunks of
records, in order; the duplicate stages keep state and run in the main process. Every rejected record
goes to the rejects file with `reject_stage` and `reject_reason`; rewritten (truncated) records are
kept and listed in the report.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from ..convert.files import write_atomic
from ..errors import UserError
from ..records import RecordWriter, read_records
from .base import Reject, Rewrite
from .dedup import ExactDedup, ImageDedup, NearDedup
from .heuristics import HeuristicsFilter, Limits
from .language import LanguageFilter
from .spelling import SpellingFilter
from .structure import StructureFilter

STAGES = ("structure", "spelling", "heuristics", "language", "dedup")
CHUNK = 512


@dataclass
class FilterConfig:
    """Which stages run and their settings (flags or a YAML file with the same keys)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    lang: str = "en"
    image_root: Path | None = None
    check_images: bool = False
    allow_untagged: bool = False
    allowlist: Path | None = None
    min_answer_chars: int = 2
    max_answer_chars: int = 8000
    language_threshold: float = 0.5
    near_dup: float | None = None
    image_dup: int | None = None
    workers: int = 1

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> FilterConfig:
        import yaml

        try:
            raw = yaml.safe_load(path.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read the filter config ({exc})") from None
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        for key in ("image_root", "allowlist"):
            if raw.get(key):
                raw[key] = Path(raw[key])
        return cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})


class Chain:
    """The stateless stages, in order."""

    def __init__(self, config: FilterConfig) -> None:
        unknown = set(config.stages) - set(STAGES)
        if unknown:
            raise UserError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
        limits = Limits(config.min_answer_chars, config.max_answer_chars)
        makers = {"structure": lambda: StructureFilter(config.image_root, config.check_images, config.allow_untagged),
                  "spelling": lambda: SpellingFilter(config.lang, config.allowlist),
                  "heuristics": lambda: HeuristicsFilter(config.lang, limits),
                  "language": lambda: LanguageFilter(config.lang, config.language_threshold)}
        self.filters = [makers[name]() for name in STAGES if name in config.stages and name in makers]
        if "structure" not in config.stages:
            self.filters.insert(0, StructureFilter(config.image_root, allow_untagged=True))  # later stages need it

    def run(self, record: Any) -> tuple[Any, str | None, str | None, dict | None]:
        """(record, rejecting stage, reason, rewrite note)."""
        note = None
        for stage in self.filters:
            verdict = stage.check(record)
            if isinstance(verdict, Reject):
                return record, stage.name, verdict.reason, note
            if isinstance(verdict, Rewrite):
                record, note = verdict.record, {**verdict.note, "stage": stage.name}
        return record, None, None, note

    def stats(self) -> Counter:
        found: Counter = Counter()
        for stage in self.filters:
            found.update(getattr(stage, "stats", {}))
            getattr(stage, "stats", Counter()).clear()
        return found


_CHAIN: Chain | None = None


def _init(config: FilterConfig) -> None:
    global _CHAIN
    _CHAIN = Chain(config)


def _run_chunk(records: list[Any]) -> tuple[list[tuple], Counter]:
    results = [_CHAIN.run(record) for record in records]
    return results, _CHAIN.stats()


def _chunks(records: Iterator[Any]) -> Iterator[list[Any]]:
    while chunk := list(islice(records, CHUNK)):
        yield chunk


def _stateful(config: FilterConfig) -> list:
    stages = []
    if "dedup" in config.stages:
        stages.append(ExactDedup())
        if config.near_dup:
            stages.append(NearDedup(config.near_dup))
        if config.image_dup is not None:
            if not config.image_root:
                raise UserError("image duplicates need --image-root")
            stages.append(ImageDedup(config.image_root, config.image_dup))
    return stages


def _results(source: Path, config: FilterConfig, spelling: Counter) -> Iterator[tuple]:
    chunks = _chunks(read_records(source))
    if config.workers <= 1:
        _init(config)
        for chunk in chunks:
            results, stats = _run_chunk(chunk)
            spelling.update(stats)
            yield from results
        return
    with Pool(config.workers, initializer=_init, initargs=(config,)) as pool:
        for results, stats in pool.imap(_run_chunk, chunks):
            spelling.update(stats)
            yield from results


def _rejected(record: Any, stage: str, reason: str) -> dict[str, Any]:
    base = record if isinstance(record, dict) else {"record": record}
    return {**base, "reject_stage": stage, "reject_reason": reason}


def run_filter(source: Path, kept: Path, rejects: Path, config: FilterConfig,
               report: Path | None = None) -> dict[str, Any]:
    """Filter `source` into `kept` and `rejects`; returns (and writes) the report."""
    started, spelling = time.perf_counter(), Counter()
    counts: dict[str, Counter] = defaultdict(Counter)
    rewrites: list[dict] = []
    stateful = _stateful(config)
    with RecordWriter(kept) as keep, RecordWriter(rejects) as drop:
        for record, stage, reason, note in _results(source, config, spelling):
            if stage is None:
                for dedup in stateful:
                    verdict = dedup.check(record)
                    if isinstance(verdict, Reject):
                        stage, reason = dedup.name, verdict.reason
                        break
            if stage is not None:
                counts[stage][reason.split(":", 1)[0]] += 1
                drop.write(_rejected(record, stage, reason))
                continue
            if note:
                rewrites.append({"id": record.get("id"), **note})
            keep.write(record)
    result = {"input": str(source), "records": keep.count + drop.count, "kept": keep.count, "rejected": drop.count,
              "rewritten": len(rewrites), "seconds": round(time.perf_counter() - started, 2),
              "rejected_by_stage": {stage: dict(c.most_common()) for stage, c in counts.items()},
              "spelling": dict(spelling.most_common()), "rewrites": rewrites,
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}}
    if report:
        write_atomic(report, json.dumps(result, ensure_ascii=False, indent=1).encode())
    return result
