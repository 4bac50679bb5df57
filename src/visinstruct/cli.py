"""The `visinstruct` command line: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .check.targets import TARGET_NAMES
from .convert.formats import FORMATS, OUTPUT_ONLY
from .core.boxes import BOX_ROUNDINGS, pad_boxes_in_text
from .core.errors import UserError
from .core.io import decode_utf8
from .core.report import summary_lines, write_report
from .core.shards import parse_size
from .exec import EXECUTORS
from .filters.pipeline import ALL_STAGES
from .generate.schemas import SCHEMAS
from .generate.task_mix import TaskMix, parse_task_mix
from .generate.tasks import LANGS, all_task_names, task_names


def _tasks(value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    known = all_task_names()
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown) or value!r}; choose from {', '.join(known)}")
    return tasks


def _task_mix(value: str) -> TaskMix:
    try:
        mix = parse_task_mix(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    unknown = [t for t in mix.names if t not in all_task_names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(all_task_names())}")
    return mix


def _positive(kind: type) -> Callable[[str], float]:
    def convert(value: str) -> float:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return number
    return convert


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_run_args(p: argparse.ArgumentParser, workers_help: str) -> None:
    """The flags every stage shares: executor, workers, Ray address, report, progress."""
    g = p.add_argument_group("running")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: processes on this machine (default); ray: a Ray cluster (needs the 'ray' extra)")
    g.add_argument("--workers", type=_positive(int), help=workers_help)
    g.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray")
    g.add_argument("--report", type=Path, help="write the stage's report (stats) here as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def _number(kind: type, low: float, above: bool = False, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= low (> low when `above`), and <= high when given."""
    def number(value: str) -> float:
        try:
            parsed = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        too_high = high is not None and parsed > high
        if not math.isfinite(parsed) or parsed < low or (above and parsed == low) or too_high:
            bound = f"{'above' if above else 'at least'} {low:g}" + (f", at most {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {value}")
        return parsed
    return number


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate LLaVA instruction data with a teacher model",
                       description="Turn annotations into teacher prompts, ask the teacher, write LLaVA records. "
                                   "Re-running the same command resumes from the ledger.")
    src = p.add_argument_group("input (COCO files, a caps-boxes jsonl, or Visual Genome)")
    src.add_argument("--coco-captions", type=Path, help="COCO captions file (captions_*.json)")
    src.add_argument("--coco-instances", type=Path, help="COCO instances file (instances_*.json), for boxes")
    src.add_argument("--caps-boxes", type=Path, help="LLaVA caps-boxes jsonl (id, image, captions, instances)")
    src.add_argument("--vg", type=Path, metavar="DIR",
                     help="Visual Genome folder: image_data.json, objects.json, region_descriptions.json "
                          "(+ attributes.json); with --coco-captions, COCO captions for images with a coco_id")
    src.add_argument("--images", type=Path, metavar="PATH",
                     help="VLM mode: a folder of images (recursive) or a text file listing image paths")
    src.add_argument("--mode", choices=("text", "vlm"), default=None,
                     help="text: the teacher reads annotations; vlm: it sees the image (default: vlm with --images)")
    src.add_argument("--max-side", type=_positive(int), default=1024,
                     help="vlm: downscale so the long side is at most this (default 1024)")
    src.add_argument("--max-pixels", type=_positive(int), default=100_000_000,
                     help="vlm: refuse images with more pixels than this, before decoding (default 100M)")
    src.add_argument("--image-prefix", default="", help="prefix of the 'image' path in records, e.g. coco/val2014/")
    src.add_argument("--source", help="value of the records' 'source' key (default: the input file's name)")
    src.add_argument("--limit", type=_positive(int), help="take only the first N scenes")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, help="output file, .json (a list) or .jsonl")
    out.add_argument("--tasks", type=_tasks, default=None,
                     help=f"comma-separated; text mode: {','.join(task_names('text'))} "
                          "(default: all but referring_qa); "
                          f"vlm mode: {','.join(task_names('vlm'))} (default: all)")
    out.add_argument("--referring-style", choices=("native", "llava15"), default="native",
                     help="referring_qa output: native <st>name<ed> [box] markup, or llava15 (tags removed, "
                          "boxes in the square-padded frame, a format instruction after each question)")
    out.add_argument("--task-mix", type=_task_mix, metavar="TASK=N,...",
                     help="one task per image instead of every task for every image: whole numbers are exact "
                          "image counts (e.g. dialogue=247431,complex_reasoning=194646,captioning=199791), "
                          "decimals are weights (dialogue=0.4,captioning=0.6)")
    out.add_argument("--seed", type=int, default=0, help="seed of the --task-mix assignment (default 0)")
    out.add_argument("--schema", choices=SCHEMAS, default="llava",
                     help="record keys: llava (default; id, image, conversations, task, lang, source), "
                          "llava-instruct-ru (type, conversations, id = image id, image), svit (SVIT native rows)")
    out.add_argument("--lang", choices=LANGS, default="en", help="language of the generated data")
    out.add_argument("--samples-per-image", type=_positive(int), default=1, help="units per scene and task")
    out.add_argument("--split", choices=("train", "val"), default="train",
                     help="train: first human turn starts with <image>\\n; val: no <image> tag")
    out.add_argument("--ledger", type=Path, help="SQLite ledger (default: <out>.ledger.sqlite)")
    t = p.add_argument_group("teacher (none given: the embedded SmolLM2-135M on the CPU)")
    t.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    t.add_argument("--model", help="model name sent to the server")
    t.add_argument("--api-key-env", metavar="VAR", help="environment variable that holds the API key")
    t.add_argument("--temperature", type=_number(float, 0), default=None,
                   help="sampling temperature (default 0.7; embedded: greedy)")
    t.add_argument("--top-p", type=_number(float, 0, True, 1), default=None,
                   help="nucleus sampling, in (0, 1] (default: the server's)")
    t.add_argument("--max-tokens", type=_positive(int), default=None,
                   help="completion token limit (default 1024; embedded 200)")
    e = p.add_argument_group("engine")
    e.add_argument("--concurrency", type=_positive(int),
                   help="most requests in flight (default 16; embedded 4 x batch size); with a server the "
                        "number in flight adapts below it (starts at 4, backs off on timeouts, 429/503 and "
                        "a rising time to first token)")
    e.add_argument("--rpm", type=_number(float, 0, True), help="requests per minute limit")
    e.add_argument("--tpm", type=_number(float, 0, True), help="tokens per minute limit")
    e.add_argument("--timeout", type=_number(float, 0, True), default=120.0,
                   help="seconds from a reply's first token to its end (default 120); with --no-stream the "
                        "whole request, doubled after a timeout that may be a wait in the server's queue")
    e.add_argument("--first-byte-timeout", type=_number(float, 0, True), default=300.0, metavar="S",
                   help="streamed replies: seconds to wait for the first token, queue included (default 300)")
    e.add_argument("--no-stream", action="store_true",
                   help="ask for plain JSON replies, not server-sent events (for servers that cannot stream)")
    e.add_argument("--retries", type=_number(int, 0), default=5,
                   help="retries per unit on 429/5xx/timeouts (default 5)")
    e.add_argument("--backoff", type=_number(float, 0, True), default=1.0,
                   help="first backoff in seconds (default 1)")
    e.add_argument("--batch-size", type=_positive(int), default=8, help="embedded teacher batch size (default 8)")
    e.add_argument("--price-in", type=_number(float, 0), help="price per 1M prompt tokens, for the cost line")
    e.add_argument("--price-out", type=_number(float, 0), help="price per 1M completion tokens")
    e.add_argument("--dry-run", action="store_true", help="print requests, tokens and cost; send nothing")
    e.add_argument("--tokenizer", type=Path, metavar="TOKENIZER_JSON",
                   help="count prompt tokens with this tokenizer.json (or a folder holding one) instead of "
                        "estimating them (dry run, rate limits, budget)")
    e.add_argument("--max-cost", type=_number(float, 0),
                   help="stop sending before the ledger's spending (all runs, at --price-in/--price-out) could "
                        "exceed this; in-flight requests count at their max tokens; a higher cap continues")
    e.add_argument("--max-tokens-total", type=_number(int, 0),
                   help="the same cap in tokens (prompt + completion) spent by the ledger")
    b = p.add_argument_group("batch mode (the server's Batch API, /v1/files + /v1/batches: slower, cheaper)")
    b.add_argument("--batch", action="store_true",
                   help="send the units as batch input files, wait for the batches, collect, write the output")
    b.add_argument("--batch-submit-only", action="store_true",
                   help="batch mode: submit the units, print the batch ids and exit (no output written)")
    b.add_argument("--batch-collect", action="store_true",
                   help="batch mode: submit nothing new; wait for the ledger's batches, collect, write the output")
    b.add_argument("--batch-poll", type=_number(float, 0, True), default=60.0, metavar="S",
                   help="seconds between two looks at the batches (default 60)")
    b.add_argument("--batch-max-requests", type=_number(int, 1, high=50_000), default=50_000, metavar="N",
                   help="requests per batch input file (default and most 50,000; files also stop at ~190 MB)")
    b.add_argument("--batch-discount", type=_number(float, 0), default=0.5, metavar="F",
                   help="the share of --price-in/--price-out a batch request costs, in the cost line and "
                        "--max-cost (default 0.5)")
    _add_run_args(p, "ray: generation actors, each with its own ledger shard (default 1)")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """`visinstruct generate`."""
    from .generate.batch import BatchOptions
    from .generate.batch import check as check_batch
    from .generate.stage import GenerateOptions, generate, print_summary
    from .generate.units import ImageOptions
    from .sources import InputSpec
    from .teachers.factory import TeacherConfig

    if args.workers and args.workers > 1 and args.executor == "local":
        raise UserError("--workers is for --executor ray (generation actors); locally --concurrency sets "
                        "the requests in flight")
    if args.task_mix and args.tasks:
        raise UserError("give --tasks or --task-mix, not both (--task-mix names the tasks)")
    mode = args.mode or ("vlm" if args.images else "text")
    inputs = InputSpec(mode, args.coco_captions, args.coco_instances, args.caps_boxes, args.vg, args.images,
                       args.image_prefix, args.source)
    if mode == "vlm" and not args.base_url:
        raise UserError("--mode vlm needs a VLM server (--base-url, --model): the embedded teacher reads text only")
    teacher = TeacherConfig(args.base_url, args.model, args.api_key_env, args.timeout, args.concurrency,
                            args.batch_size, first_byte_timeout=args.first_byte_timeout, stream=not args.no_stream)
    opts = GenerateOptions(
        out=args.out, task_names=args.tasks, task_mix=args.task_mix, seed=args.seed, schema=args.schema,
        mode=mode, lang=args.lang, split=args.split,
        samples=args.samples_per_image, limit=args.limit, ledger=args.ledger, temperature=args.temperature,
        top_p=args.top_p, max_tokens=args.max_tokens, rpm=args.rpm, tpm=args.tpm, retries=args.retries,
        backoff=args.backoff, price_in=args.price_in, price_out=args.price_out, dry_run=args.dry_run,
        referring_style=args.referring_style, images=ImageOptions(args.max_side, args.max_pixels),
        progress=False if args.no_progress else None, executor=args.executor, workers=args.workers or 1,
        ray_address=args.ray_address, report=args.report, tokenizer=args.tokenizer, max_cost=args.max_cost,
        max_tokens_total=args.max_tokens_total)
    if args.batch or args.batch_submit_only or args.batch_collect:
        opts.batch = BatchOptions(args.batch_submit_only, args.batch_collect, args.batch_poll,
                                  args.batch_max_requests, discount=args.batch_discount)
        check_batch(opts, teacher.embedded)
    summary = generate(inputs, teacher, opts)
    if opts.batch is not None and opts.batch.submit_only and not args.dry_run:
        if "--batch-submit-only" in sys.argv[1:]:  # the command as typed, with the flag swapped
            again = ["--batch-collect" if a == "--batch-submit-only" else a for a in sys.argv[1:]]
            print(f"collect with: visinstruct {shlex.join(again)}", file=sys.stderr)
        else:
            print("collect with: the same command with --batch-collect", file=sys.stderr)
        if summary.budget:
            print(f"budget: {summary.left} units {summary.budget}", file=sys.stderr)
    elif not args.dry_run:
        print_summary(summary, opts, sys.stderr)
    write_report(args.report, summary.report(opts, args.coco_captions or args.caps_boxes or args.vg or args.images))
    return 0


