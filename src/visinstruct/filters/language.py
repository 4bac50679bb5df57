"""Language identification with py3langid (its model ships in the wheel), restricted to en/ru/zh.

Among these three languages the script decides whenever one script clearly dominates (Latin → en,
Cyrillic → ru, Han → zh, ≥ 95% of the letters), which is what the restricted model answers too, at a
tenth of the cost; mixed-script text goes to the model.
"""

from __future__ import annotations

from typing import Any

from .base import LETTER, SCRIPTS, Reject, Verdict, gpt_texts, script_share


class LanguageFilter:
    """Keep records whose gpt turns are in the record's language with probability >= threshold."""

    name = "language"

    def __init__(self, default_lang: str = "en", threshold: float = 0.5,
                 languages: tuple[str, ...] = ("en", "ru", "zh")) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.identifier.set_languages(list(languages))
        self.default_lang, self.threshold, self.languages = default_lang, threshold, languages

    def identify(self, text: str, expected: str | None = None) -> tuple[str, float]:
        """(language, probability) of a text; the expected language's script is tried first."""
        sample = text[:300]
        if set(self.languages) == set(SCRIPTS) and len(LETTER.findall(sample[:40])) >= 2:
            for lang in sorted(SCRIPTS, key=lambda lang: lang != expected):  # the expected script first
                share = script_share(sample, lang)
                if share >= 0.95:
                    return lang, share
        found, probability = self.identifier.classify(sample[:200])
        return found, float(probability)

    def check(self, record: dict[str, Any]) -> Verdict:
        expected = record.get("lang") or self.default_lang
        if expected not in self.languages:
            return None
        found, probability = self.identify(" ".join(gpt_texts(record)), expected)
        if found != expected:
            return Reject(f"wrong_language: expected {expected}, found {found} ({probability:.2f})")
        if probability < self.threshold:
            return Reject(f"unsure_language: {expected} with probability {probability:.2f} < {self.threshold}")
        return None
