"""Object mentions in Chinese text: the longest listed word at each place, left to right, with the count
before it and the negation it stands under.

A count is a numeral (digits, 一…十, 两, 十二, 二十) followed by a measure word (两只狗, 三个人, 一辆车), or
by nothing (两人); up to six characters of modifiers may stand between (两只白色的狗). Vague forms give no
count: a vague measure word (一些, 一群, 一对), a vague numeral (几, 两三, 十多), a vague word before the
numeral (大约, 至少), an ordinal (第二只). 一 without 只有/仅 and any number said with a kind of the category
(男人, 小狗) are lower bounds. A negation (没有, 不是, 无…) holds to the end of the sentence or a contrast
word (但, 而是); past a comma only for a listed object right after it (没有狗、猫).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .vocab import Entry, Lexicon, Mention, lexicon

SENTENCE = frozenset("。！？；!?;\n")
CLAUSE = frozenset("，、,：:（）()")
JOINERS = frozenset("和与及或跟同、")
NUMERAL = re.compile(r"\d+|[一二两三四五六七八九十]+")
LIST_REACH = 3   # characters after a comma within which a listed object stays under the negation
LOOK_BACK = 12   # characters before an object searched for its numeral
MODIFIERS = 6    # characters allowed between the measure word and the object
MAX_DIGITS = 100


@dataclass(frozen=True)
class Rules:
    """The count and negation words of Chinese, longest first where prefixes matter."""

    numerals: dict[str, int]
    measures: tuple[str, ...]
    vague_measures: tuple[str, ...]
    vague_after: frozenset[str]
    ordinal: tuple[str, ...]
    only: tuple[str, ...]
    vague_before: tuple[str, ...]
    negations: tuple[str, ...]
    exceptions: tuple[str, ...]
    breaks: tuple[str, ...]
    cues: frozenset[str]  # first characters of the negation and contrast words


def _longest_first(words: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(words, key=lambda w: (-len(w), w)))


@functools.cache
def rules() -> Rules:
    """Chinese count and negation rules, from the zh table."""
    lex = lexicon("zh")
    negations, breaks = lex.set_of("negations"), lex.set_of("scope_breaks")
    return Rules(dict(lex.table["numerals"]), _longest_first(lex.set_of("measure_words")),
                 _longest_first(lex.set_of("vague_measure_words")), lex.set_of("vague_after"),
                 _longest_first(lex.set_of("ordinal")), _longest_first(lex.set_of("only")),
                 _longest_first(lex.set_of("vague_before")), _longest_first(negations),
                 _longest_first(lex.set_of("negation_exceptions")), _longest_first(breaks),
                 frozenset(w[0] for w in negations | breaks))


def numeral_value(text: str, numerals: dict[str, int]) -> int | None:
    """一…十, 两, 十二, 二十, 二十三 or digits (1–100); None for anything else (两三 is a range)."""
    if text.isdigit():
        return int(text) if 1 <= int(text) <= MAX_DIGITS else None
    values = [numerals.get(c) for c in text]
    if None in values or len(text) > 3:
        return None
    if len(text) == 1:
        return values[0]
    if text[0] == "十" and len(text) == 2:
        return 10 + values[1] if values[1] < 10 else None
    if text[1] == "十" and values[0] < 10 and (len(text) == 2 or values[2] < 10):
        return values[0] * 10 + (values[2] if len(text) == 3 else 0)
    return None


def _starting(text: str, i: int, words: tuple[str, ...]) -> str | None:
    return next((w for w in words if text.startswith(w, i)), None)


def _negation(text: str, i: int, rule: Rules) -> str | None:
    """The negation word at `i`, unless it is part of a listed exception there (没错, 无论, 无线…)."""
    cue = _starting(text, i, rule.negations)
    if cue is None:
        return None
    for exception in rule.exceptions:
        at = exception.find(cue)
        while at >= 0:
            if i - at >= 0 and text.startswith(exception, i - at):
                return None
            at = exception.find(cue, at + 1)
    return cue


def _count(text: str, i: int, low: int, entry: Entry, rule: Rules) -> tuple[int, bool, int] | None:
    """(number, exact, where it starts) said before the object at `i`, looking no further back than `low`."""
    base = max(low, i - LOOK_BACK)
    window = text[base:i]
    number = None
    for number in NUMERAL.finditer(window):  # noqa: B007 - the last numeral is the one that counts
        pass
    if number is None:
        return None
    after = window[number.end():]
    if after[:1] in rule.vague_after or _starting(after, 0, rule.vague_measures):
        return None
    measure = _starting(after, 0, rule.measures)
    rest = after[len(measure):] if measure else after
    if (measure is None and rest) or len(rest) > MODIFIERS or any(c in JOINERS for c in rest):
        return None
    before = window[:number.start()]
    if before.endswith(rule.ordinal) or before.endswith(rule.vague_before):
        return None
    value = numeral_value(number.group(), rule.numerals)
    if value is None:
        return None
    only = next((w for w in rule.only if before.endswith(w)), None)
    start = base + number.start() - (len(only) if only else 0)
    return value, (only is not None or value >= 2) and not entry.partial, start


def _word_at(text: str, i: int, lex: Lexicon) -> tuple[str, Entry] | None:
    for word, entry in lex.chars.get(text[i], ()):
        if text.startswith(word, i):
            return word, entry
    return None


def scan_chars(norm: str, labels: bool = False) -> list[Mention]:
    """The object mentions of a normalized Chinese text (`labels`: an annotation's name, no negation or counts)."""
    lex, rule = lexicon("zh"), rules()
    mentions: list[Mention] = []
    negated, listed, reach, low, i = False, False, None, 0, 0
    while i < len(norm):
        char = norm[i]
        if char in SENTENCE or char in CLAUSE:  # past a comma a negation goes on only through a list it began
            low = i + 1
            negated, reach = (negated, LIST_REACH) if char in CLAUSE and negated and listed else (False, None)
            i += 1
            continue
        if not labels and char in rule.cues:
            cue = _starting(norm, i, rule.breaks) or _negation(norm, i, rule)
            if cue:
                negated, listed, reach, i = cue in rule.negations, False, None, i + len(cue)
                continue
        found = _word_at(norm, i, lex) if char in lex.chars else None
        if found is None:
            if reach is not None:
                reach -= 1
                negated, reach = (False, None) if reach <= 0 else (negated, reach)
            i += 1
            continue
        word, entry = found
        if entry.categories and (labels or not entry.context or any(c in norm for c in entry.context)):
            mention = Mention(entry, i, i + len(word), i)
            if not labels:
                mention.negated = negated
                counted = _count(norm, i, low, entry, rule)
                if counted:
                    mention.count, mention.exact, mention.span = counted
            mentions.append(mention)
            listed = listed or negated
        reach, i = None, i + len(word)
        low = i
    return mentions
