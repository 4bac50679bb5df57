"""The run loop: bounded concurrency, rate limits, retries with backoff, and a ledger write per reply."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.errors import UserError
from ..core.report import Progress
from ..teachers.base import KeyRefused, Teacher, TeacherError
from .ledger import Ledger
from .limits import Limits
from .units import Unit
from .vlm import ImageError

MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0


@dataclass
class RunStats:
    """What this run asked and got."""

    answered: int = 0
    failed: int = 0
    bad_images: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Runner:
    """Sends units to a teacher with `concurrency` workers and records every outcome in the ledger.

    A refused key (HTTP 401/403) stops the run: no worker sends another request, the refused units are
    not recorded (a re-run with a good key asks them), and `run` raises a UserError saying so.
    """

    def __init__(self, teacher: Teacher, ledger: Ledger, limits: Limits, concurrency: int,
                 retries: int, backoff: float, progress: bool | None = None) -> None:
        self.teacher, self.ledger, self.limits = teacher, ledger, limits
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.progress = progress
        self.stats = RunStats()
        self.refused: KeyRefused | None = None

    async def run(self, units: list[Unit]) -> RunStats:
        """Process all units; returns when each is answered or failed."""
        pending = iter(units)
        with Progress("generate", total=len(units), enabled=self.progress, unit="req") as bar:
            self.bar = bar
            workers = [asyncio.create_task(self._worker(pending)) for _ in range(min(self.concurrency, len(units)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
        if self.refused is not None:
            raise UserError(f"{self.refused.reason}; the run stopped, the {self.stats.answered} units answered "
                            "this run are kept in the ledger; re-run with a valid key to resume")
        return self.stats

    async def _worker(self, pending: Iterator[Unit]) -> None:
        for unit in pending:
            if self.refused is not None:
                return
            await self._one(unit)
            self.bar.update(1)

    def _delay(self, attempt: int, error: TeacherError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER_S)
        return random.uniform(0.5, 1.0) * min(MAX_BACKOFF_S, self.backoff * 2**attempt)

    async def _request(self, unit: Unit) -> dict | None:
        """The request to send: with the image's data URL in VLM mode (None when the image is bad)."""
        if unit.scene.file is None:
            return unit.request
        try:
            return await asyncio.to_thread(unit.with_image)
        except ImageError as error:
            self.ledger.record_failure(unit.key, unit.unit_id, unit.request,
                                       f"bad image {unit.scene.file}: {error}", 0)
            self.stats.failed += 1
            self.stats.bad_images += 1
            return None

    async def _one(self, unit: Unit) -> None:
        request = await self._request(unit)
        if request is None:
            return
        estimate = unit.prompt_estimate + unit.request["max_tokens"]
        for attempt in range(self.retries + 1):
            await self.limits.acquire(estimate)
            if self.refused is not None:  # another worker's request was refused: send nothing more
                return
            try:
                reply = await self.teacher.complete(request)
            except KeyRefused as error:
                self.limits.settle(estimate, 0)
                self.refused = self.refused or error
                return
            except TeacherError as error:
                self.limits.settle(estimate, 0)
                if not error.retryable or attempt == self.retries:
                    self.ledger.record_failure(unit.key, unit.unit_id, unit.request,
                                               f"{error.reason} (after {attempt + 1} attempts)", attempt + 1)
                    self.stats.failed += 1
                    return
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, error))
                continue
            self.limits.settle(estimate, reply.prompt_tokens + reply.completion_tokens)
            self.ledger.record_answer(unit.key, unit.unit_id, unit.request, reply.text, reply.finish_reason,
                                      reply.prompt_tokens, reply.completion_tokens, attempt + 1)
            self.stats.answered += 1
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            return
