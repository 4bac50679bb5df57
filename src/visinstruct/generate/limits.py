"""Requests-per-minute and tokens-per-minute limits (token buckets with one second of burst)."""

from __future__ import annotations

import asyncio
import time


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
