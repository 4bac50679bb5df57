"""The run loop: an adaptive window of requests in flight, rate limits, retries with backoff, and the replies
committed to the ledger in small groups before their output lines are written."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..core.errors import UserError
from ..core.report import Progress
from ..teachers.base import KeyRefused, Reply, Teacher, TeacherError, retry_delay
from .budget import Budget
from .ledger import Entry, Ledger
from .limits import Limits, Window
from .units import Unit
from .vlm import ImageError

# an answered unit → ((output size after its lines, lines), a function writing them): see generate/output.py
OnAnswer = Callable[[Unit, Entry], tuple[tuple[int, int] | None, Callable[[], int] | None]]
TICK_S = 0.5  # how often the progress display is offered a line while requests are out
GROUP_UNITS = 64  # answers committed to the ledger in one transaction (a commit per answer costs ~0.15 ms)
GROUP_S = 0.1  # ... or fewer, when this long has passed since the first of them


@dataclass
class RunStats:
    """What this run asked and got (every field a count: Ray sums them over actors)."""

    answered: int = 0
    failed: int = 0
    bad_images: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server says came from its prefix cache
    cache_reports: int = 0  # replies that said how many prompt tokens were cached
    streamed: int = 0  # replies read as a stream (time to first token measured apart)
    timeouts: int = 0
    throttled: int = 0  # 429, 503 and the like
    back_offs: int = 0  # times the adaptive window was halved
    timeout_raises: int = 0  # times a queue-wait timeout raised the request timeout (without streaming)
    concurrency: int = 0  # the adaptive window at the end (0: a fixed window, e.g. the embedded teacher)
    unsent: int = 0  # units taken from the stream but not sent: the budget cap would have been crossed

    def add_reply(self, reply: Reply) -> None:
        """Count an answer and its tokens."""
        self.answered += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if reply.cached_tokens is not None:
            self.cached_tokens += reply.cached_tokens
            self.cache_reports += 1
        if reply.first_byte_s is not None:
            self.streamed += 1


class Runner:
    """Sends units to a teacher and records every outcome in the ledger.

    At most `concurrency` requests are in flight; for an adaptive teacher (HTTP) the window in between is
    learned from the server (generate/limits.py AIMD). A refused key (HTTP 401/403) stops the run: no
    worker sends another request, the refused units are not recorded (a re-run with a good key asks them),
    and `run` raises a UserError saying so.
    """

    def __init__(self, teacher: Teacher, ledger: Ledger, limits: Limits, concurrency: int,
                 retries: int, backoff: float, progress: bool | None = None,
                 on_answer: OnAnswer | None = None, budget: Budget | None = None,
                 total_hint: Callable[[], int | None] | None = None) -> None:
        self.teacher, self.ledger, self.limits = teacher, ledger, limits
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.progress, self.on_answer, self.budget = progress, on_answer, budget
        self.total_hint = total_hint  # the units to send, once the stream feeding them has been read to its end
        self.capped = False
        self.window = Window(concurrency, adaptive=bool(getattr(teacher, "adaptive", False)))
        self.stats = RunStats()
        self.refused: KeyRefused | None = None
        self._unwritten: list[Callable[[], int]] = []  # output lines of answers not committed yet
        self._held = 0  # answers in the open ledger transaction
        self._timer: asyncio.TimerHandle | None = None
        self._broken: BaseException | None = None  # a commit or write that failed: nothing more is written

    async def run(self, units: Iterable[Unit], total: int | None = None) -> RunStats:
        """Process the units (a list or a stream); returns when each is answered or failed, or when the
        budget stops the run (the units left are not taken from the stream)."""
        pending = iter(units)
        total = len(units) if isinstance(units, list) else total
        with Progress("generate", total=total, enabled=self.progress, unit="req",
                      detail=self._detail) as bar:
            self.bar = bar
            ticker = asyncio.create_task(self._tick())
            width = min(self.concurrency, total) if total is not None else self.concurrency
            workers = [asyncio.create_task(self._worker(pending)) for _ in range(max(1, width))]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in (*workers, ticker):
                    task.cancel()
                self._commit()
        if self._broken is not None:
            raise self._broken
        self.stats.back_offs = self.window.back_offs
        self.stats.concurrency = self.window.allowed if self.window.control else 0
        if self.refused is not None:
            raise UserError(f"{self.refused.reason}; the run stopped, the {self.stats.answered} units answered "
                            "this run are kept in the ledger; re-run with a valid key to resume")
        return self.stats

    def _detail(self) -> str:
        window = self.window
        limit = f"{window.allowed} (max {window.ceiling})" if window.control else str(window.ceiling)
        return (f"{self.stats.answered:,} answered, {self.stats.failed:,} failed, {window.in_flight} in flight, "
                f"concurrency {limit}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self.bar.total is None and self.total_hint is not None and self.total_hint() is not None:
                self.bar.set_total(self.total_hint())
            self.bar.tick()

    async def _worker(self, pending: Iterator[Unit]) -> None:
        while self.refused is None and not self.capped:
            if self._broken is not None:
                raise self._broken
            unit = next(pending, None)
            if unit is None:
                return
            if self.budget is not None and not self.budget.admit(unit.prompt_estimate, unit.request["max_tokens"]):
                self.capped = True  # this unit and the rest stay unsent
                self.stats.unsent += 1
                return
            await self._one(unit)
            self.bar.update(1)

    async def _request(self, unit: Unit) -> dict | None:
        """The request to send: with the image's data URL in VLM mode (None when the image is bad)."""
        if unit.info.file is None:
            return unit.request
        try:
            return await asyncio.to_thread(unit.with_image)
        except ImageError as error:
            self.ledger.record_failure(unit.key, unit.unit_id, unit.request,
                                       f"bad image {unit.info.file}: {error}", 0)
            self.stats.failed += 1
            self.stats.bad_images += 1
            return None

    async def _send(self, request: dict, estimate: int) -> Reply | None:
        """One attempt inside the window (None: the run stopped while it waited); raises TeacherError."""
        ticket = await self.window.acquire()
        try:
            await self.limits.acquire(estimate)
            if self.refused is not None:  # another worker's request was refused: send nothing more
                self.window.release(ticket)
                return None
            reply = await self.teacher.complete(request)
        except TeacherError as error:
            self.limits.settle(estimate, 0)
            self.window.release(ticket, overload=error.overload)
            raise
        except BaseException:
            self.window.release(ticket)
            raise
        self.window.release(ticket, replied=True, first_byte=reply.first_byte_s)
        self.limits.settle(estimate, reply.prompt_tokens + reply.completion_tokens)
        return reply

    async def _one(self, unit: Unit) -> None:
        reply = await self._answer(unit)
        if self.budget is not None:
            used = (reply.prompt_tokens, reply.completion_tokens) if reply is not None else (0, 0)
            self.budget.settle(unit.prompt_estimate, unit.request["max_tokens"], *used)

    async def _answer(self, unit: Unit) -> Reply | None:
        """Send one unit with retries; the reply (recorded) or None (failed, recorded; or not sent)."""
        if unit.local_reply is not None:  # made from the annotations: nothing to send
            reply = Reply(unit.local_reply, 0, 0, "stop")
            self._record(unit, reply, 0)
            return reply
        request = await self._request(unit)
        if request is None:
            return None
        estimate = unit.prompt_estimate + unit.request["max_tokens"]
        for attempt in range(self.retries + 1):
            try:
                reply = await self._send(request, estimate)
            except KeyRefused as error:
                self.refused = self.refused or error
                return None
            except TeacherError as error:
                self._count(error)
                if not error.retryable or attempt == self.retries:
                    self.ledger.record_failure(unit.key, unit.unit_id, unit.request,
                                               f"{error.reason} (after {attempt + 1} attempts)", attempt + 1)
                    self.stats.failed += 1
                    return None
                self.stats.retries += 1
                await asyncio.sleep(retry_delay(attempt, error, self.backoff))
                continue
            if reply is not None:
                self._record(unit, reply, attempt + 1)
            return reply
        return None

    def _commit(self) -> None:
        """Commit the answers held in the ledger's transaction, then write their output lines (a kill in
        between leaves lines the ledger vouches for; one before it costs the answers held). After a failed
        commit or write nothing more is committed or written: the run stops with that error."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._broken is not None:
            return
        unwritten, self._unwritten, self._held = self._unwritten, [], 0
        try:
            self.ledger.commit()
            for write in unwritten:
                write()
        except BaseException as error:
            self._broken = error
            raise

    def _commit_later(self) -> None:
        """The timer's commit: an error is kept (the workers and `run` raise it), not lost in the loop."""
        self._timer = None
        with contextlib.suppress(Exception):  # kept in self._broken
            self._commit()

    def _count(self, error: TeacherError) -> None:
        """Tally an overload signal; say so when it raised the request timeout."""
        if error.timed_out:
            self.stats.timeouts += 1
        elif error.overload:
            self.stats.throttled += 1
        if error.raised_timeout is not None:
            self.stats.timeout_raises += 1
            self.bar.note(f"generate: a request timed out while others were in flight (it may have waited in "
                          f"the server's queue): the request timeout is now {error.raised_timeout:g} s")

    def _record(self, unit: Unit, reply: Reply, attempts: int) -> None:
        out, write = None, None
        if self.on_answer is not None:  # the output's lines for this unit: noted with the answer, then written
            out, write = self.on_answer(unit, Entry(unit.key, "answered", reply.text, reply.finish_reason,
                                                    reply.prompt_tokens, reply.completion_tokens, None,
                                                    reply.cached_tokens))
        self.ledger.hold()
        self.ledger.record_answer(unit.key, unit.unit_id, unit.request, reply.text, reply.finish_reason,
                                  reply.prompt_tokens, reply.completion_tokens, attempts, reply.cached_tokens, out=out)
        if write is not None:
            self._unwritten.append(write)
        self._held += 1
        if self._held >= GROUP_UNITS:
            self._commit()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(GROUP_S, self._commit_later)
        self.stats.add_reply(reply)
