"""The teacher interface: an OpenAI-style chat request in, text and token usage out."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Reply:
    """What a teacher answered."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    cached_tokens: int | None = None  # prompt tokens the server served from its prefix cache, when it says
    first_byte_s: float | None = None  # seconds from sending to the first token (streamed replies only)

    @property
    def truncated(self) -> bool:
        """True when the teacher stopped at its token limit."""
        return self.finish_reason == "length"


class TeacherError(Exception):
    """A request that did not produce a reply; `retryable` says whether trying again may help, `overload`
    whether the server is past its capacity (a timeout, 429, 503: fewer requests in flight may help),
    `timed_out` whether the client gave up waiting, and `raised_timeout` the new request timeout when this
    error made the client raise it."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None, overload: bool = False,
                 timed_out: bool = False, raised_timeout: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.overload = overload or timed_out
        self.timed_out = timed_out
        self.raised_timeout = raised_timeout


MAX_BACKOFF_S = 60.0  # the longest wait between two attempts when the server names none
MAX_RETRY_AFTER_S = 600.0  # the longest Retry-After honoured


def retry_delay(attempt: int, error: TeacherError, backoff: float) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After, else jittered exponential."""
    if error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_AFTER_S)
    return random.uniform(0.5, 1.0) * min(MAX_BACKOFF_S, backoff * 2**attempt)


class KeyRefused(TeacherError):
    """The server refused the credentials (HTTP 401/403): every later request would fail the same way,
    so the run stops instead of failing every unit. The reason never holds the key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


class Teacher(Protocol):
    """Anything that answers chat requests asynchronously.

    A teacher with a true `adaptive` attribute (the HTTP client) gets an adaptive number of requests in
    flight (generate/limits.py AIMD); others (the embedded model, which batches what it is given) get a
    fixed `--concurrency`.
    """

    model: str
    default_concurrency: int

    async def complete(self, request: dict[str, Any]) -> Reply:
        """Answer one request: `{"model", "messages", "temperature", "top_p", "max_tokens", "seed"}`."""

    async def close(self) -> None:
        """Release connections, threads or memory."""
