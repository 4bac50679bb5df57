"""The `check` stage: stream a record file once, check every record for one target, and write the report
(problems streamed to it, so memory stays flat) and the `--fix` copy as the records go by."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ..core.errors import UserError
from ..core.inputs import read_splits, record_splits
from ..core.io import AtomicFile, RecordWriter, check_paths, output_format
from ..core.report import Progress
from ..core.tokens import TokenCounter
from .fix import FIXES, fix_record
from .record import NAMES, RecordChecker
from .targets import BLOCKING, KINDS, TARGETS, Target, input_kind


@dataclass
class CheckOptions:
    """What `visinstruct check` was asked for."""

    target: str
    image_root: Path | None = None
    max_tokens: int | None = None
    tokenizer: Path | None = None
    image_tokens: int | None = None
    fix: Path | None = None
    report: Path | None = None
    show: int = 3
    progress: bool | None = None


class Findings:
    """Counts per kind, a few examples of each, the records with a blocking problem, the box conventions."""

    def __init__(self, show: int) -> None:
        self.show = show
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.severity: dict[str, str] = {}
        self.blocked_records = 0
        self.boxes: Counter[str] = Counter()
        self.box_first: dict[str, str] = {}

    def add(self, problem: dict[str, Any]) -> None:
        kind = problem["kind"]
        self.counts[kind] += 1
        self.severity[kind] = problem["severity"]
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.show:
            examples.append(problem)

    def add_boxes(self, conventions: set[str], where: str) -> None:
        for convention in conventions:
            self.boxes[convention] += 1
            self.box_first.setdefault(convention, where)

    def total(self, severity: str) -> int:
        return sum(n for kind, n in self.counts.items() if self.severity[kind] == severity)


class ReportStream:
    """The --report JSON, written atomically: a head, the problems one by one, then the totals."""

    def __init__(self, path: Path | None, head: dict[str, Any], stack: contextlib.ExitStack) -> None:
        self.handle: IO[bytes] | None = stack.enter_context(AtomicFile(path)) if path else None
        self.count = 0
        if self.handle:
            self.handle.write(orjson.dumps(head)[:-1] + b',\n"problems": [\n')

    def add(self, problem: dict[str, Any]) -> None:
        if self.handle:
            self.handle.write((b",\n" if self.count else b"") + orjson.dumps(problem))
        self.count += 1

    def close(self, tail: dict[str, Any]) -> None:
        if self.handle:
            self.handle.write(b"\n],\n" + orjson.dumps(tail, option=orjson.OPT_INDENT_2)[1:] + b"\n")


def _prepare(path: Path, opts: CheckOptions) -> tuple[Target, str]:
    """Refuse bad options before anything is read or written."""
    if opts.target not in TARGETS:
        raise UserError(f"unknown --target {opts.target!r}; choose from {', '.join(TARGETS)}")
    if not path.exists():
        raise UserError(f"{path}: not found")
    if (opts.tokenizer is not None or opts.image_tokens is not None) and not opts.max_tokens:
        raise UserError("--tokenizer and --image-tokens count tokens for --max-tokens; give --max-tokens N too")
    if opts.image_root is not None and not opts.image_root.is_dir():
        raise UserError(f"{opts.image_root}: --image-root is not a folder")
    kind = input_kind(path.suffix.lower(), path.is_dir())
    if opts.fix is not None:
        output_format(opts.fix)
        if kind == "parquet":
            raise UserError(f"{path}: --fix writes .json/.jsonl copies of .json/.jsonl inputs; convert the parquet "
                            "first (visinstruct convert ... --to llava)")
    check_paths({"the input": path}, {"--fix": opts.fix, "--report": opts.report})
    return TARGETS[opts.target], kind


def _entry(kind: str, detail: str, target: Target, input_kind: str, index: int | None, record: Any,
           where: str) -> dict[str, Any]:
    record_id = record.get("id") if isinstance(record, dict) else None
    return {"kind": kind, "severity": target.severity_of(kind, input_kind), "index": index, "id": record_id,
            "where": where, "detail": detail}


def _file_format(target: Target, kind: str) -> list[tuple[str, str]]:
    if not target.formats.get(kind):
        return []
    return [("file_format", f"a {kind} input; {target.why['file_format']}")]


def _dataset_info(path: Path, checker: RecordChecker) -> dict[str, Any] | None:
    """The LLaMA-Factory dataset_info.json entry that reads this file as it is."""
    if checker.layout is None:
        return None
    container, (role, _) = checker.layout
    entry: dict[str, Any] = {"file_name": path.name, "formatting": "sharegpt", "columns": {"messages": container}}
    if checker.image_key:
        entry["columns"]["images"] = checker.image_key
    if role == "role":
        entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}
    return {path.stem: entry}


def check(path: Path, opts: CheckOptions) -> dict[str, Any]:
    """Check `path` for `opts.target`; returns the report (without the problem list, which --report holds)."""
    started = time.monotonic()
    target, kind = _prepare(path, opts)
    splits = record_splits(path)
    counter = TokenCounter(opts.tokenizer) if opts.max_tokens else None
    checker = RecordChecker(target, opts.image_root, counter, opts.max_tokens, opts.image_tokens)
    findings = Findings(opts.show)
    fixes: Counter[str] = Counter()
    changed = still_blocked = records = 0
    head = {"stage": "check", "input": str(path), "target": target.name, "trainer": target.trainer,
            "image_root": str(opts.image_root) if opts.image_root else None, "max_tokens": opts.max_tokens,
            "tokens": counter.method if counter else None}
    with contextlib.ExitStack() as stack:
        report = ReportStream(opts.report, head, stack)
        writer = stack.enter_context(RecordWriter(opts.fix)) if opts.fix else None
        progress = stack.enter_context(Progress("check", enabled=opts.progress))

        def emit(problem: dict[str, Any]) -> None:
            findings.add(problem)
            report.add(problem)

        for found, detail in _file_format(target, kind):
            emit(_entry(found, detail, target, kind, None, None, str(path)))
        for item in read_splits(splits):
            records += 1
            problems, conventions = checker.check(item.record)
            findings.add_boxes(conventions, item.where)
            entries = [_entry(k, d, target, kind, item.index, item.record, item.where) for k, d in problems]
            for entry in entries:
                emit(entry)
            findings.blocked_records += any(e["severity"] == BLOCKING for e in entries)
            if writer is not None:  # every fix answers a reported problem: a record without one is kept as is
                fixed, done = fix_record(item.record, target) if entries else (item.record, [])
                writer.write(fixed)
                fixes.update(done)
                changed += bool(done)
                if any(e["severity"] == BLOCKING for e in entries):
                    again = checker.check(fixed)[0] if done else problems
                    still_blocked += any(target.severity_of(k, kind) == BLOCKING for k, _ in again)
            progress.update()
        if len(findings.boxes) > 1:
            seen = ", ".join(f"{NAMES[c]} in {n} records (first {findings.box_first[c]})"
                             for c, n in sorted(findings.boxes.items()))
            emit(_entry("box_mixed", f"the file mixes box conventions: {seen}", target, kind, None, None, str(path)))
        summary = _summary(path, target, opts, findings, records, time.monotonic() - started)
        if opts.fix:
            summary["fix"] = {"output": str(opts.fix), "records": records, "changed": changed,
                              "fixes": dict(fixes), "still_blocking": still_blocked}
        if target.one_layout_per_file:
            summary["dataset_info"] = _dataset_info(path, checker)
        report.close(summary)
    return {**head, **summary, "report": str(opts.report) if opts.report else None,
            "examples": findings.examples}


def _summary(path: Path, target: Target, opts: CheckOptions, findings: Findings, records: int,
             seconds: float) -> dict[str, Any]:
    blocking = findings.total(BLOCKING)
    by_kind = {kind: {"severity": findings.severity[kind], "count": findings.counts[kind],
                      "why": target.why.get(kind, "")} for kind in KINDS if kind in findings.counts}
    return {"records": records, "blocking": blocking, "warnings": sum(findings.counts.values()) - blocking,
            "records_with_blocking": findings.blocked_records, "by_kind": by_kind,
            "boxes": dict(sorted(findings.boxes.items())), "images_checked": opts.image_root is not None,
            "exit_status": 1 if blocking else 0, "seconds": round(seconds, 3)}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short human summary: totals, then each kind with its count, why, and the first examples."""
    lines = [f"check {report['input']} for {report['target']} ({report['trainer']}): {report['records']:,} records, "
             f"{report['blocking']:,} blocking problems in {report['records_with_blocking']:,} records, "
             f"{report['warnings']:,} warnings"]
    for kind, info in report["by_kind"].items():
        lines.append(f"  {info['severity']:<8} {kind:<18} {info['count']:>8,}  {info['why']}")
        for example in report["examples"].get(kind, []):
            named = f" (id {example['id']})" if example["id"] is not None else ""
            lines.append(f"      {example['where']}{named}: {example['detail']}")
    if not report["images_checked"]:
        lines.append("  images: not checked (give --image-root to check that they exist and open)")
    if report["boxes"]:
        lines.append("  boxes: " + ", ".join(f"{NAMES[c]} in {n:,} records" for c, n in report["boxes"].items()))
    if report.get("dataset_info"):
        lines.append("  LLaMA-Factory dataset_info.json entry: " + orjson.dumps(report["dataset_info"]).decode())
    fix = report.get("fix")
    if fix:
        made = ", ".join(f"{FIXES[name]} x{n:,}" for name, n in fix["fixes"].items()) or "nothing to fix"
        lines.append(f"  fix: wrote {fix['output']} ({fix['records']:,} records, {fix['changed']:,} changed: {made}); "
                     f"{fix['still_blocking']:,} records still have blocking problems (no unambiguous fix)")
    if report.get("report"):
        lines.append(f"  report: {report['report']}")
    return lines
