"""The Batch API client of `generate --batch`: files and batches over the online client's HTTP session, auth
and error handling (`/v1/files`, `/v1/batches`, as OpenAI and vLLM serve them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..core.errors import UserError
from ..core.io import AtomicFile
from ..teachers.base import KeyRefused, Reply, TeacherError, retry_delay
from ..teachers.http import HTTPTeacher

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
DOWNLOAD_CHUNK = 1 << 20


class CreateRefused(Exception):
    """The server refused to make a batch of an input file, and asking again will not change that."""


class BatchAPI(HTTPTeacher):
    """The Files and Batches endpoints of an OpenAI-compatible server.

    A subclass of the chat client so that the key travels, is scrubbed from messages and a refused key is
    reported exactly as for online requests. Calls are retried on 429/5xx/connection errors with backoff.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float) -> None:
        super().__init__(base_url, "", api_key, timeout)
        self.base = base_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self.limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def _once(self, method: str, path: str, data: Callable[[], Any] | None = None,
                    into: Path | None = None) -> bytes:
        """One call; the body of its 200 answer (or, with `into`, the body written to that file)."""
        try:
            async with self._open().request(method, self.base + path, data=data() if data else None,
                                            timeout=self.limits) as resp:
                if resp.status != 200 or into is None:
                    body = await resp.read()
                    self._check(resp, body)
                    return body
                with AtomicFile(into) as handle:
                    async for piece in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                        handle.write(piece)
                return b""
        except aiohttp.ClientError as exc:
            raise TeacherError(f"connection error: {self._scrub(str(exc)) or type(exc).__name__}",
                               retryable=True) from None
        except TimeoutError:
            raise TeacherError(f"no answer within {self.timeout:g} s", retryable=True, timed_out=True) from None

    async def call(self, what: str, method: str, path: str, data: Callable[[], Any] | None = None,
                   into: Path | None = None) -> Any:
        """A call with retries; its JSON answer. A refused key or a final error is a one-line UserError."""
        for attempt in range(self.retries + 1):
            try:
                body = await self._once(method, path, data, into)
                return orjson.loads(body) if body else None
            except KeyRefused as error:
                raise UserError(f"batch API: {error.reason}") from None
            except orjson.JSONDecodeError:
                raise UserError(f"batch API: {what}: the server's answer is not JSON") from None
            except TeacherError as error:
                if not error.retryable or attempt == self.retries:
                    raise UserError(f"batch API: {what} failed: {error.reason}") from None
                await asyncio.sleep(retry_delay(attempt, error, self.backoff))
        raise AssertionError("unreachable")

    async def upload(self, path: Path) -> str:
        """Upload a batch input file; its file id."""
        handles: list[Any] = []

        def form() -> aiohttp.FormData:  # a new form (and file handle) per attempt
            handles.append(path.open("rb"))
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", handles[-1], filename=path.name, content_type="application/jsonl")
            return data
        try:
            answer = await self.call(f"uploading {path.name}", "POST", "/files", form)
        finally:
            for handle in handles:
                handle.close()
        return _field(answer, "id", "the file upload")

    async def get(self, batch_id: str) -> dict[str, Any]:
        """A batch object (a server answering anything else is a one-line error)."""
        batch = await self.call(f"reading batch {batch_id}", "GET", f"/batches/{batch_id}")
        if not isinstance(batch, dict):
            raise UserError(f"batch API: reading batch {batch_id} gave no batch object")
        return batch

    async def find(self, input_file: str) -> dict[str, Any] | None:
        """The batch made from this input file, if the server lists one (every page, newest first)."""
        after = ""
        while True:
            page = await self.call("listing batches", "GET", f"/batches?limit=100{after}")
            items = page.get("data") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise UserError("batch API: listing batches gave no `data` list")
            for item in items:
                if isinstance(item, dict) and item.get("input_file_id") == input_file:
                    return item
            if not page.get("has_more") or not items:
                return None
            last = page.get("last_id") or (items[-1].get("id") if isinstance(items[-1], dict) else None)
            if not last:
                return None
            after = f"&after={last}"

    async def ensure(self, input_file: str, look_first: bool) -> dict[str, Any]:
        """The batch of this input file: adopted when the server lists it, else created. A create that fails
        is retried only after a new look, so an answer lost on the way never makes a second batch."""
        body = orjson.dumps({"input_file_id": input_file, "endpoint": ENDPOINT, "completion_window": WINDOW})
        for attempt in range(self.retries + 1):
            if look_first or attempt:
                found = await self.find(input_file)
                if found is not None:
                    return found
            try:
                answer = await self._once("POST", "/batches", lambda: _json(body))
            except KeyRefused as error:
                raise UserError(f"batch API: {error.reason}") from None
            except TeacherError as error:
                if not error.retryable:  # the server says no for good (e.g. the input file expired)
                    raise CreateRefused(error.reason) from None
                if attempt == self.retries:
                    raise UserError(f"batch API: creating the batch of {input_file} failed: {error.reason}; "
                                    "re-run to resume (the next run adopts or creates it)") from None
                await asyncio.sleep(retry_delay(attempt, error, self.backoff))
                continue
            try:
                batch = orjson.loads(answer)
            except orjson.JSONDecodeError:
                batch = None
            _field(batch, "id", "the batch creation")
            return batch
        raise AssertionError("unreachable")

    async def download(self, file_id: str, into: Path) -> None:
        await self.call(f"downloading {file_id}", "GET", f"/files/{file_id}/content", into=into)

    def parse(self, body: Any) -> Reply:
        """A chat-completion body as the online client reads it (raises TeacherError when malformed)."""
        return self._reply(orjson.dumps(body))


def _json(body: bytes) -> aiohttp.BytesPayload:
    return aiohttp.BytesPayload(body, content_type="application/json")


def _field(answer: Any, name: str, what: str) -> str:
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise UserError(f"batch API: {what} gave no {name}")
    return value
