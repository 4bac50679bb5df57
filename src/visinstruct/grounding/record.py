"""One LLaVA record judged against the annotations of its image: the join, the language, the verdict, and the
reject reason. `audit` and filter's `grounding` stage both go through here, so they decide alike."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .annotations import Annotations
from .judge import KINDS, Checks, Verdict, gpt_turns, judge
from .scan import detect_lang
from .vocab import LANGS


@dataclass
class Judged:
    """A record's language and verdict; `verdict` is None when it joined no annotations (`note` says why)."""

    lang: str
    verdict: Verdict | None
    note: str = ""


def record_lang(record: dict[str, Any], turns: list[tuple[int, str]]) -> str:
    """The record's `lang` when it is en, ru or zh; else the script most of its answers' letters are in."""
    lang = record.get("lang")
    return lang if lang in LANGS else detect_lang(" ".join(text for _, text in turns))


def judge_record(record: Any, where: str, annotations: Annotations, checks: Checks, prefix: str = "") -> Judged:
    """Join the record to its image's facts and check every answer (a record of another shape: UserError)."""
    turns = gpt_turns(record, where)
    lang = record_lang(record, turns)
    facts, note = annotations.find(record.get("image"), prefix)
    if facts is None:
        return Judged(lang, None, note)
    return Judged(lang, judge(turns, facts, lang, checks))


def counted(problems: list[dict[str, Any]], kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """The problems of the kinds that count towards a rejection."""
    return problems if set(kinds) >= set(KINDS) else [p for p in problems if p["kind"] in kinds]


def reject_reason(problems: list[dict[str, Any]], limit: int) -> str:
    """`object+count: 3 problems (count 1, object 2), more than 0; first: turn 1 'cat': no 'cat' in the
    annotations`. The code before the colon names the kinds found, so reports count rejects by kind."""
    kinds = Counter(p["kind"] for p in problems)
    code = "+".join(kind for kind in KINDS if kind in kinds)
    listed = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    first = problems[0]
    return (f"{code}: {len(problems)} problem{'s' if len(problems) != 1 else ''} ({listed}), more than {limit}; "
            f"first: turn {first['turn']} '{first['text']}': {first['detail']}")
