"""One record's answers checked against its image's facts: the record's `audit` object and the counts that
CHAIR is made of.

Per answer (gpt turn): each object named and not negated is one mention per category set (CHAIR counts an
object once per response, however often it is named); a mention whose categories are all absent from the
annotations is hallucinated (an `object` problem). A definite number said with an annotated category that
the annotated count contradicts (see `count_contradiction`) is a `count` problem; a box that overlaps no
annotated box by `iou` in the record's frame is a `box` problem.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserError
from .annotations import Facts
from .boxes import AnswerBox, annotated_in, answer_boxes, frame_of, unmatched_detail
from .scan import scan
from .vocab import Mention, normalize

KINDS = ("object", "count", "box")


@dataclass(frozen=True)
class Checks:
    """How boxes are compared: the frame option (auto, native, llava15) and the IoU a match needs."""

    box_frame: str = "auto"
    iou: float = 0.5


@dataclass
class Verdict:
    """What the audit found in one record, and its share of the file's counts."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    responses: int = 0
    hallucinated_responses: int = 0
    mentions: int = 0
    hallucinated: int = 0
    boxes: Counter[str] = field(default_factory=Counter)

    @property
    def audit(self) -> dict[str, Any]:
        return {"ok": not self.problems, "problems": self.problems}


def gpt_turns(record: Any, where: str) -> list[tuple[int, str]]:
    """(index in `conversations`, text) of every gpt turn; a record of another shape is a UserError."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object")
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise UserError(f"{where} (id {record.get('id')}): no 'conversations' list (audit reads LLaVA records; "
                        "`visinstruct convert` turns other layouts into them)")
    found = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise UserError(f"{where} (id {record.get('id')}): conversations[{i}] is not a turn with a string "
                            "'value'")
        if turn.get("from") == "gpt":
            found.append((i, turn["value"]))
    return found


def _problem(kind: str, turn: int, text: str, detail: str) -> dict[str, Any]:
    return {"kind": kind, "turn": turn, "text": text, "detail": detail}


def _present(mention: Mention, text: str, facts: Facts) -> bool:
    return any(c in facts.present for c in mention.entry.categories) or (
        bool(facts.names) and normalize(text[mention.start:mention.end]) in facts.names)


def _objects(turn: int, text: str, mentions: list[Mention], facts: Facts, verdict: Verdict) -> None:
    """Mentions and hallucinations of one answer, one per category set."""
    present: dict[tuple[str, ...], bool] = {}
    first: dict[tuple[str, ...], Mention] = {}
    for mention in mentions:
        if not mention.negated:
            key = mention.entry.categories
            present[key] = present.get(key, False) or _present(mention, text, facts)
            first.setdefault(key, mention)
    absent = [key for key, found in present.items() if not found]
    for key in absent:
        names = " or ".join(f"'{c}'" for c in key)
        verdict.problems.append(_problem("object", turn, text[first[key].start:first[key].end],
                                         f"no {names} in the annotations"))
    verdict.responses += 1
    verdict.mentions += len(present)
    verdict.hallucinated += len(absent)
    verdict.hallucinated_responses += bool(absent)


def count_contradiction(said: int, exact: bool, counted: int, crowds: int, lower_only: bool, alone: bool) -> bool:
    """True when a number said contradicts the annotations. More than annotated: always (unless a crowd region
    holds an unknown number). Fewer: only for an exact number (not "one dog", "two men", Visual Genome), below
    count + crowd regions, and only when the answer names the category nowhere else (`alone`): "two smaller
    pizzas beside a large pizza" describes part of them."""
    if said > counted and not crowds:
        return True
    return exact and not lower_only and alone and said < counted + crowds


def _counts(turn: int, text: str, mentions: list[Mention], facts: Facts, verdict: Verdict) -> None:
    if all(m.count is None for m in mentions):
        return
    named = Counter(m.entry.categories for m in mentions if not m.negated)
    for mention in mentions:
        cats = mention.entry.categories
        if mention.negated or mention.count is None or len(cats) != 1:
            continue
        cat = cats[0]
        counted, crowds = facts.counts.get(cat, 0), facts.crowd.get(cat, 0)
        if not counted and not crowds:
            continue  # no box of it: absent (an object problem) or named only in a caption
        if count_contradiction(mention.count, mention.exact, counted, crowds, facts.lower_only, named[cats] == 1):
            have = f"{counted} '{cat}'" + (f" and {crowds} crowd region(s)" if crowds else "")
            said = mention.count if mention.exact and not facts.lower_only else f"at least {mention.count}"
            verdict.problems.append(_problem("count", turn, text[mention.span:mention.end],
                                             f"says {said}, the annotations have {have}"))


def _boxes(turn: int, boxes: list[AnswerBox], annotated: list | None, checks: Checks, verdict: Verdict) -> None:
    for box in boxes:
        if annotated is None:
            verdict.boxes["unchecked"] += 1
            continue
        verdict.boxes["checked"] += 1
        detail = unmatched_detail(box, annotated, checks.iou)
        if detail:
            verdict.boxes["unmatched"] += 1
            verdict.problems.append(_problem("box", turn, f"{box.name} {box.text}".strip(), detail))


def judge(turns: list[tuple[int, str]], facts: Facts, lang: str, checks: Checks) -> Verdict:
    """Check every answer of a record against the facts of its image."""
    verdict = Verdict()
    frame = frame_of([text for _, text in turns], checks.box_frame)
    annotated, framed = None, False
    for turn, text in turns:
        mentions = scan(text, lang)
        _objects(turn, text, mentions, facts, verdict)
        _counts(turn, text, mentions, facts, verdict)
        boxes = answer_boxes(text) if "[" in text else []
        if boxes and not framed:  # the annotated boxes in the record's frame, once, when it has boxes at all
            annotated, framed = annotated_in(facts, frame), True
            verdict.boxes[f"records_{frame}"] += 1
        _boxes(turn, boxes, annotated, checks, verdict)
    return verdict
