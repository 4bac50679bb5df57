"""`generate`: scenes → units → teacher → ledger → LLaVA records, resumable at any point."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.deps import require
from ..core.errors import UserError
from ..core.io import output_format, write_records
from ..core.records import make_record
from ..core.referring import MarkupError, check_pairs, format_instruction, to_llava15
from ..core.report import make_report
from ..sources import InputSpec, open_scenes
from ..sources.scene import Scene
from ..teachers.factory import TeacherConfig
from .ledger import Entry, Ledger, answered_in, ledger_paths
from .limits import Limits
from .parse import ReplyParseError, parse_description, parse_pairs
from .prompts import detail_instruction
from .runner import Runner, RunStats
from .tasks import Task, resolve
from .units import ImageOptions, Sampling, Unit, make_units


@dataclass
class GenerateOptions:
    """Everything `generate` needs besides the scenes and the teacher."""

    out: Path
    task_names: list[str] | None = None  # None: the mode's default tasks
    mode: str = "text"
    lang: str = "en"
    split: str = "train"
    samples: int = 1
    limit: int | None = None
    ledger: Path | None = None
    temperature: float | None = None  # None: the teacher's default (see teachers.factory)
    top_p: float | None = None
    max_tokens: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    retries: int = 5
    backoff: float = 1.0
    price_in: float | None = None
    price_out: float | None = None
    dry_run: bool = False
    progress: bool | None = None
    referring_style: str = "native"
    images: ImageOptions = field(default_factory=ImageOptions)
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None

    @property
    def tasks(self) -> list[Task]:
        return resolve(self.task_names, self.mode)

    def sampling(self, teacher: TeacherConfig) -> Sampling:
        """Decoding settings: the flags, else the teacher's defaults."""
        temperature = self.temperature if self.temperature is not None else teacher.default_temperature
        return Sampling(temperature, self.top_p, self.max_tokens or teacher.default_max_tokens)

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

    def report(self, opts: GenerateOptions, source: Path | str) -> dict[str, Any]:
        """The run in the one report shape (`--report`)."""
        return make_report("generate", source, opts.out, self.units, self.done, self.run_seconds,
                           opts.executor, opts.workers, {"teacher": {
                               "in": self.units, "out": self.done, "rejected": self.failed + self.rejected,
                               "counts": {"from_ledger": self.from_ledger, "failed": self.failed,
                                          "rejected": self.rejected, **asdict(self.run)}}},
                           cost=self.cost)


def _referring(unit: Unit, pairs: list[tuple[str, str]], style: str) -> list[tuple[str, str]]:
    check_pairs(pairs)
    if style == "native":
        return pairs
    width, height = unit.scene.width, unit.scene.height
    return [(f"{to_llava15(q, width, height)} {format_instruction(unit.pack.lang, unit.unit_id, i)}",
             to_llava15(a, width, height)) for i, (q, a) in enumerate(pairs)]


def _parse(unit: Unit, entry: Entry, split: str, referring_style: str = "native") -> dict[str, Any]:
    truncated = entry.finish_reason == "length"
    task = unit.pack.task
    if task.reply == "description":
        pairs = [(detail_instruction(unit.pack, unit.unit_id), parse_description(entry.reply or "", truncated))]
    else:
        pairs = parse_pairs(entry.reply or "", truncated)
    if task.cap_pairs:
        pairs = pairs[: unit.pack.max_pairs]
    if task.referring:
        pairs = _referring(unit, pairs, referring_style)
    return make_record(unit.unit_id, unit.scene.image, pairs, split, task.name, unit.pack.lang,
                       unit.scene.source)


def _entry(ledgers: list[Ledger], key: str) -> Entry | None:
    """The unit's outcome: an answer in any ledger shard wins over a failure in another."""
    found = None
    for ledger in ledgers:
        entry = ledger.get(key)
        if entry is not None and (found is None or entry.status == "answered"):
            found = entry
    return found


