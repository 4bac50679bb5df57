"""Annotation sources → scenes (COCO, caps-boxes, Visual Genome, image folders), and input selection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from .coco import load_caps_boxes, load_coco
from .images import image_scenes
from .scene import Box, Dropped, Scene
from .visual_genome import load_vg, vg_files

__all__ = ["Box", "Dropped", "InputSpec", "Scene", "open_scenes"]


@dataclass
class InputSpec:
    """The input flags of `generate`: exactly one source (COCO files, caps-boxes, VG, or images)."""

    mode: str = "text"
    coco_captions: Path | None = None
    coco_instances: Path | None = None
    caps_boxes: Path | None = None
    vg: Path | None = None
    images: Path | None = None
    image_prefix: str = ""
    source: str | None = None
    dropped: Dropped = field(default_factory=Dropped)  # filled while reading: boxes left out, by reason

    def files(self) -> dict[str, Path | None]:
        """Every input path by flag, for the output-path guard (an output must not be any of them)."""
        found: dict[str, Path | None] = {"--coco-captions": self.coco_captions,
                                         "--coco-instances": self.coco_instances,
                                         "--caps-boxes": self.caps_boxes, "--images": self.images}
        if self.vg is not None:
            found |= {f"--vg {path.name}": path for path in vg_files(self.vg).values()}
        return found


def _check(spec: InputSpec) -> None:
    if spec.mode == "vlm":
        if not spec.images or spec.vg or spec.caps_boxes or spec.coco_captions:
            raise UserError("--mode vlm takes its images from --images (a folder or a list file) alone")
        return
    if spec.images:
        raise UserError("--images needs --mode vlm")
    if spec.vg:
        if spec.caps_boxes or spec.coco_instances:
            raise UserError("--vg takes only --coco-captions besides it (for images with a coco_id)")
        return
    if bool(spec.caps_boxes) == bool(spec.coco_captions):
        raise UserError("give one input: --coco-captions (with optional --coco-instances), --caps-boxes or --vg")
    if spec.coco_instances and not spec.coco_captions:
        raise UserError("--coco-instances needs --coco-captions")


def _check_kinds(spec: InputSpec) -> None:
    """A folder where a file is expected (or the reverse) is named with its flag, before anything is read."""
    for flag, path in (("--coco-captions", spec.coco_captions), ("--coco-instances", spec.coco_instances),
                       ("--caps-boxes", spec.caps_boxes)):
        if path is not None and path.is_dir():
            raise UserError(f"{path}: {flag} expects a file, got a folder")
    if spec.vg is not None and spec.vg.exists() and not spec.vg.is_dir():
        raise UserError(f"{spec.vg}: --vg expects the Visual Genome folder, got a file")


def _not_empty(scenes: Iterator[Scene], where: Path, why: str) -> Iterator[Scene]:
    """The scenes, then an error if there were none: an empty input must not replace an output with `[]`."""
    empty = True
    for scene in scenes:
        empty = False
        yield scene
    if empty:
        raise UserError(f"no scenes in {where} ({why})")


def open_scenes(spec: InputSpec) -> Iterator[Scene]:
    """The scenes of the chosen input, streamed where the format allows (checked before the first one)."""
    _check(spec)
    _check_kinds(spec)
    if spec.mode == "vlm":
        return iter(image_scenes(spec.images, spec.image_prefix, spec.source or spec.images.stem))
    if spec.vg:
        return _not_empty(load_vg(spec.vg, spec.coco_captions, spec.image_prefix, spec.source or "visual_genome",
                                  spec.dropped), spec.vg / "image_data.json", "it lists no image")
    if spec.caps_boxes:
        return _not_empty(load_caps_boxes(spec.caps_boxes, spec.image_prefix, spec.source or spec.caps_boxes.stem),
                          spec.caps_boxes, "it holds no record")
    return _not_empty(load_coco(spec.coco_captions, spec.coco_instances, spec.image_prefix,
                                spec.source or spec.coco_captions.stem, spec.dropped), spec.coco_captions,
                      "no image in it has a caption")
