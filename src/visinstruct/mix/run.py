"""`visinstruct mix`: a recipe (or a lock) in, one mixture (a .json/.jsonl file or a Hugging Face dataset
folder) and its lock out.

Plan first (files counted where a strategy or a target needs it, rows chosen as index runs, every target
resolved), then stream: each source's chosen rows in file order, image paths moved into the mixture's image
folder, excluded images and cross-source duplicates dropped, provenance set, each record written at once (a
folder: surveyed, then its lock replayed into parquet shards, see folder.py). Memory holds index runs, the
dedup digests and the exclusion set, never the records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.io import RecordWriter, check_paths, write_json
from ..core.report import Progress, make_report
from .dedup import CrossSourceDedup
from .folder import FolderOptions, FolderSurvey, Row, check_replaceable, output_kind, require_roots, write_folder
from .images import Excluded, Hasher, excluded_images, path_keys, prefix_for, rewrite_images
from .lock import TakeLog, lock_path, lock_takes, make_lock, read_lock, verify_files
from .recipe import Recipe, SourceSpec, load_recipe
from .rows import Rows
from .sources import count_rows, file_rows, read_rows
from .strategy import base_rows, share_out, source_rng, target_passes

PROGRESS_EVERY = 1024


@dataclass
class Plan:
    """What one source gives: its rows per file (when counted) and the passes of rows to write, in order."""

    spec: SourceSpec
    prefix: str
    image_root: Path  # where the source's image paths point (hashing reads the images there)
    paths_root: Path  # where they point once rewritten (the mixture's image_root, else image_root)
    counts: list[int] | None
    selected: Rows
    rng: np.random.Generator
    passes: list[Rows] = field(default_factory=list)


@dataclass
class SourceStats:
    """One source's line in the report."""

    name: str
    strategy: str
    rows: int | None = None
    selected: int = 0
    excluded: int = 0
    duplicates: int = 0
    written: int = 0


def set_source(record: dict[str, Any], name: str) -> None:
    """Provenance: `source` becomes the recipe's name for the source; a different `source` the record already
    had is kept in `source_original` (unless that key is taken: it then already holds the first origin)."""
    old = record.get("source")
    if old is not None and old != name and "source_original" not in record:
        record["source_original"] = old
    record["source"] = name


def _record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a record (a JSON object), got {type(record).__name__}")
    return record


# ---- planning ------------------------------------------------------------------------------------------

def plan_sources(recipe: Recipe, count_all: bool = False) -> list[Plan]:
    """Count where needed, choose each source's rows and resolve `count`/`weight` into passes."""
    plans = [_plan(recipe, spec, count_all or recipe.total is not None) for spec in recipe.sources]
    targets = {id(p): p.spec.count for p in plans}
    weighted = [p for p in plans if p.spec.weight is not None]
    if weighted:
        fixed = sum(targets[id(p)] if targets[id(p)] is not None else len(p.selected) for p in plans
                    if p.spec.weight is None)
        left = recipe.total - fixed
        if left < 0:
            raise UserError(f"{recipe.where('total')}: total {recipe.total:,} is less than the {fixed:,} rows "
                            "the sources without a weight take")
        for plan, share in zip(weighted, share_out(left, [p.spec.weight for p in weighted]), strict=True):
            targets[id(plan)] = share
    for plan in plans:
        target = targets[id(plan)]
        try:
            plan.passes = [plan.selected] if target is None else target_passes(plan.selected, target, plan.rng)
        except ValueError as exc:
            raise UserError(f"{recipe.path}:{plan.spec.line}: {exc} ({plan.spec.path} gives none)") from None
    return plans


def _plan(recipe: Recipe, spec: SourceSpec, count_all: bool) -> Plan:
    prefix = prefix_for(spec.image_root, recipe.image_root)
    if prefix is None:
        raise UserError(f"{recipe.path}:{spec.line}: image_root {spec.image_root} is not inside the recipe's "
                        f"image_root {recipe.image_root}: the mixture's image paths must share one folder")
    needs_count = count_all or spec.strategy.needs_count or spec.count is not None
    counts = [count_rows(f) for f in spec.files] if needs_count else None
    rng = source_rng(spec.seed, spec.name)
    selected = base_rows(spec.strategy, sum(counts) if counts is not None else None, rng)
    image_root = spec.image_root or recipe.image_root or (spec.path if spec.path.is_dir() else spec.path.parent)
    return Plan(spec, prefix, image_root, recipe.image_root or image_root, counts, selected, rng)


