"""`generate`: scenes → units → teacher → ledger → LLaVA records, resumable at any point."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.ahead import read_ahead
from ..core.deps import require
from ..core.errors import UserError
from ..core.io import RecordWriter, check_paths, output_format
from ..core.records import make_record
from ..core.referring import MarkupError, check_pairs, format_instruction, to_llava15
from ..core.report import make_report
from ..core.tokens import TokenCounter
from ..sources import InputSpec, open_scenes
from ..sources.scene import Scene
from ..teachers.factory import TeacherConfig
from .batch import BatchOptions, run_batches
from .budget import Budget, price
from .ledger import Entry, Ledger, ReadOnly, chunks, ledger_paths
from .limits import Limits
from .output import Output, check_existing
from .parse import Conversation, ReplyParseError, parse_conversations, parse_description
from .plan import Plan, Planned
from .presence import Cooccurrence
from .prompts import PromptPack, detail_instruction
from .runner import OnAnswer, Runner, RunStats
from .schemas import check_schema, shape
from .task_mix import TaskMix, assign_tasks
from .tasks import Task, resolve
from .units import ImageOptions, Sampling, SceneInfo, Unit, make_units

FEED = 1000  # units read ahead of the requests (and looked up in the ledger) at a time

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
    tokenizer: Path | None = None  # count prompt tokens with this tokenizer.json (else estimated)
    max_cost: float | None = None  # stop before the ledger's spending could exceed this (price unit)
    max_tokens_total: int | None = None  # the same cap in tokens (prompt + completion)
    output_tag: str = ""  # input settings the records show (image prefix, source name): see generate/output.py
    batch: BatchOptions | None = None  # --batch: the teacher's Batch API instead of online requests (batch.py)

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
    budget: str | None = None  # why units were left unsent (the budget cap), if they were
    left: int = 0  # units not sent because of the budget cap
    fed_all: bool = False  # every unit has come through the feed (units and from_ledger are final)

    def report(self, opts: GenerateOptions, source: Path | str) -> dict[str, Any]:
        """The run in the one report shape (`--report`)."""
        return make_report("generate", source, opts.out, self.units, self.records, self.run_seconds,
                           opts.executor, opts.workers, {"teacher": {
                               "in": self.units, "out": self.done, "rejected": self.failed + self.rejected,
                               "counts": {"from_ledger": self.from_ledger, "failed": self.failed,
                                          "rejected": self.rejected, **asdict(self.run)}}},
                           cost=self.cost, dropped_boxes=self.dropped_boxes)


def _referring(info: SceneInfo, pack: PromptPack, unit_id: str, pairs: list[tuple[str, str]],
               style: str) -> list[tuple[str, str]]:
    check_pairs(pairs)
    if style == "native":
        return pairs
    width, height = info.width, info.height
    return [(f"{to_llava15(q, width, height)} {format_instruction(pack.lang, unit_id, i)}",
             to_llava15(a, width, height)) for i, (q, a) in enumerate(pairs)]


def _parse(unit: Unit | Planned, entry: Entry, split: str, referring_style: str = "native") -> list[dict[str, Any]]:
    """The unit's records: one per conversation of the reply (ids `<unit id>-t<k>` when it holds several)."""
    truncated = entry.finish_reason == "length"
    task, info = unit.pack.task, unit.info
    if task.reply == "description":
        instruction = detail_instruction(unit.pack, unit.unit_id)
        conversations = [Conversation(None, [(instruction, parse_description(entry.reply or "", truncated))])]
    else:
        conversations = parse_conversations(entry.reply or "", truncated)
    records = []
    for k, conversation in enumerate(conversations):
        pairs = conversation.pairs[: unit.pack.max_pairs] if task.cap_pairs else conversation.pairs
        if task.referring:
            pairs = _referring(info, unit.pack, unit.unit_id, pairs, referring_style)
        record_id = unit.unit_id if len(conversations) == 1 else f"{unit.unit_id}-t{k}"
        record = make_record(record_id, info.image, pairs, split, task.name, unit.pack.lang, info.source)
        records.append({**record, "topic": conversation.topic} if conversation.topic else record)
    return records


