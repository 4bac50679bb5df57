"""Requests-per-minute and tokens-per-minute limits (token buckets with one second of burst), and the
adaptive window of requests in flight (AIMD on timeouts, 429/503 and the time to first token)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass


class RateLimiter:
    """A token bucket refilled at `per_minute / 60` per second; waiters are served in order."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` is available (an amount above capacity waits for a full bucket)."""
        async with self.lock:
            need = min(amount, self.capacity)
            self._refill()
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def refund(self, amount: float) -> None:
        """Give back an over-estimate (or take more for an under-estimate: pass a negative amount)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class Limits:
    """The run's optional rpm and tpm limits together."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm = RateLimiter(rpm) if rpm else None
        self.tpm = RateLimiter(tpm) if tpm else None

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait for one request slot and the estimated tokens."""
        if self.rpm:
            await self.rpm.acquire(1)
        if self.tpm:
            await self.tpm.acquire(estimated_tokens)

    def settle(self, estimated_tokens: int, used_tokens: int) -> None:
        """Correct the token bucket once the real usage is known."""
        if self.tpm:
            self.tpm.refund(estimated_tokens - used_tokens)


# Adaptive concurrency: how many requests may be in flight, learned from the server's answers.
START = 4  # first window (or --concurrency when lower); slow start doubles it per round of replies
BACK_OFF = 0.5  # the window is multiplied by this on a back-off signal
TOLERANCE = 2.0  # first-byte time above TOLERANCE x baseline + SLACK_S means the server queues
SLACK_S = 1.0
RECENT = 3  # the back-off test uses the median of the last RECENT first-byte times
HISTORY = 100  # the baseline is the smallest first-byte time among the last HISTORY replies


@dataclass
class Ticket:
    """What the controller noted when a request was let through."""

    epoch: int  # back-offs before it was sent: older requests' signals are stale
    full: bool  # at least half the window was in use when it was sent (growth needs evidence of use)


class AIMD:
    """Additive increase, multiplicative decrease of the in-flight limit (no I/O: tests drive it directly).

    Start at min(ceiling, START); while no back-off has happened, each good reply adds 1 (slow start: the
    window doubles per round), afterwards 1/limit (about +1 per round); a reply whose first byte came slow
    adds nothing. A timeout, an overload status (429, 503, ...) or a rising first-byte time (the median
    of the last 3 above 2 x the baseline + 1 s; the baseline is the fastest of the last 100) halves the
    limit, at most once per round: only requests sent since the last back-off count. Never below 1 nor
    above the ceiling, and no growth from a reply sent while less than half the window was in use.
    """

    def __init__(self, ceiling: int, start: int = START) -> None:
        self.ceiling = ceiling
        self.limit = float(min(ceiling, start))
        self.threshold_limit = float(ceiling)  # slow start ends here (set by each back-off)
        self.epoch = 0
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.recent: deque[float] = deque(maxlen=RECENT)

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self.limit))

    def ticket(self, in_flight: int) -> Ticket:
        """Note a request about to be sent; `in_flight` counts it."""
        return Ticket(self.epoch, 2 * in_flight >= self.allowed)

    def on_reply(self, ticket: Ticket, first_byte: float | None) -> None:
        """A reply came back; `first_byte` is its time to first token (None when not streamed)."""
        if first_byte is not None:
            self.history.append(first_byte)
        if ticket.epoch != self.epoch:
            return
        slow = False
        if first_byte is not None:
            self.recent.append(first_byte)
            threshold = TOLERANCE * min(self.history) + SLACK_S
            if statistics.median(self.recent) > threshold:
                self._back_off()
                return
            slow = first_byte > threshold  # a lone slow reply: no back-off, but no growth either
        if ticket.full and not slow:
            step = 1.0 if self.limit < self.threshold_limit else 1.0 / self.limit
            self.limit = min(float(self.ceiling), self.limit + step)

    def on_overload(self, ticket: Ticket) -> None:
        """A timeout or a 429/503: the server has more than it can take."""
        if ticket.epoch == self.epoch:
            self._back_off()

    def _back_off(self) -> None:
        self.limit = max(1.0, self.limit * BACK_OFF)
        self.threshold_limit = self.limit
        self.epoch += 1
        self.recent.clear()


class Window:
    """Gates requests in flight: at most the AIMD limit (or a fixed ceiling when `adaptive` is off), FIFO."""

    def __init__(self, ceiling: int, adaptive: bool) -> None:
        self.control = AIMD(ceiling) if adaptive else None
        self.ceiling = ceiling
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def allowed(self) -> int:
        return self.control.allowed if self.control else self.ceiling

    @property
    def back_offs(self) -> int:
        return self.control.epoch if self.control else 0

    async def acquire(self) -> Ticket:
        """Wait for room in the window; the ticket goes back with `release`."""
        if self._waiters or self.in_flight >= self.allowed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.in_flight -= 1  # granted just as we were cancelled: give the room back
                    self._wake()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        return self.control.ticket(self.in_flight) if self.control else Ticket(0, True)

    def release(self, ticket: Ticket, *, first_byte: float | None = None, replied: bool = False,
                overload: bool = False) -> None:
        """The request ended: a reply (with its first-byte time), an overload signal, or neither."""
        self.in_flight -= 1
        if self.control is not None and replied:
            self.control.on_reply(ticket, first_byte)
        elif self.control is not None and overload:
            self.control.on_overload(ticket)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.allowed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.in_flight += 1
