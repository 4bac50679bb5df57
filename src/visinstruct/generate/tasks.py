"""The tasks registry: each task's name, mode, what its teacher reads, and how its reply becomes turns.

Everything that differs between tasks is a field here, so no other module branches on task names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import UserError

LANGS = ("en", "ru", "zh")


@dataclass(frozen=True)
class Task:
    """One kind of generated data."""

    name: str
    mode: str                   # text: the teacher reads annotations; vlm: it sees the image
    view: str = "captions"      # text mode: which scene view the teacher reads (see sources.scene.scene_text)
    reply: str = "pairs"        # pairs: question/answer blocks; description: the whole reply is one answer
    default: bool = True        # run when --tasks is not given
    referring: bool = False     # answers carry <st>…<ed> [box] markup; needs boxes or regions
    pack_file: str = ""         # prompt pack file name (default: the task name; vlm: vlm_<name>)
    cap_pairs: bool = False     # keep at most the pack's max_pairs rounds
    single_turn_rows: bool = False  # --schema svit: each question/answer pair is its own conversation
    teacher: bool = True        # False: made from the annotations alone (generate/presence.py); no prompt pack,
                                # no request; load_pack must not be called for it

    @property
    def pack_name(self) -> str:
        return self.pack_file or (self.name if self.mode == "text" else f"vlm_{self.name}")


# LLaVA gave the conversation task captions only and detail/reasoning captions plus boxes; referring QA
# reads the boxed regions (SVIT). VLM tasks follow llava-instruct-zh-600k. presence needs no teacher: yes/no
# questions about objects present and absent, from the boxes, captions and regions (POPE-style).
REGISTRY: dict[tuple[str, str], Task] = {(t.mode, t.name): t for t in (
    Task("conversation", "text", "captions"),
    Task("detail_description", "text", "full", reply="description"),
    Task("complex_reasoning", "text", "full", single_turn_rows=True),
    Task("referring_qa", "text", "regions", default=False, referring=True, single_turn_rows=True),
    Task("presence", "text", "full", default=False, teacher=False),
    Task("dialogue", "vlm", cap_pairs=True),
    Task("complex_reasoning", "vlm"),
    Task("captioning", "vlm", reply="description"),
)}
MODES = ("text", "vlm")


def task_names(mode: str) -> list[str]:
    """Every task of a mode, in registry order."""
    return [t.name for t in REGISTRY.values() if t.mode == mode]


def all_task_names() -> list[str]:
    """Every task name of any mode."""
    return sorted({t.name for t in REGISTRY.values()})


def resolve(names: list[str] | None, mode: str) -> list[Task]:
    """The tasks to run: the given names (checked against the mode) or the mode's defaults."""
    if names is None:
        return [t for t in REGISTRY.values() if t.mode == mode and t.default]
    wrong = [n for n in names if (mode, n) not in REGISTRY]
    if wrong:
        raise UserError(f"task(s) {', '.join(wrong)} are not {mode}-mode tasks; "
                        f"choose from {', '.join(task_names(mode))}")
    return [REGISTRY[(mode, n)] for n in names]