# ---- the stage -----------------------------------------------------------------------------------------

def _check_outputs(recipe: Recipe, outputs: dict[str, Path | None], folder: bool) -> None:
    """Refuse outputs that are inputs (a folder output: that hold an input or an image folder), or that lie in
    a source's folder of shards (the next run would read them as one more shard)."""
    inputs: dict[str, Path | None] = {"the recipe": recipe.path}
    if folder:
        inputs["the recipe's image_root"] = recipe.image_root
    for spec in recipe.sources:
        for n, file in enumerate(spec.files):
            inputs[f"file {n} of source {spec.name!r}"] = file.path
        if folder:
            inputs[f"the image_root of source {spec.name!r}"] = spec.image_root
    for n, entry in enumerate(recipe.exclude):
        for k, file in enumerate(entry.files):
            inputs[f"file {k} of exclude_images_of entry {n}"] = file.path
    check_paths(inputs, outputs, folders=frozenset({"--out"}) if folder else frozenset())
    for spec in recipe.sources:
        for name, path in outputs.items():
            if path is not None and spec.path.is_dir() and spec.path.resolve() in path.resolve().parents:
                raise UserError(f"{path}: {name} is inside the folder of source {spec.name!r} ({spec.path}), "
                                "where a later run would read it as a shard; choose another output path")


class _Matcher:
    """Per record: the image paths and hashes that exclusion and dedup need, computed only when needed."""

    def __init__(self, recipe: Recipe, excluded: Excluded | None, dedup: CrossSourceDedup | None,
                 hasher: Hasher | None) -> None:
        self.excluded, self.dedup, self.hasher = excluded, dedup, hasher
        self.wants_paths = excluded is not None or recipe.dedup in ("image", "both")

    def keep(self, plan: Plan, record: dict[str, Any], stats: SourceStats) -> bool:
        """Rewrite the record's image paths, then say whether it stays (counting why not)."""
        hashes = self.hasher.record(plan.image_root, record) if self.hasher is not None else []
        rewrite_images(record, plan.prefix)
        paths = path_keys(record) if self.wants_paths else []
        if self.excluded is not None and self.excluded.matches(paths, hashes):
            stats.excluded += 1
            return False
        if self.dedup is not None and self.dedup.check(record, paths, hashes):
            stats.duplicates += 1
            return False
        return True


def mix(recipe_path: Path, out: Path, progress: bool | None = None, dry_run: bool = False,
        report: Path | None = None, folder: FolderOptions | None = None) -> dict[str, Any]:
    """Write the mixture a recipe describes to `out` (.json, .jsonl, or a folder of parquet shards cut by
    `folder`) and its lock beside it; the report (`report` is where the caller will write it: only checked
    here against the other paths)."""
    started = time.monotonic()
    recipe = load_recipe(recipe_path)
    kind = output_kind(out, folder)
    lock = lock_path(out)
    _check_outputs(recipe, {"--out": out, "the lock": lock, "--report": report}, kind == "folder")
    if kind == "folder":
        check_replaceable(out)
    plans = plan_sources(recipe, count_all=dry_run)
    if dry_run:
        return _dry_report(recipe, out, plans, time.monotonic() - started)
    hasher = Hasher() if recipe.uses_phash else None
    excluded = excluded_images(recipe.exclude, recipe.image_root, hasher, recipe.phash_distance) \
        if recipe.exclude else None
    dedup = CrossSourceDedup(recipe.dedup, recipe.image_match, recipe.phash_distance) if recipe.dedup else None
    matcher = _Matcher(recipe, excluded, dedup, hasher)
    stats: list[SourceStats] = []
    entries: list[dict[str, Any]] = []
    total = sum(len(r) for p in plans for r in p.passes if not r.is_open) if all(
        not r.is_open for p in plans for r in p.passes) else None
    survey = FolderSurvey(folder or FolderOptions()) if kind == "folder" else None
    with Progress("mix", total, progress) as bar:
        rows = _mixed_rows(plans, matcher, bar, stats, entries)
        if survey is None:
            with RecordWriter(out) as writer:
                for record, _, _ in rows:
                    writer.write(record)
                write_json(lock, make_lock(recipe.path.resolve(), entries, writer.count, writer.digest.hexdigest()))
        else:
            for row in rows:
                survey.add(*row)
    if survey is not None:
        locked = make_lock(recipe.path.resolve(), entries, survey.count, survey.digest.hexdigest())
        write_folder(out, _locked_rows(locked, []), survey.finish(), locked, lock, lock, progress)
    return _report(recipe.path, out, lock, stats, time.monotonic() - started, excluded, hasher)


