"""Object mentions in English and Russian text: words matched against the lexicon (longest phrase first),
with the number said right before them and the negation they stand under.

A count is a number word or digits at most three words before the object, nothing but modifiers between
("two small brown dogs", "две большие собаки"); a number after a vague word ("more than two", "около
пяти") or in a range ("two or three", "2-3") is no count. One without "only" ("one dog", "одна собака")
and any number said with a kind of the category (man, щенок) are lower bounds. A negation ("no", "not",
"n't", "без", "нет") holds to the end of the sentence or a contrast word ("but", "но", "а"); past a comma
only for a listed object right after it ("no dogs, cats or birds"). A negation after the object ("кошки на
фото нет", "the cat is missing") negates the objects named before it in the same clause.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .vocab import Entry, Lexicon, Mention, lexicon

# a word (or number), a full stop, or a comma-like mark; other characters (spaces, quotes, hyphens) join words
TOKEN = re.compile(r"(\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)*)|([.!?;…\n])|[,:()—]")
LIST_REACH = 3  # words after a comma within which a listed object stays under the negation
MODIFIERS = 3   # words allowed between a number and its object
MAX_DIGITS = 100

# a token: (word, start, end, gap), gap = what separates it from the word before: 0 nothing, 1 a comma, 2 a full stop
Token = tuple[str, int, int, int]


@dataclass(frozen=True)
class Rules:
    """The count and negation words of one language, as sets."""

    numbers: dict[str, int]
    only: frozenset[str]
    vague_before: frozenset[str]
    ranges: frozenset[str]
    stops: frozenset[str]
    negations: frozenset[str]
    after: frozenset[str]
    exceptions: frozenset[str]
    breaks: frozenset[str]
    special: frozenset[str]  # every word the scan must stop at (phrase starts, negations, contrast words)

    def number(self, word: str) -> int | None:
        """The value of a number word or digits; -1 for digits out of range; None for other words."""
        if word in self.numbers:
            return self.numbers[word]
        if word.isdigit():
            value = int(word)
            return value if 1 <= value <= MAX_DIGITS else -1
        return None


@functools.cache
def rules(lang: str) -> Rules:
    """The count and negation rules of `lang` (en or ru), from its table."""
    lex = lexicon(lang)
    negations, after, breaks = lex.set_of("negations"), lex.set_of("negations_after"), lex.set_of("scope_breaks")
    return Rules(dict(lex.table["numbers"]), lex.set_of("only"), lex.set_of("vague_before"),
                 lex.set_of("range_words"), lex.set_of("count_stops"), negations, after,
                 lex.set_of("negation_exceptions"), breaks, frozenset(lex.words) | negations | after | breaks)


def tokenize(norm: str) -> list[Token]:
    """The words of a normalized text (possessive 's dropped) with what separates each from the one before."""
    tokens: list[Token] = []
    gap = 0
    for match in TOKEN.finditer(norm):
        word = match.group(1)
        if word is None:
            gap = 2 if match.group(2) else gap or 1
            continue
        if word.endswith("'s"):
            word = word[:-2]
        tokens.append((word, match.start(), match.end(), gap))
        gap = 0
    return tokens


def _is_negation(tokens: list[Token], i: int, rule: Rules) -> bool:
    word = tokens[i][0]
    if word not in rule.negations and not word.endswith("n't"):
        return False
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    return not (following and following[3] == 0 and following[0] in rule.exceptions)


def _count(tokens: list[Token], s: int, floor: int, entry: Entry, rule: Rules) -> tuple[int, bool, int] | None:
    """(number, exact, where it starts) said before the object at token `s`; None when there is none."""
    j, between = s - 1, 0
    while j >= floor and tokens[j + 1][3] == 0:
        word = tokens[j][0]
        value = rule.number(word)
        if value is not None:
            return _qualified(tokens, j, floor, value, entry, rule)
        if word in rule.stops or word in rule.negations or between == MODIFIERS:
            return None
        between, j = between + 1, j - 1
    return None


def _qualified(tokens: list[Token], j: int, floor: int, value: int, entry: Entry,
               rule: Rules) -> tuple[int, bool, int] | None:
    """A number at token `j` read with the words before it: vague (None: "about two", "2 3", "two or three",
    "up to two"), "only" (exact) or plain."""
    if value < 1:
        return None
    only, start = False, tokens[j][1]
    if j - 1 >= floor and tokens[j][3] == 0:
        before = tokens[j - 1][0]
        if before in rule.vague_before or rule.number(before) is not None:
            return None
        if before in rule.ranges and j - 2 >= floor and tokens[j - 1][3] == 0 and (
                rule.number(tokens[j - 2][0]) is not None or tokens[j - 2][0] in rule.vague_before):
            return None
        if before in rule.only:
            only, start = True, tokens[j - 1][1]
    return value, (only or value >= 2) and not entry.partial, start


def _phrase(lex: Lexicon, tokens: list[Token], i: int) -> tuple[int, Entry] | None:
    """The longest phrase starting at word `i` whose words are not split by punctuation."""
    for rest, entry in lex.words.get(tokens[i][0], ()):
        if not rest:
            return 1, entry
        end = i + 1 + len(rest)
        if end <= len(tokens) and all(tokens[i + 1 + k][0] in forms and tokens[i + 1 + k][3] == 0
                                      for k, forms in enumerate(rest)):
            return end - i, entry
    return None


def _mention(tokens: list[Token], i: int, length: int, entry: Entry, floor: int, negated: bool, labels: bool,
             rule: Rules) -> Mention:
    mention = Mention(entry, tokens[i][1], tokens[i + length - 1][2], tokens[i][1])
    if not labels:
        mention.negated = negated
        counted = _count(tokens, i, floor, entry, rule)
        if counted:
            mention.count, mention.exact, mention.span = counted
    return mention


def scan_words(norm: str, lang: str, labels: bool = False) -> list[Mention]:
    """The object mentions of a normalized en/ru text. `labels`: the text is an annotation's object name
    (no negation, no counts, no context needed)."""
    lex, rule = lexicon(lang), rules(lang)
    tokens = tokenize(norm)
    mentions: list[Mention] = []
    negated, listed, reach, floor, i = False, False, None, 0, 0
    clause: list[Mention] = []  # the mentions since the last comma, full stop or contrast word
    while i < len(tokens):
        word, _, _, gap = tokens[i]
        if gap:  # past a comma a negation goes on only through a list it began ("no dogs, cats"; not "No, a dog")
            clause = []
            negated, reach = (negated, LIST_REACH) if gap == 1 and negated and listed else (False, None)
        if word not in rule.special and "'" not in word:  # the common case: a word that is nothing to the audit
            if reach is not None:
                reach -= 1
                negated, reach = (False, None) if reach <= 0 else (negated, reach)
            i += 1
            continue
        if word in rule.breaks:
            clause, negated, reach = [], False, None
        if not labels and word in rule.after:
            for mention in clause:
                mention.negated = True
        if not labels and _is_negation(tokens, i, rule):
            negated, listed, reach, i = True, False, None, i + 1
            continue
        found = _phrase(lex, tokens, i)
        if found is None:
            i += 1
            continue
        length, entry = found
        if entry.categories and (labels or not entry.context or any(c in norm for c in entry.context)):
            mention = _mention(tokens, i, length, entry, floor, negated, labels, rule)
            mentions.append(mention)
            clause.append(mention)
            listed = listed or negated
        reach, floor, i = None, i + length, i + length
    return mentions