def _assemble(units: list[Unit], ledgers: list[Ledger], opts: GenerateOptions, summary: Summary,
              rejects: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Records for every answered unit that parses; everything else goes to `rejects`."""
    for unit in units:
        entry = _entry(ledgers, unit.key)
        if entry is None or entry.status == "failed":
            summary.failed += 1
            reason = entry.reason if entry else "not attempted (the run was interrupted)"
            rejects.append({"id": unit.unit_id, "status": "failed", "reason": reason})
            continue
        try:
            record = _parse(unit, entry, opts.split, opts.referring_style)
        except (ReplyParseError, MarkupError) as exc:
            summary.rejected += 1
            rejects.append({"id": unit.unit_id, "status": "rejected", "reason": str(exc), "reply": entry.reply})
            continue
        summary.done += 1
        yield record


def _check_sizes(scenes: list[Scene], opts: GenerateOptions) -> None:
    if any(t.referring for t in opts.tasks) and opts.referring_style == "llava15":
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
    shards = " (+ shard files beside it: .shard-*-of-*.sqlite)" if opts.executor == "ray" else ""
    print(f"ledger: {opts.ledger_path}{shards}", file=stream)


def generate(inputs: InputSpec, teacher: TeacherConfig, opts: GenerateOptions,
             stream: TextIO = sys.stderr) -> Summary:
    """Check everything up front (input flags, tasks, teacher, extras), then run or resume generation."""
    output_format(opts.out)
    resolve(opts.task_names, opts.mode)  # unknown or wrong-mode tasks fail here, before any input is read
    if opts.executor == "ray" and not opts.dry_run:
        require("ray", "--executor ray")
    teacher.settle(installed=not opts.dry_run)  # a dry run builds the same request keys as the real run
    return generate_scenes(open_scenes(inputs), teacher, opts, stream)


def generate_scenes(scenes: Iterable[Scene], teacher: TeacherConfig, opts: GenerateOptions,
                    stream: TextIO = sys.stderr) -> Summary:
    """Run (or resume) generation over `scenes` and write the output; returns the summary."""
    scenes = list(scenes)[: opts.limit] if opts.limit is not None else list(scenes)
    _check_sizes(scenes, opts)
    units = list(make_units(scenes, opts.tasks, opts.lang, opts.samples, teacher.model or "", opts.sampling(teacher),
                            opts.images))
    if opts.dry_run:  # reads existing ledgers, creates nothing
        dry_run(units, answered_in(ledger_paths(opts.ledger_path)), opts, stream)
        return Summary(units=len(units))
    if opts.executor == "ray":
        from .distributed import run_on_ray

        return run_on_ray(units, teacher, opts)
    shards = [Ledger(path) for path in ledger_paths(opts.ledger_path) if path != opts.ledger_path]
    ledger = Ledger(opts.ledger_path)
    try:
        answered = ledger.answered_keys()
        for shard in shards:  # left by an earlier `--executor ray` run: never paid twice
            answered |= shard.answered_keys()
        todo = [u for u in units if u.key not in answered]
        summary = Summary(units=len(units), from_ledger=len(units) - len(todo))
        if todo:
            started = time.perf_counter()
            summary.run = asyncio.run(_run(todo, ledger, teacher, opts))
            summary.run_seconds = time.perf_counter() - started
        finish(units, [ledger, *shards], opts, summary)
        return summary
    finally:
        for db in (ledger, *shards):
            db.close()


def finish(units: list[Unit], ledgers: list[Ledger], opts: GenerateOptions, summary: Summary) -> None:
    """Cost, then the output and the rejects file, assembled from the ledger(s) in unit order."""
    summary.cost = _cost(opts, summary.run.prompt_tokens, summary.run.completion_tokens)
    rejects: list[dict[str, Any]] = []
    write_records(opts.out, _assemble(units, ledgers, opts, summary, rejects))
    write_records(opts.rejects_path, rejects)


async def _run(units: list[Unit], ledger: Ledger, teacher: TeacherConfig, opts: GenerateOptions) -> RunStats:
    client = teacher.build()
    try:
        runner = Runner(client, ledger, Limits(opts.rpm, opts.tpm), teacher.concurrency, opts.retries,
                        opts.backoff, opts.progress)
        return await runner.run(units)
    finally:
        await client.close()
