"""An OpenAI-compatible chat-completions client on aiohttp (vLLM, SGLang, Ollama, OpenAI, ...).

Kept thin on purpose: the OpenAI SDK costs ~10x more CPU per request, and the same cores also
parse replies and write the ledger. The API key only ever travels in the Authorization header.

Replies are streamed (`stream: true`, server-sent events, with `stream_options.include_usage` so the
usage still comes back) so that waiting in a busy server's queue and generating are timed apart:
`first_byte_timeout` runs until the first event, `timeout` from there to the end of the reply. A server
that rejects streaming (HTTP 400/422 naming it) is asked again without it, and so is every later request;
one that ignores it and answers plain JSON is read as such. Without streaming one `timeout` covers the
whole request, and it is doubled (up to `first_byte_timeout + timeout`) when a request that was sent while
others were in flight times out: it may have spent its time waiting in the server's queue.
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
OVERLOAD_STATUS = {408, 429, 503, 504}
REFUSED_STATUS = {401, 403}
STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}
DRAIN_S = 1.0


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


def _usage(usage: dict[str, Any] | None) -> tuple[int, int, int | None]:
    """(prompt, completion, cached prompt tokens or None when the server does not say)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
            None if cached is None else int(cached))


class StreamRefused(Exception):
    """The server answered a streamed request with an error that names streaming."""