def _rows(unit: Unit | Planned, entry: Entry, opts: GenerateOptions) -> list[dict[str, Any]]:
    """The output rows of an answered unit (raises ReplyParseError/MarkupError when the reply is unusable)."""
    return shape(opts.schema, unit.info.image_id, unit.pack.task, _parse(unit, entry, opts.split,
                                                                          opts.referring_style))


def _outcomes(ledgers: list[Ledger], keys: list[str]) -> dict[str, Entry]:
    """Each unit's outcome: an answer in any ledger shard wins over a failure in another."""
    found: dict[str, Entry] = {}
    for ledger in ledgers:
        for key, entry in ledger.entries(keys).items():
            if key not in found or (entry.status == "answered" and found[key].status != "answered"):
                found[key] = entry
    return found


def _check_size(scene: Scene, opts: GenerateOptions) -> None:
    if scene.width and scene.height:
        return
    raise UserError(f"--referring-style llava15 needs each image's size to pad boxes; scene {scene.image_id} "
                    "has none (use --coco-captions/--coco-instances or --vg input)")


def _checked(scenes: Iterable[Scene], opts: GenerateOptions) -> Iterator[Scene]:
    """The scenes (at most --limit), each checked as it streams by."""
    sized = any(t.referring for t in opts.tasks) and opts.referring_style == "llava15"
    for scene in itertools.islice(scenes, opts.limit):
        if sized:
            _check_size(scene, opts)
        yield scene


def _cost(opts: GenerateOptions, prompt_tokens: float, completion_tokens: float) -> float | None:
    if opts.price_in is None and opts.price_out is None:
        return None
    return price(prompt_tokens, completion_tokens, opts.price_in or 0, opts.price_out or 0)


def dry_run(units: Iterable[Unit], opts: GenerateOptions, stream: TextIO) -> int:
    """Print how many requests a real run would send and an estimate of tokens and cost; returns the units."""
    existing = ReadOnly(ledger_paths(opts.ledger_path))  # reads existing ledgers, creates nothing
    total = todo = prompt = completion = local = 0
    try:
        for chunk in chunks(units, FEED):
            answered = existing.answered_among([u.key for u in chunk])
            total += len(chunk)
            for unit in chunk:
                if unit.local_reply is not None:
                    local += 1
                elif unit.key not in answered:
                    todo += 1
                    prompt += unit.prompt_estimate
                    completion += unit.request["max_tokens"]
    finally:
        existing.close()
    made = f", {local} made without a teacher (presence)" if local else ""
    print(f"dry run: {total} units{made}, {total - todo - local} already in the ledger, {todo} requests to send",
          file=stream)
    how = "counted with the tokenizer" if opts.tokenizer else "estimated"
    print(f"{how} tokens: ~{prompt:,} prompt, up to {completion:,} completion" if not opts.tokenizer else
          f"{how} tokens: {prompt:,} prompt, up to {completion:,} completion", file=stream)
    cost = _cost(opts, prompt, completion)
    if cost is not None:
        print(f"estimated cost: up to {cost:,.4f}", file=stream)
    return total


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
    if summary.budget:
        print(f"budget: {summary.left} units {summary.budget}", file=stream)
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
    opts.output_tag = f"{inputs.image_prefix}|{inputs.source or ''}"
    check_schema(opts.schema, opts.referring_style)
    if opts.max_cost is not None and opts.price_in is None and opts.price_out is None:
        raise UserError("--max-cost needs the prices: --price-in and/or --price-out (per million tokens)")
    if opts.executor == "ray" and (opts.max_cost is not None or opts.max_tokens_total is not None):
        raise UserError("--max-cost and --max-tokens-total are for --executor local (the Ray actors keep no "
                        "shared budget); run locally, or without a cap")
    if opts.executor == "ray" and not opts.dry_run:
        require("ray", "--executor ray")
    asks = any(t.teacher for t in opts.tasks)  # presence alone sends nothing: no teacher to install
    teacher.settle(installed=asks and not opts.dry_run)  # a dry run builds the same request keys as the real run
    if teacher.embedded and asks and opts.lang != "en":
        print(EMBEDDED_LANG_NOTE.format(lang=opts.lang), file=stream)
    summary = generate_scenes(lambda: _warn_dropped(inputs, stream), teacher, opts, stream)
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


