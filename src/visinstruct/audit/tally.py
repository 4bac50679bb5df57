"""The audit's counts over the whole file, by task and by language, with CHAIR.

CHAIR_i = hallucinated mentions / all mentions of objects in the tables; CHAIR_s = answers with at least one
hallucinated mention / all answers. Only records joined to annotations count; a ratio with nothing under it
is null.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..grounding.judge import KINDS, Verdict


def ratio(part: int, whole: int) -> float | None:
    """part / whole, or None when whole is 0."""
    return part / whole if whole else None


@dataclass
class Group:
    """Counts of one slice of the records (all of them, one task, one language)."""

    records: int = 0
    no_annotations: int = 0
    ok: int = 0
    flagged: int = 0
    responses: int = 0
    hallucinated_responses: int = 0
    mentions: int = 0
    hallucinated_mentions: int = 0
    problems: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict | None) -> None:
        self.records += 1
        if verdict is None:
            self.no_annotations += 1
            return
        self.ok += not verdict.problems
        self.flagged += bool(verdict.problems)
        self.responses += verdict.responses
        self.hallucinated_responses += verdict.hallucinated_responses
        self.mentions += verdict.mentions
        self.hallucinated_mentions += verdict.hallucinated
        self.problems.update(p["kind"] for p in verdict.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "audited": self.records - self.no_annotations,
                "no_annotations": self.no_annotations, "ok": self.ok, "flagged": self.flagged,
                "chair_i": ratio(self.hallucinated_mentions, self.mentions),
                "chair_s": ratio(self.hallucinated_responses, self.responses),
                "mentions": self.mentions, "hallucinated_mentions": self.hallucinated_mentions,
                "responses": self.responses, "hallucinated_responses": self.hallucinated_responses,
                "problems": {kind: self.problems[kind] for kind in KINDS}}


@dataclass
class Tally:
    """Every record's verdict, summed overall, by task and by language; how records were joined; boxes."""

    total: Group = field(default_factory=Group)
    by_task: dict[str, Group] = field(default_factory=dict)
    by_lang: dict[str, Group] = field(default_factory=dict)
    join: Counter[str] = field(default_factory=Counter)
    boxes: Counter[str] = field(default_factory=Counter)

    def add(self, task: str, lang: str, verdict: Verdict | None, note: str = "") -> None:
        """Count one record (`verdict` None: not joined, `note` says why)."""
        for group in (self.total, self.by_task.setdefault(task, Group()), self.by_lang.setdefault(lang, Group())):
            group.add(verdict)
        self.join[note or "matched"] += 1
        if verdict is not None:
            self.boxes.update(verdict.boxes)

    def as_dict(self) -> dict[str, Any]:
        total = self.total.as_dict()
        return {**{k: total[k] for k in ("chair_i", "chair_s", "mentions", "hallucinated_mentions", "responses",
                                         "hallucinated_responses")},
                "records": {k: total[k] for k in ("records", "audited", "no_annotations", "ok", "flagged")},
                "problems": total["problems"],
                "join": {k: self.join[k] for k in ("matched", "no annotations", "no image", "several images")},
                "boxes": {k: self.boxes[k] for k in ("checked", "unmatched", "unchecked", "records_native",
                                                     "records_llava15")},
                "by_task": {k: g.as_dict() for k, g in sorted(self.by_task.items())},
                "by_lang": {k: g.as_dict() for k, g in sorted(self.by_lang.items())}}