def _mixed_rows(plans: list[Plan], matcher: _Matcher, bar: Progress, stats: list[SourceStats],
                entries: list[dict[str, Any]]) -> Iterator[Row]:
    """The mixture's records in output order, each with where it was read and the folder its image paths are
    relative to; as each source ends, its stats and its lock entry are appended."""
    for plan in plans:
        spec = plan.spec
        stat = SourceStats(spec.name, str(spec.strategy), sum(plan.counts) if plan.counts else None)
        log = TakeLog()
        stats.append(stat)
        for record, where in _source_rows(plan, matcher, bar, stat, log):
            yield record, where, plan.paths_root
        if matcher.dedup is not None:
            matcher.dedup.end_source()
        entries.append(log.entry(spec.name, spec.path, str(spec.strategy), plan.prefix, plan.paths_root,
                                 spec.files))


def _source_rows(plan: Plan, matcher: _Matcher, bar: Progress, stats: SourceStats,
                 log: TakeLog) -> Iterator[tuple[dict[str, Any], str]]:
    """One source's kept records (provenance set), counted in `stats` and `log`."""
    spec = plan.spec
    for rows in plan.passes:
        for file_index, row, record, where in file_rows(spec.files, rows, plan.counts):
            stats.selected += 1
            record = _record(record, where)
            if matcher.keep(plan, record, stats):
                set_source(record, spec.name)
                log.add(file_index, row)
                stats.written += 1
                yield record, where
            if stats.selected % PROGRESS_EVERY == 0:
                bar.update(PROGRESS_EVERY)
    bar.update(stats.selected % PROGRESS_EVERY)
    if stats.rows is None and spec.strategy.kind == "all":
        stats.rows = stats.selected  # read to the end: every row was selected once


def _locked_rows(lock: dict[str, Any], stats: list[SourceStats], bar: Progress | None = None) -> Iterator[Row]:
    """The records a lock lists, in its order, as the mixture holds them (paths rewritten, provenance set)."""
    for source in lock["sources"]:
        stat = SourceStats(source["name"], str(source.get("strategy", "")))
        stats.append(stat)
        root = Path(source["image_root"]) if isinstance(source.get("image_root"), str) else None
        for file, rows in lock_takes(source):
            for _, record, where in read_rows(file, rows):
                record = _record(record, where)
                rewrite_images(record, source["image_prefix"])
                set_source(record, source["name"])
                stat.selected += 1
                stat.written += 1
                yield record, where, root
        if bar is not None:
            bar.update(stat.written)


def replay(lock_file: Path, out: Path, progress: bool | None = None, report: Path | None = None,
           folder: FolderOptions | None = None) -> dict[str, Any]:
    """Write the mixture a lock describes, byte for byte as when it was made; refuse a changed source file
    (`report`: where the caller will write the report, checked against the other paths)."""
    started = time.monotonic()
    lock = read_lock(lock_file)
    kind = output_kind(out, folder)
    lock_out = lock_path(out)
    same_lock = lock_out.exists() and lock_out.resolve() == lock_file.resolve()
    inputs: dict[str, Path | None] = {"the lock": lock_file}
    for source in lock["sources"]:
        for n, file in enumerate(source["files"]):
            inputs[f"file {n} of source {source['name']!r}"] = Path(file["path"])
        if kind == "folder" and isinstance(source.get("image_root"), str):
            inputs[f"the image_root of source {source['name']!r}"] = Path(source["image_root"])
    check_paths(inputs, {"--out": out, "the new lock": None if same_lock else lock_out, "--report": report},
                folders=frozenset({"--out"}) if kind == "folder" else frozenset())
    if kind == "folder":
        check_replaceable(out)
    verify_files(lock_file, lock)
    stats: list[SourceStats] = []
    if kind == "folder":
        _replay_folder(lock_file, lock, out, None if same_lock and "images_sha256" in lock else lock_out,
                       folder or FolderOptions(), stats, progress)
    else:
        with RecordWriter(out) as writer, Progress("mix", lock.get("records"), progress) as bar:
            for record, _, _ in _locked_rows(lock, stats, bar):
                writer.write(record)
            _check_digest(lock_file, lock, writer.digest.hexdigest())
            if not same_lock:
                write_json(lock_out, lock)
    return _report(lock_file, out, lock_out, stats, time.monotonic() - started, None, None)


