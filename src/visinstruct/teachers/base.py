"""The teacher interface: an OpenAI-style chat request in, text and token usage out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Reply:
    """What a teacher answered."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None

    @property
    def truncated(self) -> bool:
        """True when the teacher stopped at its token limit."""
        return self.finish_reason == "length"


class TeacherError(Exception):
    """A request that did not produce a reply; `retryable` says whether trying again may help."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class KeyRefused(TeacherError):
    """The server refused the credentials (HTTP 401/403): every later request would fail the same way,
    so the run stops instead of failing every unit. The reason never holds the key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


class Teacher(Protocol):
    """Anything that answers chat requests asynchronously."""

    model: str
    default_concurrency: int

    async def complete(self, request: dict[str, Any]) -> Reply:
        """Answer one request: `{"model", "messages", "temperature", "top_p", "max_tokens", "seed"}`."""

    async def close(self) -> None:
        """Release connections, threads or memory."""
