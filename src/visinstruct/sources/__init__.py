"""Annotation sources → scenes (COCO, caps-boxes, Visual Genome, image folders), and input selection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from .coco import load_caps_boxes, load_coco
from .images import image_scenes
from .scene import Box, Scene
from .visual_genome import load_vg

__all__ = ["Box", "InputSpec", "Scene", "open_scenes"]


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


def open_scenes(spec: InputSpec) -> Iterator[Scene]:
    """The scenes of the chosen input, streamed where the format allows (checked before the first one)."""
    _check(spec)
    if spec.mode == "vlm":
        return iter(image_scenes(spec.images, spec.image_prefix, spec.source or spec.images.stem))
    if spec.vg:
        return load_vg(spec.vg, spec.coco_captions, spec.image_prefix, spec.source or "visual_genome")
    if spec.caps_boxes:
        return load_caps_boxes(spec.caps_boxes, spec.image_prefix, spec.source or spec.caps_boxes.stem)
    return load_coco(spec.coco_captions, spec.coco_instances, spec.image_prefix, spec.source or spec.coco_captions.stem)
