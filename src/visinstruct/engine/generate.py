"""`generate`: scenes → units → teacher → ledger → LLaVA records, resumable at any point."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import UserError
from ..parse import ReplyParseError, parse_description, parse_pairs
from ..prompts import detail_instruction, format_instruction
from ..records import make_record, output_format, write_records
from ..referring import check_pairs, to_llava15
from ..scenes import Scene
from ..teachers.base import Teacher
from .ledger import Entry, Ledger
from .limits import Limits
from .runner import Runner, RunStats
from .units import ImageOptions, Sampling, Unit, make_units


@dataclass
class GenerateOptions:
    """Everything `generate` needs besides the scenes and the teacher."""

    out: Path
    tasks: list[str]
    lang: str = "en"
    split: str = "train"
    samples: int = 1
    limit: int | None = None
    ledger: Path | None = None
    sampling: Sampling = field(default_factory=lambda: Sampling(0.7, None, 1024))
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    retries: int = 5
    backoff: float = 1.0
    price_in: float | None = None
    price_out: float | None = None
    dry_run: bool = False
    progress: bool | None = None
    referring_style: str = "native"
    mode: str = "text"
    images: ImageOptions = field(default_factory=ImageOptions)

    @property
    def ledger_path(self) -> Path:
        """`--ledger`, or `<out>.ledger.sqlite` beside the output."""
        return self.ledger or self.out.with_name(self.out.name + ".ledger.sqlite")

    @property
    def rejects_path(self) -> Path:
        """Rejected and failed units, each with its reason (and the raw reply when there is one)."""
        return self.out.with_name(self.out.stem + ".rejects.jsonl")


@dataclass
class Summary:
    """The outcome of a run, as printed at its end."""

    units: int = 0
    done: int = 0
    from_ledger: int = 0
    failed: int = 0
    rejected: int = 0
    run: RunStats = field(default_factory=RunStats)
    cost: float | None = None
    run_seconds: float = 0.0


def _referring(unit: Unit, pairs: list[tuple[str, str]], style: str) -> list[tuple[str, str]]:
    check_pairs(pairs)
    if style == "native":
        return pairs
    width, height = unit.scene.width, unit.scene.height
    return [(f"{to_llava15(q, width, height)} {format_instruction(unit.pack, unit.unit_id, i)}",
             to_llava15(a, width, height)) for i, (q, a) in enumerate(pairs)]


def _parse(unit: Unit, entry: Entry, split: str, referring_style: str = "native") -> dict[str, Any]:
    truncated = entry.finish_reason == "length"
    if unit.pack.task in ("detail_description", "captioning"):
        pairs = [(detail_instruction(unit.pack, unit.unit_id), parse_description(entry.reply or "", truncated))]
    else:
        pairs = parse_pairs(entry.reply or "", truncated)
    if unit.pack.task == "dialogue":
        pairs = pairs[: unit.pack.max_pairs]  # at most 5 rounds
    if unit.pack.task == "referring_qa":
        pairs = _referring(unit, pairs, referring_style)
    return make_record(unit.unit_id, unit.scene.image, pairs, split, unit.pack.task, unit.pack.lang,
                       unit.scene.source)


def _assemble(units: list[Unit], ledger: Ledger, opts: GenerateOptions, summary: Summary,
              rejects: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Records for every answered unit that parses; everything else goes to `rejects`."""
    for unit in units:
        entry = ledger.get(unit.key)
        if entry is None or entry.status == "failed":
            summary.failed += 1
            reason = entry.reason if entry else "not attempted (the run was interrupted)"
            rejects.append({"id": unit.unit_id, "status": "failed", "reason": reason})
            continue
        try:
            record = _parse(unit, entry, opts.split, opts.referring_style)
        except ReplyParseError as exc:
            summary.rejected += 1
            rejects.append({"id": unit.unit_id, "status": "rejected", "reason": str(exc), "reply": entry.reply})
            continue
        summary.done += 1
        yield record


def _check_sizes(scenes: list[Scene], opts: GenerateOptions) -> None:
    if "referring_qa" in opts.tasks and opts.referring_style == "llava15":
        unsized = next((s for s in scenes if not (s.width and s.height)), None)
        if unsized is not None:
            raise UserError(f"--referring-style llava15 needs each image's size to pad boxes; scene {unsized.image_id} "
                            "has none (use --coco-captions/--coco-instances or --vg input)")


