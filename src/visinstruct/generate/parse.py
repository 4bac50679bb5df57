"""Parse teacher replies into question/answer pairs.

Accepted, in English, Russian and Chinese: LLaVA `Question:` / `===` / `Answer:` blocks,
`User:`/`Assistant:` (or `GPT:`), `Вопрос:`/`Ответ:`, `Пользователь:`/`Ассистент:`, `问题：`/`回答：`,
`用户：`/`助手：`; with ASCII or full-width colons, markdown bold around labels, numbering (`1.`, `Q1:`),
a leading `Topic:` line, blank lines, and a trailing incomplete block (dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QUESTION_LABELS = ("question", "q", "user", "human", "вопрос", "пользователь", "问题", "问", "用户")
ANSWER_LABELS = ("answer", "a", "assistant", "gpt", "ответ", "ассистент", "回答", "答", "助手")
_LABEL_ALT = "|".join(sorted(map(re.escape, QUESTION_LABELS + ANSWER_LABELS), key=len, reverse=True))
_BOLD = r"(?:\*\*|__)?"
_LABEL_LINE = re.compile(
    rf"^[#>\-*\s]*(?:\(?\d+[.)]\s*)?{_BOLD}\s*(?P<label>{_LABEL_ALT})\s*\d*\s*{_BOLD}\s*[:：]\s*{_BOLD}\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^\s*(?:={3,}|-{3,})\s*$")
_SENTENCE_END = re.compile(r"[.!?…][\"'»”)\]]*(?=\s|$)|[。！？][”」』）]*")


class ReplyParseError(ValueError):
    """The reply holds no usable question/answer pair; the message says why."""


@dataclass
class Segment:
    """One labelled block of a reply."""

    role: str  # "q" or "a"
    text: str


def _clean(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    return re.sub(r"^(?:\*\*|__)\s*|\s*(?:\*\*|__)$", "", text).strip()


def segments(reply: str) -> list[Segment]:
    """Split a reply into labelled blocks; text before the first label is ignored."""
    found: list[Segment] = []
    role, lines = None, []
    for line in reply.splitlines():
        if _SEPARATOR.match(line):
            continue
        match = _LABEL_LINE.match(line)
        if match:
            if role:
                found.append(Segment(role, _clean(lines)))
            role = "q" if match["label"].lower() in QUESTION_LABELS else "a"
            lines = [match["rest"]]
        elif role:
            lines.append(line)
        # anything before the first label (a `Topic:` line, a preamble) is not part of a turn
    if role:
        found.append(Segment(role, _clean(lines)))
    return found


def parse_pairs(reply: str, truncated: bool = False) -> list[tuple[str, str]]:
    """Question/answer pairs of a multi-turn reply.

    A question with no answer after it (the trailing incomplete block) is dropped; when the
    teacher stopped at its token limit, the last answer is cut back to its last full sentence
    (or dropped with its question when it has none).
    """
    segs = segments(reply)
    if not segs:
        raise ReplyParseError("no question/answer labels found in the reply")
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for seg in segs:
        if seg.role == "q":
            question = seg.text
        elif question and seg.text:
            pairs.append((question, seg.text))
            question = None
    if truncated and pairs and segs[-1].role == "a":
        question, answer = pairs.pop()
        if ends := list(_SENTENCE_END.finditer(answer)):
            pairs.append((question, answer[: ends[-1].end()].strip()))
    if not pairs:
        raise ReplyParseError("no complete question/answer pair in the reply")
    return pairs


def parse_description(reply: str, truncated: bool = False) -> str:
    """The whole reply is the answer; a cut reply is trimmed to its last full sentence."""
    text = reply.strip()
    match = _LABEL_LINE.match(text.split("\n", 1)[0])
    if match and match["label"].lower() in ANSWER_LABELS:
        text = (match["rest"] + ("\n" + text.split("\n", 1)[1] if "\n" in text else "")).strip()
    if truncated:
        ends = list(_SENTENCE_END.finditer(text))
        if not ends:
            raise ReplyParseError("reply cut at the token limit before its first sentence ended")
        text = text[: ends[-1].end()].strip()
    if not text:
        raise ReplyParseError("empty reply")
    return text
