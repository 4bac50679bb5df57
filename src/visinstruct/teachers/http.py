"""An OpenAI-compatible chat-completions client on aiohttp (vLLM, SGLang, Ollama, OpenAI, ...).

Kept thin on purpose: the OpenAI SDK costs ~10x more CPU per request, and the same cores also
parse replies and write the ledger. The API key only ever travels in the Authorization header.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import aiohttp
import orjson

from .base import KeyRefused, Reply, TeacherError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
REFUSED_STATUS = {401, 403}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HTTPTeacher:
    """POSTs to `{base_url}/chat/completions` and reads the first choice and the usage."""

    default_concurrency = 16

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 120.0, max_connections: int = 64) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Remove the key from any text that may be logged (e.g. a server echoing a header)."""
        return text.replace(self._api_key, "***") if self._api_key else text

    async def complete(self, request: dict[str, Any]) -> Reply:
        """One request; raises TeacherError with the reason and whether to retry."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, force_close=False)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers(),
                                                  timeout=self._timeout)
        try:
            async with self._session.post(self.url, data=orjson.dumps(request)) as resp:
                body = await resp.read()
                if resp.status in REFUSED_STATUS:
                    raise KeyRefused(self._refusal(resp.status))
                if resp.status != 200:
                    raise TeacherError(
                        f"HTTP {resp.status}: {self._scrub(body[:200].decode('utf-8', 'replace'))}",
                        retryable=resp.status in RETRYABLE_STATUS or resp.status >= 500,
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        except asyncio.TimeoutError:
            raise TeacherError(f"no reply within {self._timeout.total:g} s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise TeacherError(f"connection error: {self._scrub(str(exc)) or type(exc).__name__}",
                               retryable=True) from None
        return self._reply(body)

    def _refusal(self, status: int) -> str:
        """Why the server said no. Its body is left out: servers echo (parts of) the key there."""
        if self._api_key:
            return f"the teacher refused the API key (HTTP {status}): check the key and its access to the model"
        return (f"the teacher wants an API key (HTTP {status}): put it in an environment variable and pass "
                "--api-key-env VAR")

    def _reply(self, body: bytes) -> Reply:
        try:
            data = orjson.loads(body)
            choice = data["choices"][0]
            text = choice["message"]["content"]
            usage = data.get("usage") or {}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise TeacherError(f"malformed response body ({type(exc).__name__}: {str(exc)[:80]})",
                               retryable=True) from None
        if not isinstance(text, str):
            raise TeacherError("response has no message content", retryable=True)
        return Reply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                     choice.get("finish_reason"))

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