def _add_pad_boxes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pad-boxes", help="move every box in text (stdin → stdout) into the square-padded frame",
                       description="Reads text on stdin and writes it to stdout with every normalized "
                                   "[x1, y1, x2, y2] box moved into LLaVA-1.5's square-padded frame of a "
                                   "WIDTH x HEIGHT image. Other bracketed numbers are left alone.")
    p.add_argument("--width", type=_number(float, 0, True), required=True, help="image width in pixels (> 0)")
    p.add_argument("--height", type=_number(float, 0, True), required=True, help="image height in pixels (> 0)")
    p.add_argument("--box-rounding", choices=BOX_ROUNDINGS, default="exact",
                   help="exact (default): fractional pixels, (long-short)/2 shift; svit: integer pixels and "
                        "(long-short)//2, as SVIT's published LLaVA-1.5 rows")
    p.set_defaults(func=run_pad_boxes)


def run_pad_boxes(args: argparse.Namespace) -> int:
    """`visinstruct pad-boxes` (the whole input is read first: a box may span lines)."""
    text = decode_utf8(sys.stdin.buffer.read(), "stdin")  # UTF-8 whatever the locale; bad bytes: one line
    sys.stdout.buffer.write(pad_boxes_in_text(text, args.width, args.height, args.box_rounding).encode("utf-8"))
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert between LLaVA json/jsonl, HF parquet, messages, WebDataset, SVIT",
                       description="Routes: parquet→llava, llava→parquet, llava→messages, messages→llava, "
                                   "llava→wds, llava→hf-folder (a Hugging Face dataset folder: data/*.parquet + "
                                   "README.md), svit→llava (LLaVA-1.5). The input format is detected when --from "
                                   "is not given. Images are copied as bytes, never re-encoded.")
    p.add_argument("input", type=Path, help="input file (or a folder of parquet shards)")
    p.add_argument("output", type=Path,
                   help="output file (.json/.jsonl/.parquet) or folder (parquet shards, wds, hf-folder)")
    p.add_argument("--to", required=True, choices=[f for f in FORMATS if f != "svit"], help="output format")
    p.add_argument("--from", dest="source_format", choices=[f for f in FORMATS if f not in OUTPUT_ONLY],
                   help="input format (default: detected)")
    p.add_argument("--image-root", type=Path, help="folder the records' image paths are relative to "
                                                    "(default: the input's folder)")
    p.add_argument("--images-out", type=Path, help="parquet→llava: where images are written "
                                                    "(default: <output folder>/images)")
    p.add_argument("--shard-size", "--shard-rows", type=_positive(int),
                   help="rows per shard: parquet (default 5000), hf-folder, wds tar (default 1000)")
    p.add_argument("--shard-bytes", type=_size, metavar="SIZE",
                   help="parquet, hf-folder: end a shard before it passes SIZE (500MB, 1GB, 256MiB) of image "
                        "files + record text; hf-folder's default is 500MB")
    p.add_argument("--split", help="hf-folder: the split's name, in the shard names and the card (default train)")
    p.add_argument("--image-data", type=Path, help="svit→llava: Visual Genome image_data.json for image sizes")
    p.add_argument("--box-rounding", choices=BOX_ROUNDINGS,
                   help="svit→llava: svit (default) pads boxes as SVIT's published LLaVA-1.5 rows (integer "
                        "pixels, (long-short)//2 shift); exact keeps fractional pixels and (long-short)/2")
    _add_run_args(p, "processes (local) or Ray workers for the per-record work (default 1)")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """`visinstruct convert`."""
    from .convert.run import ConvertOptions, convert

    opts = ConvertOptions(args.to, args.source_format, args.image_root, args.images_out, args.workers or 1,
                          args.shard_size, args.image_data, args.executor, args.ray_address, _progress(args),
                          box_rounding=args.box_rounding, report=args.report, shard_bytes=args.shard_bytes,
                          split=args.split)
    report = convert(args.input, args.output, opts)
    write_report(args.report, report)
    print(f"wrote {report['records_out']} records to {args.output} in {report['seconds']} s", file=sys.stderr)
    return 0


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check LLaVA records: structure, <image> tokens, images on disk",
                       description="Reports every problem with its record index and id, then counts by problem. "
                                   "Exit status 1 when any record is invalid.")
    p.add_argument("input", type=Path, help="LLaVA .json (a list; streamed), .jsonl, or parquet (file or folder)")
    p.add_argument("--image-root", type=Path, help="check that every image exists under this folder")
    p.add_argument("--check-images", action="store_true", help="also decode every image (needs --image-root)")
    p.add_argument("--allow-untagged", action="store_true",
                   help="accept one image with no <image> token (LLaVA-Instruct-ru's val split)")
    p.add_argument("--show", type=int, default=200, help="print at most this many problems (default 200)")
    _add_run_args(p, "processes (local) or Ray workers (default 1)")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """`visinstruct validate`."""
    from .filters.validate import validate

    report = validate(args.input, args.image_root, args.check_images, args.allow_untagged, args.show, sys.stdout,
                      args.executor, args.workers or 1, args.ray_address, _progress(args), report=args.report)
    write_report(args.report, report)
    if args.report:
        print(f"report: {args.report}", file=sys.stderr)
    if report.get("error"):  # the input could not be read to its end: also the one error line on stderr
        print(f"visinstruct: error: {report['error']}", file=sys.stderr)
    return 0 if report["valid"] else 1