def _cost(opts: GenerateOptions, prompt_tokens: float, completion_tokens: float) -> float | None:
    if opts.price_in is None and opts.price_out is None:
        return None
    return (prompt_tokens * (opts.price_in or 0) + completion_tokens * (opts.price_out or 0)) / 1e6


def dry_run(units: list[Unit], answered: set[str], opts: GenerateOptions, stream: TextIO) -> None:
    """Print how many requests a real run would send and an estimate of tokens and cost."""
    todo = [u for u in units if u.key not in answered]
    prompt = sum(u.prompt_estimate for u in todo)
    completion = sum(u.request["max_tokens"] for u in todo)
    print(f"dry run: {len(units)} units, {len(units) - len(todo)} already in the ledger, "
          f"{len(todo)} requests to send", file=stream)
    print(f"estimated tokens: ~{prompt:,} prompt, up to {completion:,} completion", file=stream)
    cost = _cost(opts, prompt, completion)
    if cost is not None:
        print(f"estimated cost: up to {cost:,.4f}", file=stream)


def print_summary(summary: Summary, opts: GenerateOptions, stream: TextIO) -> None:
    """The end-of-run report."""
    run = summary.run
    bad = f" ({run.bad_images} with a bad image)" if run.bad_images else ""
    print(f"units: {summary.units}  done: {summary.done}  from ledger: {summary.from_ledger}  "
          f"failed: {summary.failed}{bad}  rejected: {summary.rejected}", file=stream)
    rate = f" in {summary.run_seconds:.1f} s" if summary.run_seconds else ""
    print(f"this run: {run.answered} answered{rate}, {run.retries} retries; tokens: {run.prompt_tokens:,} prompt, "
          f"{run.completion_tokens:,} completion", file=stream)
    if summary.cost is not None:
        print(f"cost: {summary.cost:,.4f}", file=stream)
    print(f"output: {opts.out} ({summary.done} records)", file=stream)
    if summary.failed or summary.rejected:
        print(f"rejected/failed units with reasons: {opts.rejects_path}", file=stream)
    print(f"ledger: {opts.ledger_path}", file=stream)


def generate(scenes: Iterable[Scene], model: str, make_teacher: Callable[[], Teacher],
             opts: GenerateOptions, stream: TextIO = sys.stderr) -> Summary:
    """Run (or resume) generation and write the output; returns the summary."""
    output_format(opts.out)
    scenes = list(scenes)[: opts.limit] if opts.limit is not None else list(scenes)
    _check_sizes(scenes, opts)
    units = list(make_units(scenes, opts.tasks, opts.lang, opts.samples, model, opts.sampling, opts.mode,
                            opts.images))
    if opts.dry_run:  # reads an existing ledger, creates nothing
        answered = set()
        if opts.ledger_path.exists():
            ledger = Ledger(opts.ledger_path)
            answered = ledger.answered_keys()
            ledger.close()
        dry_run(units, answered, opts, stream)
        return Summary(units=len(units))
    ledger = Ledger(opts.ledger_path)
    try:
        answered = ledger.answered_keys()
        todo = [u for u in units if u.key not in answered]
        summary = Summary(units=len(units), from_ledger=len(units) - len(todo))
        if todo:
            started = time.perf_counter()
            summary.run = asyncio.run(_run(todo, ledger, make_teacher, opts))
            summary.run_seconds = time.perf_counter() - started
        summary.cost = _cost(opts, summary.run.prompt_tokens, summary.run.completion_tokens)
        rejects: list[dict[str, Any]] = []
        write_records(opts.out, _assemble(units, ledger, opts, summary, rejects))
        write_records(opts.rejects_path, rejects)
        return summary
    finally:
        ledger.close()


async def _run(units: list[Unit], ledger: Ledger, make_teacher: Callable[[], Teacher],
               opts: GenerateOptions) -> RunStats:
    teacher = make_teacher()
    try:
        concurrency = opts.concurrency or teacher.default_concurrency
        runner = Runner(teacher, ledger, Limits(opts.rpm, opts.tpm), concurrency, opts.retries,
                        opts.backoff, opts.progress)
        return await runner.run(units)
    finally:
        await teacher.close()
