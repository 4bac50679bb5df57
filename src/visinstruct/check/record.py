"""All the checks of one record for one target, in the order reports list them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.tokens import TokenCounter
from .boxes import find_conventions
from .checks import empty_problems, order_problems, token_problems, too_long_problem
from .images import image_problems
from .shape import Problem, Shape, Turn, read_shape
from .targets import KINDS, Target

NAMES = {"norm1": "[0,1]", "norm1000": "Qwen-VL [0,1000)", "pixels": "absolute pixels"}


class RecordChecker:
    """Checks records one by one; remembers the file's first layout and image key (LLaMA-Factory declares
    them once per dataset)."""

    def __init__(self, target: Target, image_root: Path | None = None, counter: TokenCounter | None = None,
                 max_tokens: int | None = None, image_tokens: int | None = None) -> None:
        self.target, self.image_root, self.counter, self.max_tokens = target, image_root, counter, max_tokens
        self.image_tokens = target.image_tokens if image_tokens is None else image_tokens
        self.layout: tuple[str, tuple[str, str]] | None = None
        self.image_key: str | None = None

    def check(self, record: Any) -> tuple[list[Problem], set[str]]:
        """The record's problems (kind, detail) and the box conventions found in it."""
        shape, problems = read_shape(record, self.target)
        conventions: set[str] = set()
        if shape is not None:
            problems += self._layout(shape)
            sizes = []
            if shape.images is not None and self.image_root is not None:
                found, sizes = image_problems(self.image_root, shape.images)
                problems += found
            if shape.turns is not None:
                problems += self._turns(shape.turns, shape.images)
                size = sizes[0] if len(sizes) == 1 else None
                conventions, native = find_conventions((turn.value for turn in shape.turns), size)
                problems += self._boxes(conventions, native, size)
        problems.sort(key=lambda problem: KINDS.index(problem[0]))
        return problems, conventions

    def _layout(self, shape: Shape) -> list[Problem]:
        if shape.images and self.image_key is None:
            self.image_key = shape.image_key
        if not self.target.one_layout_per_file:
            return []
        layout = (shape.container, shape.keys)
        if self.layout is None:
            self.layout = layout
        if layout == self.layout:
            return []
        first = f"{self.layout[0]} ({self.layout[1][0]}/{self.layout[1][1]})"
        return [("layout", f"{shape.layout} differs from the first record's {first}: "
                           f"{self.target.trainer} reads one layout per dataset")]

    def _turns(self, turns: list[Turn], images: list[str] | None) -> list[Problem]:
        problems = empty_problems(turns) + order_problems(turns)
        if images is not None:
            problems += token_problems(turns, images, self.target)
        if self.max_tokens and self.counter is not None:
            text = self.counter.count([turn.value for turn in turns])
            pictures = self.image_tokens * len(images or [])
            problems += too_long_problem(text + pictures, text, pictures, self.max_tokens, self.counter.mark)
        return problems

    def _boxes(self, conventions: set[str], native: bool, size: tuple[int, int] | None) -> list[Problem]:
        expected = self.target.boxes
        if expected is None:
            return []
        problems = []
        other = sorted(conventions - expected)
        if other:
            wanted = " or ".join(NAMES[c] for c in sorted(expected))
            problems.append(("box_convention", f"boxes in {', '.join(NAMES[c] for c in other)}; "
                                               f"{self.target.name} trains on {wanted} boxes"))
        if native and self.target.padded_boxes and size:
            problems.append(("box_convention", f"a [0,1] box reaches into the padding band of this "
                                               f"{size[0]}x{size[1]} image: the boxes are in the image's own "
                                               "frame, not the square-padded one (visinstruct pad-boxes)"))
        return problems
