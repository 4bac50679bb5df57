"""The `audit` stage: stream the records, join each to its image's annotations, write every record with its
`audit` object (with `reject_above`, records with more problems go to `<out stem>.rejects<suffix>` instead),
and return the report (CHAIR, problems by kind, by task and by language)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.inputs import read_splits, record_splits
from ..core.io import RecordWriter, check_paths, output_format
from ..core.report import Progress, make_report
from ..core.step import Item
from ..grounding.annotations import Annotations, load_annotations
from ..grounding.boxes import FRAMES
from ..grounding.judge import Checks
from ..grounding.record import judge_record, reject_reason
from ..sources.visual_genome import vg_files
from .tally import Tally

REJECT_STAGE = "grounding"


@dataclass
class AuditOptions:
    """What `visinstruct audit` was asked for: one annotation source, the output, how boxes are compared."""

    out: Path
    coco_instances: Path | None = None
    caps_boxes: Path | None = None
    vg: Path | None = None
    image_prefix: str = ""
    box_frame: str = "auto"
    iou: float = 0.5
    reject_above: int | None = None
    report: Path | None = None
    progress: bool | None = None

    def source(self) -> tuple[str, Path]:
        """(kind, path) of the one annotation source given."""
        given = [(kind, path) for kind, path in (("coco-instances", self.coco_instances),
                                                 ("caps-boxes", self.caps_boxes), ("vg", self.vg)) if path]
        if len(given) != 1:
            raise UserError("give one annotation source: --coco-instances FILE, --caps-boxes FILE or --vg DIR")
        return given[0]


def rejects_path(out: Path) -> Path:
    """Where records over `reject_above` go: `AUDITED.jsonl` → `AUDITED.rejects.jsonl`."""
    return out.with_name(f"{out.stem}.rejects{out.suffix}")


def _check(path: Path, opts: AuditOptions) -> tuple[str, Path]:
    """Settings and paths, before anything is read or written."""
    kind, source = opts.source()
    if opts.box_frame not in FRAMES:
        raise UserError(f"--box-frame must be one of {', '.join(FRAMES)}, got {opts.box_frame!r}")
    if not 0 < opts.iou <= 1:
        raise UserError(f"--iou must be in (0, 1], got {opts.iou}")
    if opts.reject_above is not None and opts.reject_above < 0:
        raise UserError(f"--reject-above must be 0 or more, got {opts.reject_above}")
    output_format(opts.out)
    inputs: dict[str, Path | None] = {"the input": path}
    inputs |= {f"--vg {p.name}": p for p in vg_files(source).values()} if kind == "vg" else {f"--{kind}": source}
    rejects = rejects_path(opts.out) if opts.reject_above is not None else None
    check_paths(inputs, {"--out": opts.out, "the rejects file": rejects, "--report": opts.report})
    return kind, source


def _audit_one(item: Item, annotations: Annotations, opts: AuditOptions, checks: Checks, tally: Tally) -> int:
    """Add the `audit` object to the item's record and count it; returns its number of problems."""
    record = item.record
    judged = judge_record(record, item.where, annotations, checks, opts.image_prefix)
    task = str(record.get("task") or "unknown")
    if judged.verdict is None:
        record["audit"] = {"ok": None, "problems": [], "note": judged.note}
        tally.add(task, judged.lang, None, judged.note)
        return 0
    record["audit"] = judged.verdict.audit
    tally.add(task, judged.lang, judged.verdict)
    return len(judged.verdict.problems)


def audit(path: Path, opts: AuditOptions) -> dict[str, Any]:
    """Audit the records of `path` (.json, .jsonl, parquet) against one annotation source; returns the report."""
    started = time.monotonic()
    kind, source = _check(path, opts)
    splits = record_splits(path)
    annotations = load_annotations(kind, source)
    tally, checks = Tally(), Checks(opts.box_frame, opts.iou)
    kept = rejected = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(RecordWriter(opts.out))
        rejects = None
        if opts.reject_above is not None:
            rejects = stack.enter_context(RecordWriter(rejects_path(opts.out)))
        progress = stack.enter_context(Progress("audit", enabled=opts.progress))
        for item in read_splits(splits):
            problems = _audit_one(item, annotations, opts, checks, tally)
            if rejects is not None and problems > opts.reject_above:
                reason = reject_reason(item.record["audit"]["problems"], opts.reject_above)
                rejects.write({**item.record, "reject_stage": REJECT_STAGE, "reject_reason": reason})
                rejected += 1
            else:
                out.write(item.record)
                kept += 1
            progress.update()
    extra = {"annotations": {"source": kind, "path": str(source), "images": len(annotations.by_path),
                             "dropped_boxes": annotations.dropped.total},
             "box_frame": opts.box_frame, "iou": opts.iou, "reject_above": opts.reject_above,
             "rejects": str(rejects_path(opts.out)) if opts.reject_above is not None else None}
    return make_report("audit", path, opts.out, tally.total.records, kept, time.monotonic() - started, "local", 1,
                       {}, rejected=rejected, **extra, **tally.as_dict())


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What the CLI prints at the end: records, CHAIR, problems, joins, rejects."""
    records, problems, join = report["records"], report["problems"], report["join"]
    lines = [f"audit: {records['records']:,} records, {records['audited']:,} joined to annotations "
             f"({records['flagged']:,} flagged, {records['ok']:,} ok) in {report['seconds']} s",
             f"  CHAIR_i {_share(report['chair_i'])} ({report['hallucinated_mentions']:,}/{report['mentions']:,} "
             f"mentions), CHAIR_s {_share(report['chair_s'])} ({report['hallucinated_responses']:,}/"
             f"{report['responses']:,} answers)",
             "  problems: " + ", ".join(f"{kind} {n:,}" for kind, n in problems.items())]
    missing = {k: n for k, n in join.items() if k != "matched" and n}
    if missing:
        lines.append("  not joined: " + ", ".join(f"{k} {n:,}" for k, n in missing.items()))
    if report["boxes"]["unchecked"]:
        lines.append(f"  boxes not checked (llava15 frame, no image size in the annotations): "
                     f"{report['boxes']['unchecked']:,}")
    if report["rejects"]:
        lines.append(f"  {report['rejected']:,} records with more than {report['reject_above']} problems → "
                     f"{report['rejects']}")
    return lines
