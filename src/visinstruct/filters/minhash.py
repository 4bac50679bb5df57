"""Near-duplicate text (MinHash). TEMPORARY: wraps datasketch until the band-hash version lands."""

from __future__ import annotations

from ..core.step import Item, Step
from .dedup import NearDedup


class MinhashStep(Step):
    """Stateless: signatures (placeholder: nothing yet)."""

    name = "minhash"

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold


class NearDedupStep(Step):
    """Stateful near-duplicate removal."""

    name = "near_dedup"
    stateless = False

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.dedup: NearDedup | None = None

    def process(self, items: list[Item]) -> list[Item]:
        if self.dedup is None:
            self.dedup = NearDedup(self.threshold)
        for item in items:
            if item.alive:
                verdict = self.dedup.check(item.record)
                if verdict is not None:
                    item.reject(self.name, verdict.reason)
        return items
