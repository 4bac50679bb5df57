"""Language identification with py3langid (its model ships in the wheel), restricted to en/ru/zh."""

from __future__ import annotations

from typing import Any

from .base import Reject, Verdict, gpt_texts


class LanguageFilter:
    """Keep records whose gpt turns are in the record's language with probability >= threshold."""

    name = "language"

    def __init__(self, default_lang: str = "en", threshold: float = 0.5,
                 languages: tuple[str, ...] = ("en", "ru", "zh")) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.identifier.set_languages(list(languages))
        self.default_lang, self.threshold, self.languages = default_lang, threshold, languages

    def check(self, record: dict[str, Any]) -> Verdict:
        expected = record.get("lang") or self.default_lang
        if expected not in self.languages:
            return None
        # the first 100 characters of the answers are plenty for three well-separated languages
        found, probability = self.identifier.classify(" ".join(gpt_texts(record))[:100])
        if found != expected:
            return Reject(f"wrong_language: expected {expected}, found {found} ({probability:.2f})")
        if probability < self.threshold:
            return Reject(f"unsure_language: {expected} with probability {probability:.2f} < {self.threshold}")
        return None