def _warn_dropped(inputs: InputSpec, stream: TextIO) -> Iterator[Scene]:
    """The scenes (one pass; the counts start again at each); once they are all read, one warning line if
    boxes were dropped (the first pass only, when there are two)."""
    warned = inputs.dropped.total > 0
    inputs.dropped.counts.clear()
    yield from open_scenes(inputs)
    if inputs.dropped.total and not warned:
        print(f"warning: {inputs.dropped}", file=stream)


@dataclass
class _Stream:
    """The scenes to stream, each one's task under --task-mix, and the presence task's co-occurrence counts."""

    scenes: Iterable[Scene]
    assigned: list[str | None] | None = None
    cooc: Cooccurrence | None = None


def _scene_stream(scenes: Iterable[Scene] | Callable[[], Iterable[Scene]], opts: GenerateOptions) -> _Stream:
    """Open the scenes; with --task-mix (every image id first) or presence (co-occurrence over the whole
    input) a first pass reads them once before the stream — keeping only ids and counts when `scenes` is a
    function that can open them again, else holding the scenes."""
    mix, presence = opts.task_mix is not None, any(not t.teacher for t in opts.tasks)
    if not (mix or presence):
        return _Stream(_checked(scenes() if callable(scenes) else scenes, opts))
    if not callable(scenes):
        held = list(_checked(scenes, opts))
        scenes = lambda: held  # noqa: E731 - the same two-pass shape
    cooc = Cooccurrence() if presence else None
    ids: list[str] = []
    for scene in _checked(scenes(), opts):
        if mix:
            ids.append(scene.image_id)
        if cooc is not None:
            cooc.add(scene)
    assigned = assign_tasks(ids, opts.task_mix, opts.seed) if mix else None
    return _Stream(_checked(scenes(), opts), assigned, cooc)


def generate_scenes(scenes: Iterable[Scene] | Callable[[], Iterable[Scene]], teacher: TeacherConfig,
                    opts: GenerateOptions, stream: TextIO = sys.stderr) -> Summary:
    """Run (or resume) generation over `scenes` (or a function that opens them) and write the output.

    Scenes, units and requests stream: memory holds up to 4 x FEED units and the requests in flight, not the
    input (units are made in a thread ahead of the requests).
    """
    counter = TokenCounter(opts.tokenizer) if opts.tokenizer else None
    source = _scene_stream(scenes, opts)
    units = make_units(source.scenes, opts.tasks, opts.lang, opts.samples, teacher.model or "",
                       opts.sampling(teacher), opts.images, source.assigned, counter, source.cooc)
    if opts.dry_run:
        return Summary(units=dry_run(units, opts, stream))
    check_existing(opts.out, opts.ledger_path, opts.executor)
    fed = chunks(units, FEED)
    first = next(fed, [])  # bad input in the first units fails before the ledger or the output is touched
    ledgers = [Ledger(opts.ledger_path)]
    ledgers += [Ledger(path) for path in ledger_paths(opts.ledger_path) if path != opts.ledger_path]
    ahead = read_ahead(fed)  # the next chunks are made in a thread (VLM units hash their image) meanwhile
    try:
        return _generate(itertools.chain([first], ahead), ledgers, teacher, opts)
    finally:
        ahead.close()  # stops the thread (an error, or the budget, may leave units unread)
        for db in ledgers:
            db.close()


def _feed(chunked: Iterable[list[Unit]], plan: Plan, ledgers: list[Ledger], summary: Summary
          ) -> Iterator[Unit]:
    """Every unit not yet answered in any ledger; each unit is noted in the plan as it passes. One chunk is read
    ahead, so the total is known (for the progress ETA) as soon as the last chunk is in."""
    ahead = iter(chunked)
    chunk = next(ahead, None)
    while chunk is not None:
        following = next(ahead, None)
        plan.add(chunk)
        answered: set[str] = set()
        for ledger in ledgers:
            answered |= ledger.answered_among([u.key for u in chunk])
        summary.units += len(chunk)
        summary.from_ledger += len(answered)
        summary.fed_all = following is None
        yield from (u for u in chunk if u.key not in answered)
        chunk = following


