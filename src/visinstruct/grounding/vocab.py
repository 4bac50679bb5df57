"""The synonym tables (`vocab/{en,ru,zh}.json`) as lookups: word forms → the COCO categories they name.

en: each listed word or phrase and its plural (last word: irregular table, else s/es/ies by rule).
ru: `stem+CLASS` expands to the stem with every ending of the class; plain words are taken as written.
zh: the words as written, looked up longest first by their first character.
A form listed under several categories names any of them; not_objects name none (they only hold
characters or words that would otherwise be read as an object).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

LANGS = ("en", "ru", "zh")
WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)*")
FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def normalize(text: str) -> str:
    """Lower case, ё → е, curly apostrophe → straight, full-width digits → ASCII; the length stays the same, so
    positions in the result are positions in `text` (a letter whose lower case is longer is kept as it is)."""
    lower = text.lower()
    if len(lower) != len(text):
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return lower.replace("ё", "е").replace("’", "'").translate(FULL_WIDTH_DIGITS)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a matched form names: categories (any of them; none for a not-object), whether a count said with
    it is only a lower bound (`partial`: man for person), and the strings one of which must be in the same
    answer for it to count (`context`: mouse → computer, keyboard…)."""

    categories: tuple[str, ...]
    partial: bool = False
    context: tuple[str, ...] = ()


@dataclass(slots=True)
class Mention:
    """An object named in a text: where (`start`/`end`; `span` starts at its number when it has one), what it
    names, the number said with it (`count`; `exact` false when the number is only a lower bound) and whether
    it stands under a negation ("there is no dog")."""

    entry: Entry
    start: int
    end: int
    span: int
    count: int | None = None
    exact: bool = False
    negated: bool = False


# a phrase after its first word: one set of allowed forms per following word
Rest = tuple[frozenset[str], ...]


@dataclass
class Lexicon:
    """One language's tables, ready for scanning."""

    lang: str
    words: dict[str, list[tuple[Rest, Entry]]] = field(default_factory=dict)  # en/ru: first word → phrases,
                                                                               # longest first
    chars: dict[str, list[tuple[str, Entry]]] = field(default_factory=dict)  # zh: first char → words, longest first
    plurals: frozenset[str] = frozenset()  # en forms that are plural (a Visual Genome name in plural is a group)
    table: dict[str, Any] = field(default_factory=dict)  # the other keys of the json, as written

    def set_of(self, key: str) -> frozenset[str]:
        """A list key of the table as a set of normalized strings."""
        return frozenset(normalize(w) for w in self.table.get(key, []))

def _plural(word: str, irregular: dict[str, str]) -> str:
    """The plural of an English noun (irregular table first, then the regular endings)."""
    if word in irregular:
        return irregular[word]
    if word.endswith("man") and word != "human":
        return word[:-3] + "men"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _en_forms(phrase: str, table: dict[str, Any]) -> list[frozenset[str]]:
    """Per word of an English phrase its forms: the last word also in the plural (unless uncountable)."""
    words = WORD.findall(normalize(phrase))
    sets = [frozenset([w]) for w in words]
    if phrase not in table.get("uncountable", []) and phrase not in table.get("plural_words", []):
        irregular = table.get("irregular_plurals", {})
        plural = irregular[phrase].split()[-1] if phrase in irregular else _plural(words[-1], irregular)
        sets[-1] = frozenset([words[-1], plural])
    return sets


def _ru_forms(phrase: str, table: dict[str, Any]) -> list[frozenset[str]]:
    """Per word of a Russian phrase its forms: `stem+CLASS` → the stem with each ending of the class."""
    endings = {kind.lower(): forms for kind, forms in table["endings"].items()}  # words are lower-cased first
    sets = []
    for spec in normalize(phrase).replace("-", " ").split():
        stem, _, kind = spec.partition("+")
        sets.append(frozenset(stem + ending for ending in endings[kind]) if kind else frozenset([stem]))
    return sets


def _entries(table: dict[str, Any]) -> dict[str, Entry]:
    """Each listed word or phrase (as written) → its entry, categories merged across the table."""
    names: dict[str, list[str]] = {}
    for category, words in table["categories"].items():
        for word in words:
            names.setdefault(word, []).append(category)
    for word in table.get("not_objects", []):
        names.setdefault(word, [])
    partial, context = set(table.get("partial", [])), table.get("context", {})
    return {word: Entry(tuple(cats), word in partial, tuple(normalize(c) for c in context.get(word, [])))
            for word, cats in names.items()}


def _merge(old: Entry | None, new: Entry) -> Entry:
    """Two entries for the same forms: any of both categories; a lower bound or a context if both have one."""
    if old is None:
        return new
    cats = tuple(dict.fromkeys(old.categories + new.categories))
    context = old.context if old.context and new.context else ()
    return Entry(cats, old.partial or new.partial, context)


def _word_lexicon(lang: str, table: dict[str, Any]) -> Lexicon:
    lexicon = Lexicon(lang, table=table)
    plurals = set()
    merged: dict[str, dict[Rest, Entry]] = {}
    for phrase, entry in _entries(table).items():
        sets = _en_forms(phrase, table) if lang == "en" else _ru_forms(phrase, table)
        if lang == "en":
            last = WORD.findall(normalize(phrase))[-1]
            plurals.update(sets[-1] - {last})
            if phrase in table.get("plural_words", []):
                plurals.add(last)
        rest = tuple(sets[1:])
        for form in sets[0]:
            phrases = merged.setdefault(form, {})
            phrases[rest] = _merge(phrases.get(rest), entry)
    lexicon.words = {form: sorted(phrases.items(), key=lambda item: -len(item[0])) for form, phrases in merged.items()}
    lexicon.plurals = frozenset(plurals)
    return lexicon


def _char_lexicon(table: dict[str, Any]) -> Lexicon:
    lexicon = Lexicon("zh", table=table)
    merged: dict[str, Entry] = {}
    for word, entry in _entries(table).items():
        key = normalize(word)
        merged[key] = _merge(merged.get(key), entry)
    for word, entry in merged.items():
        lexicon.chars.setdefault(word[0], []).append((word, entry))
    for words in lexicon.chars.values():
        words.sort(key=lambda item: -len(item[0]))
    return lexicon


@functools.cache
def lexicon(lang: str) -> Lexicon:
    """The lexicon of `lang` (en, ru or zh), built once per process from the package's json."""
    if lang not in LANGS:
        raise ValueError(f"no vocabulary for language {lang!r}")
    text = resources.files(__package__).joinpath(f"vocab/{lang}.json").read_text("utf-8")
    table = json.loads(text)
    return _char_lexicon(table) if lang == "zh" else _word_lexicon(lang, table)


def categories() -> tuple[str, ...]:
    """COCO's 80 category names, as the tables key them."""
    return tuple(lexicon("en").table["categories"])