class EventStream:
    """Reads a chat-completions event stream fed in pieces: the text, the finish reason and the usage.

    `feed` only collects the events' JSON (a server sends one per token); `reply` parses them in one call.
    """

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.done = False  # `data: [DONE]` seen
        self._pending = b""

    @property
    def events(self) -> int:
        return len(self.payloads)

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the body (events may be split anywhere)."""
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):  # not blank lines, `event:`, `: keep-alive` comments
                self._data(line[5:].strip())

    def end(self) -> None:
        """The body ended: read a last line that had no newline."""
        pending, self._pending = self._pending.strip(), b""
        if pending.startswith(b"data:"):
            self._data(pending[5:].strip())

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
        elif payload:
            self.payloads.append(payload)

    def reply(self, first_byte_s: float) -> Reply:
        """The whole reply; a stream cut before its end, or malformed, is an error worth retrying."""
        try:
            chunks = orjson.loads(b"[" + b",".join(self.payloads) + b"]")
        except orjson.JSONDecodeError:
            shown = b" ".join(self.payloads)[:120].decode("utf-8", "replace")
            raise TeacherError(f"malformed stream event in: {shown}", retryable=True) from None
        try:
            parts, finish_reason, usage = _read_chunks(chunks)
            prompt, completion, cached = _usage(usage)
        except (AttributeError, TypeError, ValueError) as exc:
            raise TeacherError(f"malformed stream event ({type(exc).__name__}: {str(exc)[:80]})",
                               retryable=True) from None
        if not (self.done or finish_reason):
            raise TeacherError("the stream ended before the reply did", retryable=True)
        return Reply("".join(parts), prompt, completion, finish_reason, cached, first_byte_s)


def _read_chunks(chunks: list[Any]) -> tuple[list[str], str | None, dict[str, Any] | None]:
    """(the first choice's content pieces, its finish reason, the usage) of the parsed events."""
    parts: list[str] = []
    finish_reason = usage = None
    for chunk in chunks:
        if chunk.get("error"):
            raise TeacherError(f"error in the stream: {str(chunk['error'])[:200]}", retryable=True)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                parts.append(content)
            finish_reason = choice.get("finish_reason") or finish_reason
        usage = chunk.get("usage") or usage
    return parts, finish_reason, usage


class HTTPTeacher:
    """POSTs to `{base_url}/chat/completions` and reads the first choice and the usage."""

    default_concurrency = 16
    adaptive = True  # the runner adapts the requests in flight to this server (generate/limits.py)

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 max_connections: int = 64, first_byte_timeout: float = 300.0, stream: bool = True) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.timeout = timeout  # streamed: first token to end; else the whole request (raised automatically)
        self.first_byte_timeout = first_byte_timeout
        self.max_timeout = first_byte_timeout + timeout
        self.stream = stream
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._active = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Remove the key from any text that may be logged (e.g. a server echoing a header)."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, force_close=False)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers(),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def complete(self, request: dict[str, Any]) -> Reply:
        """One request; raises TeacherError with the reason and whether to retry."""
        session = self._open()
        alone = self._active == 0
        self._active += 1
        try:
            if self.stream:
                try:
                    return await self._streamed(session, request)
                except StreamRefused:
                    self.stream = False  # this server does not stream: ask it plainly from now on
            return await self._plain(session, request, alone)
        except aiohttp.ClientError as exc:
            raise TeacherError(f"connection error: {self._scrub(str(exc)) or type(exc).__name__}",
                               retryable=True) from None
        finally:
            self._active -= 1

    async def _streamed(self, session: aiohttp.ClientSession, request: dict[str, Any]) -> Reply:
        started = time.monotonic()
        first_byte: float | None = None
        try:
            async with asyncio.timeout(self.first_byte_timeout) as deadline:
                async with session.post(self.url, data=orjson.dumps({**request, **STREAM_FIELDS})) as resp:
                    if resp.status != 200:
                        body = await resp.read()
                        if resp.status in (400, 422) and b"stream" in body.lower():
                            raise StreamRefused
                        self._check(resp, body)
                    if resp.content_type != "text/event-stream":  # the server ignored `stream`
                        return self._reply(await resp.read())
                    events = EventStream()
                    async for data in resp.content.iter_any():
                        events.feed(data)
                        if first_byte is None and events.events:
                            first_byte = time.monotonic() - started
                            deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)
                        if events.done:
                            await self._drain(resp)
                            break
                    events.end()
        except TimeoutError:
            if first_byte is None:
                reason = f"no first token within {self.first_byte_timeout:g} s"
            else:
                reason = f"reply not finished {self.timeout:g} s after its first token"
            raise TeacherError(reason, retryable=True, timed_out=True) from None
        return events.reply(first_byte if first_byte is not None else time.monotonic() - started)

    @staticmethod
    async def _drain(resp: aiohttp.ClientResponse) -> None:
        """Read what follows `[DONE]` (the end of the body) so the connection can be reused; a server that
        holds the stream open gets DRAIN_S, then the connection is closed."""
        try:
            async with asyncio.timeout(DRAIN_S):
                await resp.content.read()
        except (TimeoutError, aiohttp.ClientError):  # the reply is whole already
            pass

    async def _plain(self, session: aiohttp.ClientSession, request: dict[str, Any], alone: bool) -> Reply:
        timeout = self.timeout
        try:
            async with asyncio.timeout(timeout):
                async with session.post(self.url, data=orjson.dumps(request)) as resp:
                    body = await resp.read()
                    self._check(resp, body)
        except TimeoutError:
            raised = self._raise_timeout(timeout) if not alone else None
            note = f" (it may have waited in the server's queue: timeout now {raised:g} s)" if raised else ""
            raise TeacherError(f"no reply within {timeout:g} s{note}", retryable=True, timed_out=True,
                               raised_timeout=raised) from None
        return self._reply(body)

    def _raise_timeout(self, timed_out: float) -> float | None:
        """Double the timeout after a queue-wait timeout, once per value (requests sent with an older,
        shorter timeout do not raise it again); None when it was not raised."""
        if timed_out != self.timeout or self.timeout >= self.max_timeout:
            return None
        self.timeout = min(self.max_timeout, self.timeout * 2)
        return self.timeout

    def _check(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        """Raise for any status but 200."""
        if resp.status in REFUSED_STATUS:
            raise KeyRefused(self._refusal(resp.status))
        if resp.status != 200:
            raise TeacherError(
                f"HTTP {resp.status}: {self._scrub(body[:200].decode('utf-8', 'replace'))}",
                retryable=resp.status in RETRYABLE_STATUS or resp.status >= 500,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                overload=resp.status in OVERLOAD_STATUS)

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
            prompt, completion, cached = _usage(data.get("usage"))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise TeacherError(f"malformed response body ({type(exc).__name__}: {str(exc)[:80]})",
                               retryable=True) from None
        if not isinstance(text, str):
            raise TeacherError("response has no message content", retryable=True)
        return Reply(text, prompt, completion, choice.get("finish_reason"), cached)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
