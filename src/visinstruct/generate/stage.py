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
from ..core.io import check_paths, output_format, write_records
from ..core.records import make_record
from ..core.referring import MarkupError, check_pairs, format_instruction, to_llava15
from ..core.report import make_report
from ..sources import Dropped, InputSpec, open_scenes
from ..sources.scene import Scene
from ..teachers.factory import TeacherConfig
from .ledger import Entry, Ledger, answered_in, ledger_paths
from .limits import Limits
from .parse import Conversation, ReplyParseError, parse_conversations, parse_description
from .prompts import detail_instruction
from .runner import Runner, RunStats
from .schemas import check_schema, shape
from .task_mix import TaskMix, assign_tasks
from .tasks import Task, resolve
from .units import ImageOptions, Sampling, Unit, make_units

EMBEDDED_LANG_NOTE = ("note: the embedded SmolLM2-135M is a tiny English-first model: asked for --lang {lang}, it "
                      "writes most answers in English or broken {lang}. It shows the pipeline, not usable {lang} "
                      "data: `visinstruct filter --stages language` rejects the wrong-language records; use a "
                      "real teacher (--base-url) for {lang} data.")


@dataclass
class GenerateOptions:
    """Everything `generate` needs besides the scenes and the teacher."""

    out: Path
    task_names: list[str] | None = None  # None: the mode's default tasks
    task_mix: TaskMix | None = None  # one task per image (replaces task_names)
    seed: int = 0  # seeds the task mix
    schema: str = "llava"  # record keys (see generate.schemas)
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
    report: Path | None = None  # --report: only checked here (the CLI writes it)

    @property
    def tasks(self) -> list[Task]:
        return resolve(list(self.task_mix.names) if self.task_mix else self.task_names, self.mode)

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
    records: int = 0  # rows written: a unit whose reply holds several topics gives one per topic
    from_ledger: int = 0
    failed: int = 0
    rejected: int = 0
    run: RunStats = field(default_factory=RunStats)
    cost: float | None = None
    run_seconds: float = 0.0
    dropped_boxes: dict[str, int] = field(default_factory=dict)  # input boxes left out, by reason

    def report(self, opts: GenerateOptions, source: Path | str) -> dict[str, Any]:
        """The run in the one report shape (`--report`)."""
        return make_report("generate", source, opts.out, self.units, self.records, self.run_seconds,
                           opts.executor, opts.workers, {"teacher": {
                               "in": self.units, "out": self.done, "rejected": self.failed + self.rejected,
                               "counts": {"from_ledger": self.from_ledger, "failed": self.failed,
                                          "rejected": self.rejected, **asdict(self.run)}}},
                           cost=self.cost, dropped_boxes=self.dropped_boxes)


def _referring(unit: Unit, pairs: list[tuple[str, str]], style: str) -> list[tuple[str, str]]:
    check_pairs(pairs)
    if style == "native":
        return pairs
    width, height = unit.scene.width, unit.scene.height
    return [(f"{to_llava15(q, width, height)} {format_instruction(unit.pack.lang, unit.unit_id, i)}",
             to_llava15(a, width, height)) for i, (q, a) in enumerate(pairs)]


def _parse(unit: Unit, entry: Entry, split: str, referring_style: str = "native") -> list[dict[str, Any]]:
    """The unit's records: one per conversation of the reply (ids `<unit id>-t<k>` when it holds several)."""
    truncated = entry.finish_reason == "length"
    task = unit.pack.task
    if task.reply == "description":
        instruction = detail_instruction(unit.pack, unit.unit_id)
        conversations = [Conversation(None, [(instruction, parse_description(entry.reply or "", truncated))])]
    else:
        conversations = parse_conversations(entry.reply or "", truncated)
    records = []
    for k, conversation in enumerate(conversations):
        pairs = conversation.pairs[: unit.pack.max_pairs] if task.cap_pairs else conversation.pairs
        if task.referring:
            pairs = _referring(unit, pairs, referring_style)
        record_id = unit.unit_id if len(conversations) == 1 else f"{unit.unit_id}-t{k}"
        record = make_record(record_id, unit.scene.image, pairs, split, task.name, unit.pack.lang, unit.scene.source)
        records.append({**record, "topic": conversation.topic} if conversation.topic else record)
    return records


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
            records = _parse(unit, entry, opts.split, opts.referring_style)
        except (ReplyParseError, MarkupError) as exc:
            summary.rejected += 1
            rejects.append({"id": unit.unit_id, "status": "rejected", "reason": str(exc), "reply": entry.reply})
            continue
        summary.done += 1
        rows = shape(opts.schema, unit.scene.image_id, unit.pack.task, records)
        summary.records += len(rows)
        yield from rows


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
    if summary.dropped_boxes:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.dropped_boxes.items()))
        print(f"input boxes dropped: {sum(summary.dropped_boxes.values())} ({reasons})", file=stream)
    rate = f" in {summary.run_seconds:.1f} s" if summary.run_seconds else ""
    cached = f" ({run.cached_tokens:,} cached)" if run.cache_reports else ""
    print(f"this run: {run.answered} answered{rate}, {run.retries} retries; tokens: {run.prompt_tokens:,} prompt"
          f"{cached}, {run.completion_tokens:,} completion", file=stream)
    if run.concurrency:
        print(engine_line(run), file=stream)
    if summary.cost is not None:
        print(f"cost: {summary.cost:,.4f}", file=stream)
    print(f"output: {opts.out} ({summary.records} records)", file=stream)
    if summary.failed or summary.rejected:
        print(f"rejected/failed units with reasons: {opts.rejects_path}", file=stream)
    shards = " (+ shard files beside it: .shard-*-of-*.sqlite)" if opts.executor == "ray" else ""
    print(f"ledger: {opts.ledger_path}{shards}", file=stream)


