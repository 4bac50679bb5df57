"""`visinstruct stats`: check the paths, read the ledger / filter report / rejects, make one streaming pass over
the records, then write the JSON, the card and the HTML report (each atomically)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.io import check_paths, write_bytes, write_json
from ..core.report import Progress
from ..core.tokens import TokenCounter
from .card import card_text
from .collect import Collector, Sampled
from .images import clear_cache
from .inputs import check_input, read_input
from .made import read_filter_report, read_ledger
from .rejects import read_rejects
from .report import report_html


@dataclass
class StatsOptions:
    """What `stats` reads besides the records, and what it writes."""

    image_root: Path | None = None
    rejects: Path | None = None
    html: Path | None = None
    card: Path | None = None
    json: Path | None = None
    tokenizer: Path | None = None
    ledger: Path | None = None
    filter_report: Path | None = None
    license: str = "other"
    name: str | None = None
    sample: int = 24
    seed: int = 0
    progress: bool | None = None


def _check(files: list[Path], opts: StatsOptions) -> None:
    """Every input exists and no output overwrites an input or another output: before any work."""
    if not files:
        raise UserError("give at least one record file")
    for path in files:
        check_input(path)
    if opts.image_root is not None and not opts.image_root.is_dir():
        raise UserError(f"{opts.image_root}: --image-root is not a folder")
    if opts.sample < 0:
        raise UserError(f"--sample must be 0 or more, got {opts.sample}")
    names = ["the input"] if len(files) == 1 else [f"input {i + 1}" for i in range(len(files))]
    inputs: dict[str, Path | None] = dict(zip(names, files, strict=True))
    inputs.update({"--rejects": opts.rejects, "--ledger": opts.ledger, "--filter-report": opts.filter_report,
                   "--tokenizer": opts.tokenizer})
    check_paths(inputs, {"--html": opts.html, "--card": opts.card, "--json": opts.json})


def _made(opts: StatsOptions) -> dict[str, Any]:
    """The ledger, filter report and rejects summaries that were asked for (read before the long pass)."""
    made: dict[str, Any] = {}
    if opts.ledger:
        made["ledger"] = read_ledger(opts.ledger)
    if opts.filter_report:
        made["filter_report"] = read_filter_report(opts.filter_report)
    if opts.rejects:
        made["rejects"] = read_rejects(opts.rejects)
    return made


def compute_stats(files: list[Path], opts: StatsOptions) -> tuple[dict[str, Any], list[Sampled]]:
    """The statistics of the records of `files` (one streaming pass) and the sampled records."""
    _check(files, opts)
    tokens = TokenCounter(opts.tokenizer)
    made = _made(opts)
    clear_cache()
    collector = Collector(tokens, opts.image_root, opts.sample, opts.seed)
    started = time.perf_counter()
    with Progress("stats", enabled=opts.progress) as progress:
        for path in files:
            for where, record in read_input(path):
                collector.add(where, record, path)
                progress.update()
    stats = collector.as_dict()
    stats["seconds"] = round(time.perf_counter() - started, 2)
    stats["made"] = made
    return stats, collector.sample.items


def write_outputs(stats: dict[str, Any], sample: list[Sampled], files: list[Path], opts: StatsOptions) -> None:
    """The JSON, the card and the HTML report that were asked for."""
    title = opts.name or files[0].name
    if opts.json:
        write_json(opts.json, stats)
    if opts.card:
        write_bytes(opts.card, card_text(stats, files, opts.card, opts.license, opts.name).encode("utf-8"))
    if opts.html:
        write_bytes(opts.html, report_html(stats, sample, opts.image_root, title).encode("utf-8"))


def stats(files: list[Path], opts: StatsOptions) -> dict[str, Any]:
    """Compute and write: the library call behind the command."""
    found, sample = compute_stats(files, opts)
    write_outputs(found, sample, files, opts)
    return found


def summary_lines(stats: dict[str, Any], opts: StatsOptions) -> list[str]:
    """What the CLI prints at the end."""
    def top(counts: dict[str, int]) -> str:
        shown = ", ".join(f"{k} {n:,}" for k, n in list(counts.items())[:6])
        return shown + (f", … ({len(counts)} in all)" if len(counts) > 6 else "")

    h = stats["histograms"]
    lines = [f"stats: {stats['records']:,} records in {stats['seconds']} s",
             f"  tasks: {top(stats['by_task'])}", f"  languages: {top(stats['by_lang'])}",
             f"  sources: {top(stats['by_source'])}",
             f"  tokens per record: median ≈ {h['tokens_record']['p50'] or 0:,}, max {h['tokens_record']['max'] or 0:,}"
             f"; {stats['tokens_method']}",
             f"  <image> tokens ≠ images: {stats['image_token_mismatch']['records']:,} records"]
    if stats["problems"]:
        lines.append(f"  problems: {top(stats['problems'])}")
    if stats.get("image_files"):
        lines.append(f"  image files: {top(stats['image_files'])}")
    rejects = stats["made"].get("rejects")
    if rejects:
        lines.append(f"  rejected: {rejects['rejected']:,}" + (f" ({top(rejects['by_reason'])})"
                                                                 if rejects["rejected"] else ""))
    written = [f"{what}: {path}" for what, path in (("json", opts.json), ("card", opts.card),
                                                      ("report", opts.html)) if path]
    if written:
        lines.append("wrote " + ", ".join(written))
    return lines
