"""One entry point for finding object mentions in a text of any of the three languages."""

from __future__ import annotations

import re

from ..core.boxes import BOX_PATTERN
from .hanzi import scan_chars
from .vocab import Mention, normalize
from .words import scan_words

TAGS = re.compile(r"<st>|<ed>|<image>")
CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
LATIN = re.compile(r"[A-Za-z]")


def blank_markup(text: str) -> str:
    """The text with `<st>`/`<ed>`/`<image>` tags blanked and every box turned into a comma (same length, so
    positions stay those of the original text)."""
    if "<" in text:
        text = TAGS.sub(lambda m: " " * len(m.group()), text)
    if "[" in text:
        text = BOX_PATTERN.sub(lambda m: "," + " " * (len(m.group()) - 1), text)
    return text


def scan(text: str, lang: str, labels: bool = False) -> list[Mention]:
    """Object mentions in `text` (en, ru or zh); offsets index `text` itself."""
    norm = normalize(blank_markup(text))
    return scan_chars(norm, labels) if lang == "zh" else scan_words(norm, lang, labels)


def detect_lang(text: str) -> str:
    """en, ru or zh by the script most of the letters are in (a record without a usable `lang` key)."""
    sample = text[:2000]
    counts = {"zh": len(CJK.findall(sample)) * 2, "ru": len(CYRILLIC.findall(sample)),
              "en": len(LATIN.findall(sample))}
    return max(counts, key=lambda lang: (counts[lang], lang == "en"))