def _add_filter(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("filter", help="structure, spelling, heuristics, language, duplicates; rejects kept",
                       description="Stages: structure → spelling (en, ru; truncation rule) → heuristics → language "
                                   "→ grounding (with annotations) → duplicates. Rejected records go to --rejects "
                                   "with reject_stage and reject_reason; --report gets counts per stage and reason "
                                   "and every rewrite.")
    p.add_argument("input", type=Path, help="LLaVA .json, .jsonl, or parquet (file or folder)")
    p.add_argument("--out", type=Path, required=True, help="kept records (.json or .jsonl)")
    p.add_argument("--rejects", type=Path, required=True, help="rejected records with their reasons")
    p.add_argument("--config", type=Path, help="YAML file with any of the settings below (flags win)")
    p.add_argument("--stages", help=f"comma-separated, from {','.join(ALL_STAGES)} (default: all but grounding, "
                                    "which an annotation source below turns on)")
    p.add_argument("--no-spelling", action="store_true", help="skip the spelling stage")
    p.add_argument("--lang", choices=LANGS, help="language of records without a 'lang' key (default en)")
    p.add_argument("--image-root", type=Path, help="check images exist (and find image duplicates) here")
    p.add_argument("--check-images", action="store_true", default=None, help="decode every image")
    p.add_argument("--allow-untagged", action="store_true", default=None, help="one image with no <image> token is ok")
    p.add_argument("--allowlist", type=Path, help="words the spelling stage accepts, one per line")
    p.add_argument("--min-answer-chars", type=int, help="shorter gpt answers are rejected (default 2)")
    p.add_argument("--max-answer-chars", type=int, help="longer gpt answers are rejected (default 8000)")
    p.add_argument("--language-threshold", type=float, help="minimum language-id probability (default 0.5)")
    p.add_argument("--near-dup", type=float, metavar="JACCARD",
                   help="also reject near-duplicate text at this word-5-gram Jaccard (e.g. 0.85)")
    p.add_argument("--image-dup", type=int, metavar="BITS",
                   help="also reject images within this phash distance (e.g. 4: re-encoded or resized copies)")
    p.add_argument("--decontaminate", type=Path, metavar="EVAL",
                   help="reject records whose image is a near-copy of an eval image: a folder of images, or a "
                        "text file of image paths, one per line (needs --image-root)")
    p.add_argument("--eval-questions", type=Path, metavar="Q.json",
                   help="reject records whose human turn shares an n-gram with an eval question (.json/.jsonl: "
                        "LLaVA records, or rows with question, text or prompt)")
    p.add_argument("--phash-distance", type=int, metavar="BITS",
                   help="--decontaminate: perceptual-hash bits an image copy may differ by (default 6, at most 12)")
    p.add_argument("--ngram", type=int, metavar="N",
                   help="--eval-questions: shared n-gram length in words (default 13; Chinese/Japanese: "
                        "ceil(1.5 N) characters)")
    _add_grounding_args(p)
    _add_run_args(p, "processes (local) or Ray workers for the stateless stages (default 1)")
    p.set_defaults(func=run_filter_command)


def _add_grounding_args(p: argparse.ArgumentParser) -> None:
    """filter's grounding stage: answers checked against the annotations, as `audit` does."""
    g = p.add_argument_group("grounding stage (answers vs the annotations, as audit checks them; one source "
                             "turns it on)")
    g.add_argument("--coco-instances", type=Path, metavar="F", help="COCO instances file (instances_*.json)")
    g.add_argument("--caps-boxes", type=Path, metavar="F", help="LLaVA caps-boxes jsonl (no image sizes)")
    g.add_argument("--vg", type=Path, metavar="DIR", help="Visual Genome folder (image_data.json, objects.json, ...)")
    g.add_argument("--grounding-max", type=int, metavar="N",
                   help="reject a record with more than N problems (default 0: any contradiction rejects)")
    g.add_argument("--grounding-kinds", metavar="K,K",
                   help="problem kinds that count, from object,count,box (default all three)")
    g.add_argument("--box-frame", help="frame of the boxes in answers: auto (default), native or llava15")
    g.add_argument("--iou", type=float, help="IoU with an annotated box that a box in an answer needs (default 0.5)")
    g.add_argument("--image-prefix", help="strip this from the records' image paths before the join")


def run_filter_command(args: argparse.Namespace) -> int:
    """`visinstruct filter`."""
    from .filters.pipeline import FilterConfig, run_filter

    overrides = {"lang": args.lang, "image_root": args.image_root, "check_images": args.check_images,
                 "allow_untagged": args.allow_untagged, "allowlist": args.allowlist,
                 "min_answer_chars": args.min_answer_chars, "max_answer_chars": args.max_answer_chars,
                 "language_threshold": args.language_threshold, "near_dup": args.near_dup,
                 "image_dup": args.image_dup, "workers": args.workers, "executor": args.executor,
                 "ray_address": args.ray_address, "decontaminate": args.decontaminate,
                 "eval_questions": args.eval_questions, "phash_distance": args.phash_distance, "ngram": args.ngram,
                 "coco_instances": args.coco_instances, "caps_boxes": args.caps_boxes, "vg": args.vg,
                 "grounding_max": args.grounding_max, "box_frame": args.box_frame, "iou": args.iou,
                 "image_prefix": args.image_prefix,
                 "grounding_kinds": args.grounding_kinds and [k.strip() for k in args.grounding_kinds.split(",")]}
    if args.stages:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    config = FilterConfig.from_yaml(args.config, **overrides) if args.config else \
        FilterConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.no_spelling:
        config.stages = [s for s in config.stages if s != "spelling"]
    report = args.report or args.out.with_name(args.out.name + ".report.json")
    result = run_filter(args.input, args.out, args.rejects, config, report, _progress(args))
    for line in summary_lines(result):
        print(line, file=sys.stderr)
    print(f"  truncated and kept: {result['rewritten']}", file=sys.stderr)
    if "decontamination" in result:
        found = result["decontamination"]
        print(f"  decontamination: {len(found['matches'])} match(es) against {found['eval_images']} eval images "
              f"and {found['eval_questions']} eval questions, listed in the report", file=sys.stderr)
    print(f"kept: {args.out}  rejects: {args.rejects}  report: {report}", file=sys.stderr)
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="pre-flight: what a trainer (LLaVA, LLaVA-NeXT, LLaMA-Factory, ms-swift) "
                                     "will choke on in a record file",
                       description="Reads the file once, the way --target's data loader reads it, and reports each "
                                   "problem with its kind, severity (blocking / warning), record and detail. Exit "
                                   "status 1 when any problem blocks that trainer, 0 otherwise, 2 on bad input.")
    p.add_argument("input", type=Path, help="records: .json (a list; streamed), .jsonl, or parquet (file or folder)")
    p.add_argument("--target", required=True, choices=TARGET_NAMES, help="the trainer that will read the file")
    p.add_argument("--image-root", type=Path, metavar="DIR",
                   help="check that every image is inside this folder, exists and opens")
    p.add_argument("--max-tokens", type=_positive(int), metavar="N",
                   help="flag samples over N tokens (text estimated, or counted with --tokenizer, + image tokens)")
    p.add_argument("--tokenizer", type=Path, metavar="PATH",
                   help="a tokenizer.json (or a folder holding one) to count text tokens exactly")
    p.add_argument("--image-tokens", type=_number(int, 0), metavar="N",
                   help="tokens per image for --max-tokens (default: llava 576, llava-next 2880, others 0)")
    p.add_argument("--fix", type=Path, metavar="OUT", help="write a corrected copy (.json or .jsonl) here")
    p.add_argument("--report", type=Path, metavar="R.json", help="write every problem and the counts here as JSON")
    p.add_argument("--show", type=_number(int, 0), default=3, metavar="N",
                   help="examples per kind on stderr (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """`visinstruct check`."""
    from .check.run import CheckOptions, check
    from .check.run import summary_lines as check_summary

    opts = CheckOptions(args.target, args.image_root, args.max_tokens, args.tokenizer, args.image_tokens, args.fix,
                        args.report, args.show, _progress(args))
    report = check(args.input, opts)
    for line in check_summary(report):
        print(line, file=sys.stderr)
    return report["exit_status"]


def _add_mix(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mix", help="mix sources by a LLaVA-NeXT data YAML; provenance and a lock kept",
                       description="Reads a LLaVA-NeXT data YAML (datasets: json_path + sampling_strategy, plus "
                                   "optional keys, see README) and writes one .json/.jsonl mixture, or a Hugging "
                                   "Face dataset folder (parquet shards, images embedded), with each record's "
                                   "source, and <out>.lock.json listing the exact rows; --lock replays a lock "
                                   "byte for byte.")
    p.add_argument("recipe", type=Path, nargs="?", help="the recipe YAML (not with --lock)")
    p.add_argument("--out", type=Path, required=True,
                   help="the mixture: .json (a list), .jsonl, or a folder (an existing one, or a path without a "
                        "suffix): data/train-*.parquet with the images embedded + README.md card")
    p.add_argument("--shard-rows", type=_positive(int), metavar="N", help="folder output: at most N rows per shard")
    p.add_argument("--shard-bytes", type=_size, metavar="SIZE",
                   help="folder output: end a shard before it passes SIZE (500MB, 1GB, 256MiB) of image files + "
                        "record text (default 500MB unless --shard-rows is given)")
    p.add_argument("--lock", type=Path, help="replay this lock file instead of a recipe")
    p.add_argument("--dry-run", action="store_true", help="count and print what each source gives; write nothing")
    p.add_argument("--report", type=Path, help="write the report (per-source counts) here as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run_mix)


def run_mix(args: argparse.Namespace) -> int:
    """`visinstruct mix`."""
    from .mix.folder import FolderOptions
    from .mix.run import mix, replay, summary_lines

    if (args.recipe is None) == (args.lock is None):
        raise UserError("give a recipe or --lock LOCK, one of the two")
    if args.lock is not None and args.dry_run:
        raise UserError("--dry-run is for a recipe; a lock is replayed as it is")
    folder = FolderOptions(args.shard_rows, args.shard_bytes)
    if args.lock is not None:
        report = replay(args.lock, args.out, _progress(args), args.report, folder)
    else:
        report = mix(args.recipe, args.out, _progress(args), args.dry_run, args.report, folder)
    write_report(args.report, report)
    for line in summary_lines(report):
        print(line, file=sys.stderr)
    return 0


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="counts, lengths, <image> checks and reject reasons; a dataset card and an "
                                     "offline HTML report",
                       description="One streaming pass over the records (memory flat in their number): counts by "
                                   "source, task and language, turns, characters and tokens per turn, images and "
                                   "<image> tokens per record, image sizes (--image-root), reject reasons "
                                   "(--rejects). Writes any of --json, --card (a Hugging Face README.md) and "
                                   "--html (one self-contained page with plots and a sample with thumbnails).")
    p.add_argument("inputs", type=Path, nargs="+", metavar="FILE",
                   help="records: .json (a list; streamed), .jsonl, or parquet (file or folder of shards)")
    p.add_argument("--image-root", type=Path, help="read image sizes (headers only) and thumbnails from here")
    p.add_argument("--rejects", type=Path, help="a rejects file of filter or generate: counts of its reasons")
    p.add_argument("--html", type=Path, metavar="REPORT.html", help="write the HTML report here")
    p.add_argument("--card", type=Path, metavar="README.md", help="write the dataset card here")
    p.add_argument("--json", type=Path, metavar="STATS.json", help="write every count and histogram here")
    p.add_argument("--tokenizer", type=Path, metavar="PATH",
                   help="a tokenizer.json (or a folder holding one) to count tokens exactly (default: estimated)")
    p.add_argument("--ledger", type=Path, help="a generate ledger: the card names the teacher and its units")
    p.add_argument("--filter-report", type=Path, metavar="REPORT.json",
                   help="a filter report: the card lists each stage's counts and reasons")
    p.add_argument("--license", default="other", help="the card's license (default: other)")
    p.add_argument("--name", help="the card's and the report's title (default: the first file's name)")
    p.add_argument("--sample", type=_number(int, 0), default=24, metavar="K",
                   help="records in the report's sample (uniform, seeded; default 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    """`visinstruct stats`."""
    from .stats import StatsOptions, stats, summary_lines

    opts = StatsOptions(args.image_root, args.rejects, args.html, args.card, args.json, args.tokenizer,
                        args.ledger, args.filter_report, args.license, args.name, args.sample, args.seed,
                        _progress(args))
    for line in summary_lines(stats(args.inputs, opts), opts):
        print(line, file=sys.stderr)
    return 0


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="a local web app to page through records with their images, search and filter",
                       description="Serves a page on 127.0.0.1 (prints its URL) to page through the records with the "
                                   "image beside the conversation, <st>…<ed> references and boxes drawn (native or "
                                   "LLaVA-1.5 square-padded frame), search by text and id, filter by source, task, "
                                   "language and reject reason. A .jsonl/.json gets an offset index, built once and "
                                   "cached beside it (.FILE.viewindex). Ctrl-C stops it.")
    p.add_argument("input", type=Path, help="records: .jsonl, .json (a list), or parquet (file or folder of shards)")
    p.add_argument("--image-root", type=Path, help="folder the image paths are relative to (default: the input's "
                                                    "folder); nothing outside it is served")
    p.add_argument("--rejects", type=Path, help="a rejects file of filter (reject_stage, reject_reason): shown as a "
                                                "second dataset, filterable by reason")
    p.add_argument("--port", type=_number(int, 0, high=65535), default=0,
                   help="port on 127.0.0.1 (default 0: a free one)")
    p.add_argument("--open", action="store_true", help="also open the page in the default browser")
    p.set_defaults(func=run_view)


def run_view(args: argparse.Namespace) -> int:
    """`visinstruct view`."""
    from .view.server import serve

    return serve(args.input, args.image_root, args.rejects, args.port, args.open)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check answers against the annotations: absent objects, wrong counts, boxes "
                                     "that match nothing; CHAIR",
                       description="Joins each record to its image's annotations by file name and writes it with "
                                   "an 'audit' object (ok, problems: object / count / box, turn, text, detail); "
                                   "the report has CHAIR_i, CHAIR_s and counts by kind, task and language.")
    p.add_argument("input", type=Path, metavar="FILE", help="records: .json (a list; streamed), .jsonl, or parquet")
    src = p.add_argument_group("annotations (one of)")
    src.add_argument("--coco-instances", type=Path, metavar="F", help="COCO instances file (instances_*.json)")
    src.add_argument("--caps-boxes", type=Path, metavar="F", help="LLaVA caps-boxes jsonl (no image sizes)")
    src.add_argument("--vg", type=Path, metavar="DIR", help="Visual Genome folder (image_data.json, objects.json, "
                                                            "region_descriptions.json, optional attributes.json)")
    p.add_argument("--out", type=Path, required=True, metavar="AUDITED.jsonl",
                   help="every record with its 'audit' object (.json or .jsonl)")
    p.add_argument("--image-prefix", default="", help="strip this from the records' image paths before the join "
                                                      "(e.g. coco/train2017/)")
    p.add_argument("--box-frame", choices=("auto", "native", "llava15"), default="auto",
                   help="frame of the boxes in answers: native, llava15 (square-padded), or auto (default: native "
                        "for records with <st> tags, llava15 otherwise)")
    p.add_argument("--iou", type=_number(float, 0, True, 1), default=0.5,
                   help="IoU with an annotated box that a box in an answer needs (default 0.5)")
    p.add_argument("--reject-above", type=_number(int, 0), metavar="N",
                   help="records with more than N problems go to <out stem>.rejects<suffix> instead of --out")
    p.add_argument("--report", type=Path, metavar="R.json", help="write the report (CHAIR, counts) here as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    """`visinstruct audit`."""
    from .audit import AuditOptions, audit, summary_lines

    opts = AuditOptions(args.out, args.coco_instances, args.caps_boxes, args.vg, args.image_prefix, args.box_frame,
                        args.iou, args.reject_above, args.report, _progress(args))
    report = audit(args.input, opts)
    write_report(args.report, report)
    for line in summary_lines(report):
        print(line, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(prog="visinstruct", description="Build LLaVA-format visual instruction data.")
    parser.add_argument("--version", action="version", version=f"visinstruct {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_pad_boxes(sub)
    _add_convert(sub)
    _add_validate(sub)
    _add_filter(sub)
    _add_check(sub)
    _add_mix(sub)
    _add_stats(sub)
    _add_view(sub)
    _add_audit(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors are printed as one line with exit status 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"visinstruct: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("visinstruct: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