def _generate(chunked: Iterable[list[Unit]], ledgers: list[Ledger], teacher: TeacherConfig,
              opts: GenerateOptions) -> Summary:
    ledger = ledgers[0]
    summary, plan = Summary(), Plan(ledger.db)
    output = Output(opts, ledger)
    budget = Budget.of(opts, ledgers, opts.batch.discount if opts.batch else 1.0)
    todo = _feed(chunked, plan, ledgers, summary)
    started = time.perf_counter()
    if opts.batch is not None:
        summary.run = run_batches(todo, ledger, teacher, opts, budget)
        if opts.batch.submit_only:  # the answers come later (--batch-collect): no output yet
            summary.left = sum(1 for _ in todo)
            summary.budget = budget.note() if budget else None
            return summary
    elif opts.executor == "ray":
        from .distributed import run_on_ray

        summary.run = run_on_ray(todo, teacher, opts)
        known = {db.path for db in ledgers}  # the shard files this run made are read for the output too
        ledgers += [Ledger(path) for path in ledger_paths(opts.ledger_path) if path not in known]
    else:
        on_answer = output.appender(lambda unit, entry: _rows(unit, entry, opts)) if output.incremental else None
        hint = lambda: summary.units - summary.from_ledger if summary.fed_all else None  # noqa: E731
        summary.run = asyncio.run(_run(todo, ledger, teacher, opts, on_answer, budget, hint))
    summary.run_seconds = time.perf_counter() - started
    summary.left = summary.run.unsent + sum(1 for _ in todo)  # kept back by the budget (the stream read to its
    # end: the plan lists every unit, so the output keeps its order and the rejects file names the ones left)
    summary.budget = budget.note() if budget else None
    finish(plan, ledgers, opts, summary, output)
    if opts.batch is not None and summary.cost is not None:
        summary.cost *= opts.batch.discount
    return summary


def finish(plan: Plan, ledgers: list[Ledger], opts: GenerateOptions, summary: Summary, output: Output) -> None:
    """Cost, then the output (appended or whole) and the rejects file, in the plan's order."""
    summary.cost = _cost(opts, summary.run.prompt_tokens, summary.run.completion_tokens)
    whole = output.whole_needed(plan)
    with RecordWriter(opts.rejects_path) as rejects:
        if whole:
            with RecordWriter(opts.out) as writer:
                for _, _, rows in _assembled(plan, ledgers, opts, summary, rejects, parse_written=True):
                    for row in rows:
                        writer.write(row)
            output.wrote_whole()
        else:
            for planned, entry, rows in _assembled(plan, ledgers, opts, summary, rejects, parse_written=False):
                output.catch_up(planned, entry, rows)
            output.close()


def _assembled(plan: Plan, ledgers: list[Ledger], opts: GenerateOptions, summary: Summary,
               rejects: RecordWriter, parse_written: bool) -> Iterator[tuple[Planned, Entry, list[dict[str, Any]]]]:
    """(unit, its outcome, its rows) for every unit that gave records; the others go to `rejects`, with why.
    Units already in a growing .jsonl (`parse_written` False) are counted from the ledger, not parsed again."""
    for batch in plan.batches():
        outcomes = _outcomes(ledgers, [p.key for p in batch])
        for planned in batch:
            entry = outcomes.get(planned.key)
            if entry is not None and entry.out_end is not None and entry.records is not None and not parse_written:
                summary.done += 1
                summary.records += entry.records
                continue
            if entry is None or entry.status != "answered":
                summary.failed += 1
                reason = entry.reason if entry else (summary.budget or "not attempted (the run was interrupted)")
                rejects.write({"id": planned.unit_id, "status": "failed", "reason": reason})
                continue
            try:
                rows = _rows(planned, entry, opts)
            except (ReplyParseError, MarkupError) as exc:
                summary.rejected += 1
                rejects.write({"id": planned.unit_id, "status": "rejected", "reason": str(exc), "reply": entry.reply})
                continue
            summary.done += 1
            summary.records += len(rows)
            yield planned, entry, rows


async def _run(units: Iterable[Unit], ledger: Ledger, teacher: TeacherConfig, opts: GenerateOptions,
               on_answer: OnAnswer | None, budget: Budget | None,
               hint: Callable[[], int | None]) -> RunStats:
    client = teacher.build()
    try:
        runner = Runner(client, ledger, Limits(opts.rpm, opts.tpm), teacher.concurrency, opts.retries,
                        opts.backoff, opts.progress, on_answer=on_answer, budget=budget, total_hint=hint)
        return await runner.run(units)
    finally:
        await client.close()
