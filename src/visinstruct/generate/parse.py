"""Parse teacher replies into conversations of question/answer pairs.

The labels live in one table, `LABELS`, one `Labels` entry per language:

    question      labels that open a human turn  (en Question, Q, User, Human; ru Вопрос, В, Пользователь,
                  Человек; zh 问题, 问, 提问, 用户, 人类)
    answer        labels that open a gpt turn    (en Answer, A, Assistant, GPT, AI; ru Ответ, О, Ассистент,
                  Помощник; zh 答案, 回答, 答, 助手)
    topic         a line that opens a new conversation, SVIT style (Topic; Тема; 主题, 话题)
    conversation  a numbered conversation header that opens one (Conversation 2; Диалог 2; 对话2)

A reply may use the labels of any language (teachers often keep English labels in ru/zh replies);
matching ignores case. A turn opens on a line that holds, after optional markdown (`#`, `>`, `-`, `*`)
and list numbering (`1.`, `(2)`):
- a label, an optional number (`Question 2`, `Вопрос 1`; a one-letter label takes it attached: `Q1`, `В1`),
  optional bold (`**问题**：`, `**Answer:**`) and an ASCII or full-width colon (`:` / `：`); the text
  follows on the same line and/or the next lines;
- or a label alone on a markdown header line (`### Answer`) or in bold (`**Question 2**`), colon
  optional; the text is on the next lines.
A one-letter label (Q, A, В, О, 问, 答) counts only when the colon follows it with no space (`Q:`, `Q1:`,
`**В**:`), so lines such as "В парке ..." or "A man: ..." stay text. Lines of `===`, `---`, `***` or `___`
are separators and dropped; text before the first label is ignored; a question with no answer after it
is dropped.

A topic line (`Topic: a picnic`, `**主题：**野餐`, `Тема 2: пикник`, `Conversation 1 (Topic: a picnic)`,
or `### Topic` with the topic on the next line) or a conversation header (`### Conversation 2`) closes
the current conversation and opens the next one: SVIT asks for several conversations per image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Labels:
    """The reply labels of one language (see the module docstring)."""

    question: tuple[str, ...]
    answer: tuple[str, ...]
    topic: tuple[str, ...]
    conversation: tuple[str, ...]


LABELS: dict[str, Labels] = {
    "en": Labels(question=("Question", "Q", "User", "Human"), answer=("Answer", "A", "Assistant", "GPT", "AI"),
                 topic=("Topic",), conversation=("Conversation", "Dialogue", "Dialog")),
    "ru": Labels(question=("Вопрос", "В", "Пользователь", "Человек"), answer=("Ответ", "О", "Ассистент", "Помощник"),
                 topic=("Тема",), conversation=("Диалог", "Разговор", "Беседа")),
    "zh": Labels(question=("问题", "问", "提问", "用户", "人类"), answer=("答案", "回答", "答", "助手"),
                 topic=("主题", "话题"), conversation=("对话", "会话")),
}
ROLES: dict[str, str] = {label.lower(): role for labels in LABELS.values()
                         for role, names in (("q", labels.question), ("a", labels.answer)) for label in names}


def _alternation(names: list[str]) -> str:
    return "|".join(sorted(map(re.escape, names), key=len, reverse=True))


_WORDS = _alternation([name for name in ROLES if len(name) > 1])
_LETTERS = _alternation([name for name in ROLES if len(name) == 1])
_TOPICS = _alternation([name for labels in LABELS.values() for name in labels.topic])
_CONVERSATIONS = _alternation([name for labels in LABELS.values() for name in labels.conversation])
_B = r"(?:\*\*|__)?"  # optional markdown bold
_LEAD = r"^[#>\-*\s]*(?:\(?\d+[.)]\s*)?"  # markdown marks and list numbering before a label
_NUMBERED = rf"(?:(?P<word>{_WORDS})\s*\d*\s*|(?P<letter>{_LETTERS})\d*)"
_LABEL_LINE = re.compile(rf"{_LEAD}{_B}\s*{_NUMBERED}{_B}\s*[:：]\s*{_B}\s*(?P<rest>.*)$", re.IGNORECASE)
_HEADER_LINE = re.compile(rf"^\s*(?P<hash>#{{1,6}}\s*)?(?:\(?\d+[.)]\s*)?(?P<b1>\*\*|__)?\s*{_NUMBERED}\s*"
                          rf"[:：]?\s*(?P<b2>\*\*|__)?\s*[:：]?\s*$", re.IGNORECASE)
_TOPIC_LINE = re.compile(rf"{_LEAD}{_B}\s*(?:(?:{_CONVERSATIONS})\s*\d*\s*{_B}\s*[:：.\-–—(（]*\s*{_B}\s*)?"
                         rf"(?:{_TOPICS})\s*\d*\s*{_B}\s*(?:[:：]\s*(?P<topic>.*))?$", re.IGNORECASE)
_CONVERSATION_LINE = re.compile(rf"{_LEAD}{_B}\s*(?:{_CONVERSATIONS})\s*\d+\s*{_B}\s*"
                                rf"(?:[:：.\-–—(（]\s*(?P<topic>.*))?$", re.IGNORECASE)
_MAYBE = re.compile(rf"{_LEAD}{_B}\s*(?:{_WORDS}|{_LETTERS}|{_TOPICS}|{_CONVERSATIONS})", re.IGNORECASE)  # fast reject
_SEPARATOR = re.compile(r"^\s*(?:={3,}|-{3,}|\*{3,}|_{3,})\s*$")
_SENTENCE_END = re.compile(r"[.!?…][\"'»”)\]]*(?=\s|$)|[。！？][”」』）]*")


class ReplyParseError(ValueError):
    """The reply holds no usable question/answer pair; the message says why."""


@dataclass
class Segment:
    """One labelled block of a reply: a turn (role q or a), a topic line (t) or a conversation header (c)."""

    role: str
    text: str


@dataclass
class Conversation:
    """One conversation of a reply: its topic (None when the reply names none) and its pairs."""

    topic: str | None
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _clean(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    return re.sub(r"^(?:\*\*|__)\s*|\s*(?:\*\*|__)$", "", text).strip()


def _clean_topic(text: str) -> str:
    """A topic without bold marks, and without the `)` left over from `Conversation 1 (Topic: ...)`."""
    text = text.strip().strip("*_").strip()
    if text.endswith((")", "）")) and text.count("(") + text.count("（") < text.count(")") + text.count("）"):
        text = text[:-1].rstrip().strip("*_").strip()
    return text


def _role(match: re.Match[str]) -> str:
    return ROLES[(match["word"] or match["letter"]).lower()]


def _opening(line: str) -> Segment | None:
    """The segment a line opens, with the text that follows its label on the same line; None: plain text."""
    if not _MAYBE.match(line):
        return None
    if match := _LABEL_LINE.match(line):
        return Segment(_role(match), match["rest"])
    if match := _TOPIC_LINE.match(line):
        return Segment("t", _clean_topic(match["topic"] or ""))
    if match := _CONVERSATION_LINE.match(line):
        return Segment("c", _clean_topic(match["topic"] or ""))
    match = _HEADER_LINE.match(line)
    if match and (match["hash"] or (match["b1"] and match["b2"])):
        return Segment(_role(match), "")
    return None


def segments(reply: str) -> list[Segment]:
    """Split a reply into labelled blocks; text before the first label is ignored.

    A topic line with no text after its label takes the next line of text as its topic.
    """
    found: list[Segment] = []
    turn: Segment | None = None
    lines: list[str] = []
    for line in reply.splitlines():
        if _SEPARATOR.match(line):
            continue
        opened = _opening(line)
        if opened is None:
            if turn:
                lines.append(line)
            elif found and found[-1].role == "t" and not found[-1].text and line.strip():
                found[-1] = Segment("t", _clean_topic(line))
            continue
        if turn:
            found.append(Segment(turn.role, _clean(lines)))
        if opened.role in ("t", "c"):
            found.append(opened)
            turn, lines = None, []
        else:
            turn, lines = opened, [opened.text]
    if turn:
        found.append(Segment(turn.role, _clean(lines)))
    return found


def _cut_last_answer(conversation: Conversation) -> None:
    """Cut the last answer back to its last full sentence, or drop the pair when it has none."""
    question, answer = conversation.pairs.pop()
    if ends := list(_SENTENCE_END.finditer(answer)):
        conversation.pairs.append((question, answer[: ends[-1].end()].strip()))


def parse_conversations(reply: str, truncated: bool = False) -> list[Conversation]:
    """The reply's conversations, one per topic (one in all when it names no topic), each with its pairs.

    A question with no answer after it is dropped; when the teacher stopped at its token limit, the
    last answer is cut back to its last full sentence (or dropped with its question when it has none).
    Conversations left with no pair are dropped.
    """
    segs = segments(reply)
    if not any(seg.role in ("q", "a") for seg in segs):
        raise ReplyParseError("no question/answer labels found in the reply")
    conversations = [Conversation(None)]
    question: str | None = None
    last_pair_in: Conversation | None = None  # where the last segment made a pair
    for seg in segs:
        last_pair_in = None
        if seg.role in ("t", "c"):
            conversations.append(Conversation(seg.text or None))
            question = None
        elif seg.role == "q":
            question = seg.text
        elif question and seg.text:
            conversations[-1].pairs.append((question, seg.text))
            question, last_pair_in = None, conversations[-1]
    if truncated and last_pair_in is not None:
        _cut_last_answer(last_pair_in)
    kept = [c for c in conversations if c.pairs]
    if not kept:
        raise ReplyParseError("no complete question/answer pair in the reply")
    return kept


def parse_pairs(reply: str, truncated: bool = False) -> list[tuple[str, str]]:
    """Question/answer pairs of a multi-turn reply, all conversations in a row (see parse_conversations)."""
    return [pair for conversation in parse_conversations(reply, truncated) for pair in conversation.pairs]


def parse_description(reply: str, truncated: bool = False) -> str:
    """The whole reply is the answer (a leading answer label dropped); a cut reply ends at its last full sentence."""
    text = reply.strip()
    head, _, tail = text.partition("\n")
    opened = _opening(head)
    if opened is not None and opened.role == "a":
        text = (opened.text + "\n" + tail).strip()
    if truncated:
        ends = list(_SENTENCE_END.finditer(text))
        if not ends:
            raise ReplyParseError("reply cut at the token limit before its first sentence ended")
        text = text[: ends[-1].end()].strip()
    if not text:
        raise ReplyParseError("empty reply")
    return text