def _replay_folder(lock_file: Path, lock: dict[str, Any], out: Path, lock_out: Path | None, opts: FolderOptions,
                   stats: list[SourceStats], progress: bool | None) -> None:
    """A lock into a folder: survey its rows (and check their SHA-256), then write them (see folder.py)."""
    require_roots(lock_file, lock)
    survey = FolderSurvey(opts)
    with Progress("mix", lock.get("records"), progress) as bar:
        for row in _locked_rows(lock, [], bar):
            survey.add(*row)
    _check_digest(lock_file, lock, survey.digest.hexdigest())
    write_folder(out, _locked_rows(lock, stats), survey.finish(), lock, lock_file, lock_out, progress)


def _check_digest(lock_file: Path, lock: dict[str, Any], found: str) -> None:
    if found != lock["records_sha256"]:
        raise UserError(f"{lock_file}: the replayed records differ from the locked ones (SHA-256 "
                        f"{found[:12]}… ≠ {lock['records_sha256'][:12]}…); nothing written")


# ---- reports -------------------------------------------------------------------------------------------

def _report(source: Path, out: Path, lock: Path, stats: list[SourceStats], seconds: float,
            excluded: Excluded | None, hasher: Hasher | None) -> dict[str, Any]:
    selected, written = sum(s.selected for s in stats), sum(s.written for s in stats)
    after_exclude = selected - sum(s.excluded for s in stats)
    steps = {"select": {"in": selected, "out": selected, "rejected": 0},
             "exclude_images": _step(selected, after_exclude, "excluded_image"),
             "dedup": _step(after_exclude, written, "duplicate")}
    extra = {"excluded_images_known": excluded.images if excluded else 0,
             "images_not_hashed": hasher.unreadable if hasher else 0}
    return make_report("mix", source, out, selected, written, seconds, "local", 1, steps, lock=str(lock),
                       sources=[asdict(s) for s in stats], **extra)


def _step(rows_in: int, rows_out: int, reason: str) -> dict[str, Any]:
    step: dict[str, Any] = {"in": rows_in, "out": rows_out, "rejected": rows_in - rows_out}
    if rows_in > rows_out:
        step["rejected_by_reason"] = {reason: rows_in - rows_out}
    return step


def _dry_report(recipe: Recipe, out: Path, plans: list[Plan], seconds: float) -> dict[str, Any]:
    stats = []
    for plan in plans:
        size = sum(len(r) for r in plan.passes)
        stats.append(SourceStats(plan.spec.name, str(plan.spec.strategy), sum(plan.counts or [0]), size,
                                 written=size))
    report = _report(recipe.path, out, lock_path(out), stats, seconds, None, None)
    report["dry_run"] = True
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The table the CLI prints: one line per source, then the totals."""
    rows = [("source", "strategy", "rows", "selected", "excluded", "duplicates", "written")]
    for s in report["sources"]:
        rows.append((s["name"], s["strategy"], "?" if s["rows"] is None else f"{s['rows']:,}", f"{s['selected']:,}",
                     f"{s['excluded']:,}", f"{s['duplicates']:,}", f"{s['written']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                               strict=True)))
             for r in rows]
    verb = "would write" if report.get("dry_run") else "wrote"
    lines.append(f"mix: {verb} {report['records_out']:,} records to {report['output']} in {report['seconds']} s"
                 + ("" if report.get("dry_run") else f" (lock: {report['lock']})"))
    if report.get("images_not_hashed"):
        lines.append(f"  images that could not be read for hashing (matched by path only): "
                     f"{report['images_not_hashed']:,}")
    return lines