def engine_line(run: RunStats) -> str:
    """How the adaptive window met the server: streamed replies, overload signals, the window at the end."""
    raised = f"; request timeout raised {run.timeout_raises}x" if run.timeout_raises else ""
    return (f"requests: {run.streamed} of {run.answered} answers streamed; {run.timeouts} timed out, "
            f"{run.throttled} throttled; in flight at the end: {run.concurrency} after {run.back_offs} "
            f"back-off{'s' if run.back_offs != 1 else ''}{raised}")


def generate(inputs: InputSpec, teacher: TeacherConfig, opts: GenerateOptions,
             stream: TextIO = sys.stderr) -> Summary:
    """Check everything up front (input flags, tasks, teacher, extras), then run or resume generation."""
    output_format(opts.out)
    _check_outputs(inputs, opts)
    _ = opts.tasks  # unknown or wrong-mode tasks fail here, before any input is read
    check_schema(opts.schema, opts.referring_style)
    if opts.executor == "ray" and not opts.dry_run:
        require("ray", "--executor ray")
    teacher.settle(installed=not opts.dry_run)  # a dry run builds the same request keys as the real run
    if teacher.embedded and opts.lang != "en":
        print(EMBEDDED_LANG_NOTE.format(lang=opts.lang), file=stream)
    summary = generate_scenes(_warn_dropped(open_scenes(inputs), inputs.dropped, stream), teacher, opts, stream)
    summary.dropped_boxes = dict(inputs.dropped.counts)
    return summary


def _check_outputs(inputs: InputSpec, opts: GenerateOptions) -> None:
    """Before anything is read or sent: no output is an input, another output, or a folder."""
    outputs = {"--out": opts.out, "--ledger": opts.ledger_path, "the rejects file": opts.rejects_path,
               "--report": opts.report}
    check_paths(inputs.files(), outputs)
    for name, path in outputs.items():
        if path is not None and path.is_dir():
            raise UserError(f"{path}: {name} is a folder; give a file path")
        if path is not None and inputs.images is not None and inputs.images.is_dir() and \
                inputs.images.resolve() in path.resolve().parents:
            raise UserError(f"{path}: {name} lies inside the --images folder {inputs.images}: the next run would "
                            "take it for an image; write it elsewhere")


def _warn_dropped(scenes: Iterable[Scene], dropped: Dropped, stream: TextIO) -> Iterable[Scene]:
    """The scenes; once they are all read (before any request), one warning line if boxes were dropped."""
    yield from scenes
    if dropped.total:
        print(f"warning: {dropped}", file=stream)


def generate_scenes(scenes: Iterable[Scene], teacher: TeacherConfig, opts: GenerateOptions,
                    stream: TextIO = sys.stderr) -> Summary:
    """Run (or resume) generation over `scenes` and write the output; returns the summary."""
    scenes = list(scenes)[: opts.limit] if opts.limit is not None else list(scenes)
    _check_sizes(scenes, opts)
    assigned = assign_tasks([s.image_id for s in scenes], opts.task_mix, opts.seed) if opts.task_mix else None
    units = list(make_units(scenes, opts.tasks, opts.lang, opts.samples, teacher.model or "", opts.sampling(teacher),
                            opts.images, assigned))
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
