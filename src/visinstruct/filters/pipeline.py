"""`visinstruct filter`: records through the filter steps, kept or rejected with a reason, one report.

The steps are built and checked in the driver (unknown stages, missing extras, bad settings fail there,
before any worker starts). Structure, spelling, heuristics, language, grounding and the MinHash signatures
are stateless and run on the executor's workers; the duplicate stages keep state and run in the driver, in
input order. Every rejected record goes to the rejects file with `reject_stage` and `reject_reason`;
rewritten (truncated) records are kept and listed in the report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.errors import UserError
from ..core.inputs import record_splits
from ..core.io import RecordWriter, check_paths
from ..core.report import Progress, Tally, make_report, write_report
from ..core.step import Item, Step, check_pipeline
from ..exec import make_executor
from .steps import FilterStep, check_settings, dedup_steps, stateless_steps

STAGES = ("structure", "decontaminate", "spelling", "heuristics", "language", "dedup")
ALL_STAGES = (*STAGES, "grounding")  # grounding is not a default: it needs annotations (see __post_init__)


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
    decontaminate: Path | None = None    # eval images: a folder, or a text file of paths
    eval_questions: Path | None = None   # eval questions: .json / .jsonl
    phash_distance: int | None = None    # None: decontaminate.PHASH_DISTANCE
    ngram: int | None = None             # None: decontaminate.NGRAM
    coco_instances: Path | None = None   # the grounding stage's annotations: one of these three
    caps_boxes: Path | None = None
    vg: Path | None = None
    grounding_max: int = 0               # reject a record with more problems than this
    grounding_kinds: list[str] = field(default_factory=lambda: ["object", "count", "box"])
    box_frame: str = "auto"
    iou: float = 0.5
    image_prefix: str = ""
    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        """An annotation source with the default stages turns the grounding stage on; with an explicit
        stage list it must name grounding (checked in `check_settings`)."""
        if (self.coco_instances or self.caps_boxes or self.vg) and self.stages == list(STAGES):
            self.stages = [*self.stages, "grounding"]

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> FilterConfig:
        """Settings from a YAML file; flags given on the command line win."""
        require("filter", "--config (YAML)", ("yaml",))
        import yaml

        try:
            raw = yaml.safe_load(path.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read the filter config ({exc})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: the filter config must be a mapping of settings")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        for key in ("image_root", "allowlist", "decontaminate", "eval_questions", "coco_instances", "caps_boxes", "vg"):
            if raw.get(key):
                raw[key] = Path(raw[key])
        return cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})


def build_steps(config: FilterConfig) -> list[Step]:
    """The filter pipeline as a plain list of steps, checked (settings, extras) in the driver."""
    unknown = [s for s in config.stages if s not in ALL_STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(ALL_STAGES)}")
    check_settings(config)
    steps = stateless_steps(config) + dedup_steps(config)
    check_pipeline(steps)
    return steps


def _rejected(item: Item) -> dict[str, Any]:
    base = item.record if isinstance(item.record, dict) else {"record": item.record}
    return {**base, "reject_stage": item.rejected, "reject_reason": item.reason}


def _decontamination(steps: list[Step], matches: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's `decontamination` section (the eval set and every match) when that stage ran."""
    step = next((s for s in steps if s.name == "decontaminate"), None)
    return {"decontamination": {**step.summary(), "matches": matches}} if step is not None else {}


def run_filter(source: Path, kept: Path, rejects: Path, config: FilterConfig,
               report: Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Filter `source` into `kept` and `rejects`; returns (and writes) the report."""
    from .grounding import grounding_inputs  # the grounding library loads only when filter runs

    started = time.perf_counter()
    check_paths({"the input": source, "--allowlist": config.allowlist, "--image-root": config.image_root,
                 "--decontaminate": config.decontaminate, "--eval-questions": config.eval_questions,
                 **grounding_inputs(config)},
                {"--out": kept, "--rejects": rejects, "--report": report})
    steps = build_steps(config)
    executor = make_executor(config.executor, config.workers, config.ray_address)
    splits = record_splits(source, parts=executor.workers * 4)
    tally = Tally([step.name for step in steps])
    rewrites: list[dict[str, Any]] = []
    matches: list[dict[str, Any]] = []  # decontamination: every match, from the rejected items
    with RecordWriter(kept) as keep, RecordWriter(rejects) as drop, Progress("filter", enabled=progress) as bar:
        for item in executor.run(splits, steps, tally):
            bar.update()
            if item.rejected:
                drop.write(_rejected(item))
                matches.extend((item.extra or {}).get("decontaminate", ()))
                continue
            if item.note:
                rewrites.append({"id": item.record.get("id"), **item.note})
            keep.write(item.record)
    result = make_report(
        "filter", source, kept, keep.count + drop.count, keep.count, time.perf_counter() - started,
        executor.name, config.workers, tally.as_dict(), rejects=str(rejects), rewritten=len(rewrites),
        rewrites=rewrites, config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        **_decontamination(steps, matches))
    write_report(report, result)
    return result


__all__ = ["ALL_STAGES", "STAGES", "FilterConfig", "FilterStep", "build_steps", "run_filter"]
