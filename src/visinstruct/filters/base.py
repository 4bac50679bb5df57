"""The filter protocol: `check(record)` returns None (keep), a Reject, or a Rewrite."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

# The script of each supported language, and any letter at all (for script shares).
SCRIPTS = {"en": re.compile(r"[A-Za-z]"), "ru": re.compile(r"[А-Яа-яЁё]"), "zh": re.compile(r"[\u4e00-\u9fff]")}
LETTER = re.compile(r"[^\W\d_]")


def script_share(sample: str, lang: str) -> float:
    """The share of `sample`'s letters written in `lang`'s script (1.0 when it has no letters)."""
    if lang == "en" and sample.isascii():
        return 1.0
    letters = len(LETTER.findall(sample))
    return len(SCRIPTS[lang].findall(sample)) / letters if letters else 1.0


@dataclass
class Reject:
    """Drop the record; `reason` starts with a short code (`code: details`)."""

    reason: str

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass
class Rewrite:
    """Keep a changed record (e.g. turns truncated); `note` says what changed."""

    record: dict[str, Any]
    note: dict[str, Any] = field(default_factory=dict)


Verdict = Reject | Rewrite | None


class Filter(Protocol):
    """One stage of the pipeline."""

    name: str

    def check(self, record: dict[str, Any]) -> Verdict:
        """Keep (None), rewrite or reject one record."""


def gpt_texts(record: dict[str, Any]) -> list[str]:
    """The values of the record's gpt turns."""
    return [t["value"] for t in record["conversations"] if t.get("from") == "gpt"]
