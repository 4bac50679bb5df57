"""Stage 3, frequent teacher errors, in English, Russian and Chinese. Each rule has a name and a reason.

Rules look at the gpt turns: mentions of the annotation source, raw coordinates (outside referring QA),
refusals and assistant boilerplate, wrong script for the record's language, repetition loops, truncated
endings, answers too short or too long.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import SCRIPTS, Reject, Verdict, gpt_texts, script_share

SOURCE_MENTIONS = re.compile("|".join([
    r"\b(?:the|these|those|given|provided|image's|this)\s+(?:captions?|descriptions?|annotations?)\b",
    r"\bcaptions?\b", r"\bbounding[- ]box(?:es)?\b", r"\bcoordinates?\b",
    r"\bподпис(?:ь|и|ей|ям|ях|ью)\b", r"\bописани(?:е|я|и|ю|ем|ях)\s+(?:к\s+)?(?:изображени|снимк|фото)",
    r"\bограничивающ\w*\s+рам\w*", r"\bкоординат\w*",
    r"标注", r"边界框", r"边框", r"坐标", r"图片描述", r"描述中", r"说明文字",
]), re.IGNORECASE)
REFUSALS = re.compile("|".join([
    r"\bas an ai\b", r"\bas a language model\b", r"\bi(?: am|'m)? (?:not able|unable) to (?:see|view)\b",
    r"\bi can(?:not|'t) (?:see|view) (?:the |this )?(?:image|picture|photo)", r"\bi(?:'m| am) sorry, but\b",
    r"\bкак (?:ии|искусственный интеллект|языковая модель)\b",
    r"\bя не (?:могу|вижу) (?:видеть |увидеть )?(?:изображени|картин|фото)",
    r"\bк сожалению, я не могу\b",
    r"作为(?:一个)?(?:人工智能|AI|语言模型)", r"我(?:无法|不能)(?:看到|查看)", r"我看不到(?:图片|图像|照片)",
]), re.IGNORECASE)
# Cheap substring triggers (on lower-cased text) guard the precise, slower regular expressions above.
SOURCE_TRIGGERS = ("caption", "description", "annotation", "bounding", "coordinat", "подпис", "описани", "ограничива",
                   "координат", "标注", "边界框", "边框", "坐标", "描述", "说明文字")
REFUSAL_TRIGGERS = ("as an ai", "language model", "unable to", "not able to", "can't see", "cannot see", "can't view",
                    "cannot view", "sorry, but", "как ии", "искусственный интеллект", "языковая модель", "не могу",
                    "не вижу", "作为", "无法", "不能", "看不到")
COORDINATES = re.compile(r"\[\s*(?:0?\.\d+|[01](?:\.0+)?)\s*,\s*(?:0?\.\d+|[01](?:\.0+)?)\s*,")
LOOP_WINDOW = 20_000  # characters at the end of an answer that the repetition rule looks at
ENDINGS = (".", "!", "?", "…", "。", "！", "？", ")", "\"", "»", "”", "」", "』", "）", "*", "`")

@dataclass
class Limits:
    """Configurable bounds."""

    min_answer_chars: int = 2
    max_answer_chars: int = 8000
    min_script_share: float = 0.5
    truncation_min_chars: int = 40


def _loop(text: str, lang: str) -> str | None:
    text = text[-LOOP_WINDOW:]  # a loop runs to the end of the answer; memory stays bounded
    units = list(text.replace(" ", "")) if lang == "zh" else text.lower().split()
    size = 6 if lang == "zh" else 3
    if len(units) < size * 4:
        return None
    windows = list(zip(*(units[i:] for i in range(size)), strict=False))
    if len(set(windows)) > 0.8 * len(windows):
        return None  # too varied to hold a loop
    grams = Counter(windows)
    gram, count = grams.most_common(1)[0]
    if count >= 4 and count * size >= 0.3 * len(units):
        return ("" if lang == "zh" else " ").join(gram)
    return None


class HeuristicsFilter:
    """Stage 3: the first rule that fires rejects the record."""

    name = "heuristics"

    def __init__(self, default_lang: str = "en", limits: Limits | None = None) -> None:
        self.default_lang, self.limits = default_lang, limits or Limits()
        self.rules: list[tuple[str, Callable[[str, str, dict, str], str | None]]] = [
            ("refusal", self._refusal), ("annotation_source", self._source), ("coordinates", self._coordinates),
            ("wrong_script", self._script), ("repetition_loop", self._repetition), ("too_short", self._short),
            ("truncated_ending", self._truncated)]

    def check(self, record: dict[str, Any]) -> Verdict:
        lang = record.get("lang") or self.default_lang
        for text in gpt_texts(record):
            too_long = self._long(text)
            if too_long:  # first: the other rules never see (or copy) an answer over the cap
                return Reject(f"too_long: {too_long}")
            lower = text.lower()
            for name, rule in self.rules:
                found = rule(text, lang, record, lower)
                if found:
                    return Reject(f"{name}: {found}")
        return None

    def _refusal(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        if not any(trigger in lower for trigger in REFUSAL_TRIGGERS):
            return None
        match = REFUSALS.search(text)
        return f"assistant boilerplate {match.group()!r}" if match else None

    def _source(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        if record.get("task") == "referring_qa" or not any(trigger in lower for trigger in SOURCE_TRIGGERS):
            return None
        match = SOURCE_MENTIONS.search(text)
        return f"mentions the annotation source ({match.group()!r})" if match else None

    def _coordinates(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        if "[" not in text or record.get("task") == "referring_qa" or "<st>" in text:
            return None
        match = COORDINATES.search(text)
        return f"raw coordinates in the answer ({match.group()}…)" if match else None

    def _script(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        if lang not in SCRIPTS:
            return None
        share = script_share(text[:300], lang)
        return f"only {share:.0%} of letters are in the {lang} script" if share < self.limits.min_script_share \
            else None

    def _repetition(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        gram = _loop(text, lang)
        return f"repeats {gram!r}" if gram else None

    def _short(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        size = len(text.strip())
        return f"answer of {size} characters (< {self.limits.min_answer_chars})" \
            if size < self.limits.min_answer_chars else None

    def _long(self, text: str) -> str | None:
        size = len(text)
        return f"answer of {size} characters (> {self.limits.max_answer_chars})" \
            if size > self.limits.max_answer_chars else None

    def _truncated(self, text: str, lang: str, record: dict, lower: str) -> str | None:
        end = text.rstrip()
        if len(end) < self.limits.truncation_min_chars or end.endswith(ENDINGS) or end[-1:].isdigit():
            return None
        return f"answer ends mid-sentence ({end[-20:]!r})"
