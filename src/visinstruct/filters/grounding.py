"""The `grounding` stage: a record whose answers contradict its image's annotations (objects that are not
there, wrong counts, boxes that match nothing) is rejected when it has more than `max_problems` problems of
the chosen kinds. The checks are those of `audit` (the `grounding` library, `judge_record`), so a stage run
with N rejects what `audit --reject-above N` rejects, with the same reason.

A record that joins no annotations (no image, several images, an image the annotations do not list) is kept
and counted under `unjoined`. The step's settings are plain values, so it pickles to any worker; each worker
loads the annotations once, in `setup`; the driver only checks the settings and that the files are there.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..grounding.annotations import load_annotations
from ..grounding.boxes import FRAMES
from ..grounding.judge import KINDS, Checks
from ..grounding.record import counted, judge_record, reject_reason
from ..sources.visual_genome import vg_files
from .base import Reject, Verdict

if TYPE_CHECKING:
    from .pipeline import FilterConfig

FLAGS = {"coco-instances": "coco_instances", "caps-boxes": "caps_boxes", "vg": "vg"}
SETTINGS = {"grounding_max": "--grounding-max", "grounding_kinds": "--grounding-kinds", "box_frame": "--box-frame",
            "iou": "--iou", "image_prefix": "--image-prefix"}


class GroundingFilter:
    """Reject records with more than `max_problems` problems of `kinds` against one annotation source."""

    name = "grounding"

    def __init__(self, source: str, path: Path, max_problems: int = 0, kinds: tuple[str, ...] = KINDS,
                 box_frame: str = "auto", iou: float = 0.5, image_prefix: str = "") -> None:
        self.annotations = load_annotations(source, Path(path))
        self.checks = Checks(box_frame, iou)
        self.max_problems, self.kinds, self.prefix = max_problems, tuple(kinds), image_prefix
        self.stats: Counter[str] = Counter()

    def check(self, record: dict[str, Any]) -> Verdict:
        judged = judge_record(record, f"record {record.get('id')}", self.annotations, self.checks, self.prefix)
        if judged.verdict is None:
            self.stats["unjoined"] += 1
            self.stats[f"unjoined: {judged.note}"] += 1
            return None
        problems = counted(judged.verdict.problems, self.kinds)
        self.stats["joined"] += 1
        self.stats["flagged"] += bool(problems)
        self.stats.update(f"problems: {p['kind']}" for p in problems)
        if len(problems) > self.max_problems:
            return Reject(reject_reason(problems, self.max_problems))
        return None


def source_of(config: FilterConfig) -> tuple[str, Path] | None:
    """(kind, path) of the annotation source given, None when none is; several is a UserError."""
    given = [(kind, getattr(config, key)) for kind, key in FLAGS.items() if getattr(config, key)]
    if len(given) > 1:
        raise UserError("the grounding stage reads one annotation source: give only one of --coco-instances, "
                        f"--caps-boxes, --vg (got {', '.join('--' + kind for kind, _ in given)})")
    return (given[0][0], Path(given[0][1])) if given else None


def kinds_of(value: Any) -> tuple[str, ...]:
    """The problem kinds that count: a list or a comma-separated string of object, count, box."""
    kinds = [k.strip() for k in value.split(",")] if isinstance(value, str) else list(value or ())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not [k for k in kinds if k]:
        raise UserError(f"--grounding-kinds takes {', '.join(KINDS)} (comma-separated), got {value!r}")
    return tuple(k for k in KINDS if k in kinds)


def grounding_inputs(config: FilterConfig) -> dict[str, Path]:
    """The annotation files the stage reads, by flag (for the output-is-an-input check)."""
    source = source_of(config)
    if source is None:
        return {}
    kind, path = source
    return {f"--vg {p.name}": p for p in vg_files(path).values()} if kind == "vg" else {f"--{kind}": path}


def check_grounding(config: FilterConfig) -> None:
    """In the driver, before anything is read: the stage has one annotation source that is there, and its
    numbers are in range."""
    source = source_of(config)
    if "grounding" not in config.stages:
        if source is not None:
            raise UserError(f"--{source[0]} is read by the grounding stage: add grounding to --stages")
        defaults = type(config)()
        given = [flag for key, flag in SETTINGS.items() if getattr(config, key) != getattr(defaults, key)]
        if given:
            raise UserError(f"{', '.join(given)}: settings of the grounding stage, which needs annotations "
                            "(--coco-instances FILE, --caps-boxes FILE or --vg DIR)")
        return
    if source is None:
        raise UserError("the grounding stage needs annotations: give --coco-instances FILE, --caps-boxes FILE "
                        "or --vg DIR")
    kind, path = source
    if not path.exists():
        raise UserError(f"{path}: --{kind} not found")
    if (kind == "vg") != path.is_dir():
        raise UserError(f"{path}: --{kind} expects " + ("the Visual Genome folder" if kind == "vg" else "a file"))
    if not isinstance(config.grounding_max, int) or config.grounding_max < 0:
        raise UserError(f"--grounding-max must be 0 or more, got {config.grounding_max!r}")
    if not 0 < config.iou <= 1:
        raise UserError(f"--iou must be in (0, 1], got {config.iou}")
    if config.box_frame not in FRAMES:
        raise UserError(f"--box-frame must be one of {', '.join(FRAMES)}, got {config.box_frame!r}")
    kinds_of(config.grounding_kinds)


def grounding_settings(config: FilterConfig) -> dict[str, Any]:
    """The stage's settings as plain, picklable values (checked by `check_grounding` first)."""
    kind, path = source_of(config)
    return {"source": kind, "path": path, "max_problems": config.grounding_max,
            "kinds": kinds_of(config.grounding_kinds), "box_frame": config.box_frame, "iou": config.iou,
            "image_prefix": config.image_prefix}
