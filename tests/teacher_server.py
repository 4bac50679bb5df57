"""A real local HTTP server that plays an OpenAI-compatible teacher, for tests and benchmarks.

It answers `/v1/chat/completions` in every reply format the parser accepts (rotating by request),
in the language of the prompt, can inject faults (429 with Retry-After, 500, hangs, truncated
bodies, reset connections), can demand an API key (refusing others with 401 or 403, echoing the key
it got, as some servers do) and logs the hash of every request it receives.
A request with `stream: true` gets server-sent events (role, content pieces, finish, then the usage when
`stream_options.include_usage` asks for it, then `[DONE]`), unless `stream_mode` says to refuse streaming
(HTTP 400) or to ignore it (plain JSON). With `slots=N` it serves like llama.cpp or Ollama with N slots:
requests wait in a queue for a free slot, then "generate" for `latency` seconds; a client that goes away
before its reply is complete is counted in `abandoned`. `prefix_cache` adds
`usage.prompt_tokens_details.cached_tokens` (64 when the request's system + few-shot prefix was seen before).
It also serves OpenAI's Batch API (`/v1/files`, `/v1/batches`: see FakeBatches) with the same replies.
Run alone: `python tests/teacher_server.py --port 8123 [--latency 0.1] [--fault-rate 0.2] [--slots 1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

FORMATS = {
    "en": [
        "Question:\n{q}\n===\nAnswer:\n{a}\n===\n",
        "User: {q}\nAssistant: {a}\n\n",
        "User: {q}\nGPT: {a}\n",
        "**Question:** {q}\n**Answer:** {a}\n\n",
        "{n}. Q{n}: {q}\nA{n}: {a}\n",
    ],
    "ru": [
        "Вопрос: {q}\nОтвет: {a}\n",
        "Пользователь: {q}\nАссистент: {a}\n\n",
        "**Вопрос：** {q}\n**Ответ：** {a}\n",
        "Вопрос:\n{q}\n===\nОтвет:\n{a}\n===\n",
    ],
    "zh": [
        "问题：{q}\n回答：{a}\n",
        "用户：{q}\n助手：{a}\n\n",
        "问题: {q}\n回答: {a}\n",
        "**用户：**{q}\n**助手：**{a}\n",
    ],
}
QUESTIONS = {"en": "What is shown in the picture?", "ru": "Что изображено на снимке?", "zh": "图片里有什么？"}
TOPIC = {"en": "Topic: the scene\n\n", "ru": "Тема: сцена\n\n", "zh": "主题：场景\n\n"}
WHERE = {"en": ("Where is {ref}?", "{ref} is right there."), "ru": ("Где находится {ref}?", "{ref} находится здесь."),
         "zh": ("{ref}在哪里？", "{ref}就在这里。")}
TRAILING = {"en": "Question: And what else", "ru": "Вопрос: А что ещё", "zh": "问题：还有什么"}


def request_hash(body: dict) -> str:
    """The same hash the engine uses as a unit key."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def language(text: str) -> str:
    """Guess en/ru/zh from the script of the system message."""
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    return "ru" if re.search(r"[а-яА-Я]", text) else "en"


def make_reply(body: dict) -> str:
    """A well-formed reply in the request's language, in a format picked by the request hash."""
    messages = body["messages"]
    lang = language(messages[0]["content"])
    last = messages[-1]["content"]
    if isinstance(last, list):  # a VLM request: text + image
        return vlm_reply(messages[0]["content"], lang)
    scene = last.split("\n")
    first_example = next((m["content"] for m in messages if m["role"] == "assistant"), "")
    is_qa = bool(re.match(r"^(Question|Вопрос|问题)[:：]", first_example))
    if not is_qa:
        return f"{scene[0]} {scene[-1]}".strip() or "A picture."
    pick = int(request_hash(body)[:8], 16)
    fmt = FORMATS[lang][pick % len(FORMATS[lang])]
    if "<st>" in first_example:
        return referring_reply(scene, lang, fmt)
    text = TOPIC[lang] if pick % 3 == 0 else ""
    for n, caption in enumerate(scene[:3], start=1):
        text += fmt.format(n=n, q=f"{QUESTIONS[lang]} ({n})", a=caption or "—")
    if pick % 4 == 0:
        text += TRAILING[lang]
    return text


def vlm_reply(system: str, lang: str) -> str:
    """Six Q&A rounds when the system message asks for labelled turns (to test the 5-round cap), else a caption."""
    if not re.search(r"Question:|Вопрос:|问题：", system):
        return {"en": "A photo. The sign reads \"OPEN\".", "ru": "Фотография. На вывеске написано «OPEN».",
                "zh": "一张照片。招牌上写着“OPEN”。"}[lang]
    fmt = FORMATS[lang][0]
    return "".join(fmt.format(n=n, q=f"{QUESTIONS[lang]} ({n})", a=f"{n}.") for n in range(1, 7))


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a base64 data URL."""
    head, _, payload = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head[:40]
    return head[5:-7], base64.b64decode(payload)


def referring_reply(scene: list[str], lang: str, fmt: str) -> str:
    """Q&A that mark the scene's first two boxed lines; a name with "broken" gets an unclosed tag."""
    text = ""
    for n, line in enumerate([x for x in scene if ": [" in x][:2], start=1):
        name, box = line.rsplit(": ", 1)
        ref = f"<st>{name} {box}" if "broken" in name else f"<st>{name}<ed> {box}"
        question, answer = WHERE[lang]
        text += fmt.format(n=n, q=question.format(ref=ref), a=answer.format(ref=ref))
    return text


@dataclass
class TeacherServer:
    """The server's settings and what it has seen."""

    latency: float = 0.0
    fault_rate: float = 0.0
    hang_s: float = 5.0
    seed: int = 0
    log_path: Path | None = None
    received: list[str] = field(default_factory=list)
    headers_seen: list[dict] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    images: list[tuple[str, bytes]] = field(default_factory=list)
    api_key: str | None = None  # when set, a request without `Bearer <api_key>` gets `auth_status`
    auth_status: int = 401
    slots: int | None = None  # N: requests queue for N slots, each held `latency` s (None: no queue)
    stream_mode: str = "sse"  # how `stream: true` is served: sse | reject (HTTP 400) | ignore (plain JSON)
    prefix_cache: bool = False  # report usage.prompt_tokens_details.cached_tokens
    abandoned: int = 0  # slots mode: requests whose client went away before the reply was complete
    abandoned_queued: int = 0  # ... of them, those that were still waiting for a slot
    completed: int = 0  # slots mode: replies sent in full
    depths: list[int] = field(default_factory=list)  # slots mode: requests at the server when each arrived
    streamed: int = 0  # replies sent as events
    batch_api: FakeBatches = field(default_factory=lambda: FakeBatches())  # /v1/files + /v1/batches

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._log = self.log_path.open("a", buffering=1) if self.log_path else None
        self._gate: asyncio.Semaphore | None = None
        self._at_server = 0
        self._prefixes: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        stream = bool(body.pop("stream", False))  # not part of the unit key: the hash is of the rest
        include_usage = bool((body.pop("stream_options", None) or {}).get("include_usage"))
        key = request_hash(body)
        self.received.append(key)
        self.headers_seen.append(dict(request.headers))
        last = body["messages"][-1]["content"]
        if isinstance(last, list):
            url = next(part["image_url"]["url"] for part in last if part.get("type") == "image_url")
            self.images.append(decode_data_url(url))
        if self._log:
            self._log.write(key + "\n")
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._refuse(request)
        if stream and self.stream_mode == "reject":
            return web.json_response({"error": {"message": "stream is not supported by this server"}}, status=400)
        stream = stream and self.stream_mode == "sse"
        if self.slots:
            return await self._in_slot(request, body, stream, include_usage)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fault_rate and self.rng.random() < self.fault_rate:
            return await self._fault(request)
        text = make_reply(body)
        if stream:
            return await self._stream(request, body, text, include_usage, 0.0)
        return self._plain(body, text)

    def _usage(self, body: dict, text: str) -> dict:
        usage = {"prompt_tokens": 100, "completion_tokens": len(text) // 4 + 1}
        if self.prefix_cache:
            prefix = request_hash({"messages": body["messages"][:-1]})
            usage["prompt_tokens_details"] = {"cached_tokens": 64 if prefix in self._prefixes else 0}
            self._prefixes.add(prefix)
        return usage

    def completion_body(self, body: dict, text: str) -> dict:
        """The chat-completion body of a plain (not streamed) reply: online, and in a batch's output file."""
        return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": self._usage(body, text)}

    def _plain(self, body: dict, text: str) -> web.Response:
        return web.Response(body=orjson.dumps(self.completion_body(body, text)), content_type="application/json")

    async def _stream(self, request: web.Request, body: dict, text: str, include_usage: bool,
                      spread: float) -> web.StreamResponse:
        """The reply as events: the role at once, then the text in pieces `spread` seconds apart in all."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        head = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model")}

        async def send(**fields: object) -> None:
            await resp.write(b"data: " + orjson.dumps({**head, **fields}) + b"\n\n")

        await send(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        step = max(1, len(text) // 4 + 1)
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
        for piece in pieces:
            if spread:
                await asyncio.sleep(spread / len(pieces))
            await send(choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            await send(choices=[], usage=self._usage(body, text))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.streamed += 1
        return resp

    async def _in_slot(self, request: web.Request, body: dict, stream: bool,
                       include_usage: bool) -> web.StreamResponse:
        """Slots mode: queue for a slot, hold it `latency` s; count the clients that leave before the end."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.slots)
        self.depths.append(self._at_server)
        self._at_server += 1
        running = False
        try:
            async with self._gate:
                running = True
                text = make_reply(body)
                if stream:
                    resp = await self._stream(request, body, text, include_usage, self.latency)
                else:
                    await asyncio.sleep(self.latency)
                    resp = self._plain(body, text)
            self.completed += 1
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            self.abandoned += 1
            self.abandoned_queued += not running
            raise
        finally:
            self._at_server -= 1

    def _refuse(self, request: web.Request) -> web.Response:
        """The usual refusal, echoing the key it got (so tests can check the client never prints it)."""
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {given}" if given else "You didn't provide an API key."
        return web.json_response({"error": {"message": message, "type": "invalid_request_error"}},
                                 status=self.auth_status)

    async def _fault(self, request: web.Request) -> web.StreamResponse:
        kind = self.rng.choice(["429", "500", "hang", "truncated", "reset"])
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if kind == "429":
            return web.Response(status=429, headers={"Retry-After": "0.05"}, text="slow down")
        if kind == "500":
            return web.Response(status=500, text="internal error")
        if kind == "hang":
            await asyncio.sleep(self.hang_s)
            return web.Response(status=500, text="late")
        if kind == "truncated":
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "400"})
            await resp.prepare(request)
            await resp.write(b'{"choices": [{"message": {"content": "cut')
            request.transport.close()
            return resp
        request.transport.abort()
        return web.Response(status=500)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        self.batch_api.routes(app, self)
        return app


@dataclass
class FakeBatches:
    """OpenAI's Files + Batches endpoints, answering each request with the reply the online path gets.

    A batch ends `delay` seconds after it is created. On a request's first submission every `fail_every`-th
    line of its batch is answered with an error (error file) and every `drop_every`-th gets no line at all (as
    in an expired batch); a resubmission is answered normally. `create_faults` are used up one per create:
    "lost" creates the batch but answers 500 (the client never learns its id), "refuse" answers 500, "expired"
    answers 400 (a refusal for good).
    `submissions` counts how many times each custom_id was ever submitted in a batch.
    """

    delay: float = 0.0
    fail_every: int = 0
    drop_every: int = 0
    page: int = 100  # most batches per list page
    create_faults: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict] = field(default_factory=dict)  # id -> the batch object, in creation order
    submissions: dict[str, int] = field(default_factory=dict)
    creates: int = 0  # create calls answered (faults included)
    lists: int = 0  # list calls

    def __post_init__(self) -> None:
        self._jobs: dict[str, tuple[float, list[tuple[str, dict, bool]]]] = {}

    def routes(self, app: web.Application, server: TeacherServer) -> None:
        self.server = server
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{id}", self.get)

    def _refused(self, request: web.Request) -> web.Response | None:
        key = self.server.api_key
        if key and request.headers.get("Authorization") != f"Bearer {key}":
            return self.server._refuse(request)
        return None

    def _add_file(self, data: bytes, purpose: str) -> dict:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": purpose}

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        form = await request.post()
        if form.get("purpose") != "batch" or not hasattr(form.get("file"), "file"):
            return web.json_response({"error": {"message": "expected purpose=batch and a file"}}, status=400)
        return web.json_response(self._add_file(form["file"].file.read(), "batch"))

    async def content(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        data = self.files.get(request.match_info["id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = orjson.loads(await request.read())
        data = self.files.get(body.get("input_file_id"))
        if data is None or body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return web.json_response({"error": {"message": "bad batch request"}}, status=400)
        self.creates += 1
        fault = self.create_faults.pop(0) if self.create_faults else None
        if fault == "refuse":
            return web.Response(status=500, text="internal error")
        if fault == "expired":  # refused for good, as for an input file the server no longer has
            return web.json_response({"error": {"message": "input file expired"}}, status=400)
        lines = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        batch_id = f"batch_{len(self.batches) + 1:04d}"
        jobs = []
        for line in lines:
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions", line
            self.submissions[line["custom_id"]] = self.submissions.get(line["custom_id"], 0) + 1
            jobs.append((line["custom_id"], line["body"], self.submissions[line["custom_id"]] == 1))
        assert len({custom_id for custom_id, _, _ in jobs}) == len(jobs), "duplicate custom_id in a batch"
        self._jobs[batch_id] = (time.monotonic(), jobs)
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": "24h", "status": "validating", "created_at": int(time.time()),
            "output_file_id": None, "error_file_id": None, "errors": None,
            "request_counts": {"total": len(jobs), "completed": 0, "failed": 0}}
        if fault == "lost":
            return web.Response(status=500, text="internal error")
        return web.json_response(self.batches[batch_id])

    def _advance(self, batch: dict) -> dict:
        """The batch as it stands now: in progress until `delay` has passed, then completed with its files."""
        started, jobs = self._jobs[batch["id"]]
        if batch["status"] == "completed":
            return batch
        done = time.monotonic() - started >= self.delay
        if not done:
            batch["status"] = "in_progress"
            share = (time.monotonic() - started) / self.delay
            batch["request_counts"]["completed"] = int(len(jobs) * share)
            return batch
        output, errors = [], []
        for n, (custom_id, body, first) in enumerate(jobs, start=1):
            line = {"id": f"batch_req_{n}", "custom_id": custom_id, "error": None}
            if first and self.fail_every and n % self.fail_every == 0:
                errors.append({**line, "response": {"status_code": 400, "request_id": f"req_{n}", "body": {
                    "error": {"message": f"fake failure of request {n}", "type": "invalid_request_error"}}}})
            elif not (first and self.drop_every and n % self.drop_every == 0):
                reply = self.server.completion_body(body, make_reply(body))
                output.append({**line, "response": {"status_code": 200, "request_id": f"req_{n}", "body": reply}})
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                batch[name] = self._add_file(b"".join(orjson.dumps(r) + b"\n" for r in rows), "batch_output")["id"]
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(jobs), "completed": len(output), "failed": len(errors)}
        return batch

    async def get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(self._advance(batch))

    async def list(self, request: web.Request) -> web.Response:
        """Newest first, `limit` (at most `page`) per page after the `after` cursor."""
        if (refused := self._refused(request)) is not None:
            return refused
        self.lists += 1
        ids = list(reversed(self.batches))
        after = request.query.get("after")
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        limit = min(int(request.query.get("limit", 20)), self.page)
        data = [self._advance(self.batches[i]) for i in ids[:limit]]
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": len(ids) > limit})


class ServerThread:
    """Runs a TeacherServer on 127.0.0.1 in a background thread (for in-process tests)."""

    def __init__(self, server: TeacherServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        # slots mode must see a client leave (as llama.cpp does): its handler is then cancelled
        self.runner = web.AppRunner(self.server.app(), access_log=None,
                                    handler_cancellation=self.server.slots is not None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--api-key", help="refuse requests without this bearer key (HTTP 401)")
    parser.add_argument("--slots", type=int, help="queue requests for N slots, each held --latency s")
    parser.add_argument("--prefix-cache", action="store_true", help="report usage cached_tokens")
    parser.add_argument("--batch-delay", type=float, default=0.0, help="seconds a batch takes to complete")
    parser.add_argument("--batch-fail-every", type=int, default=0, help="fail every k-th request of a batch")
    args = parser.parse_args()
    server = TeacherServer(latency=args.latency, fault_rate=args.fault_rate, log_path=args.log, api_key=args.api_key,
                           slots=args.slots, prefix_cache=args.prefix_cache,
                           batch_api=FakeBatches(args.batch_delay, args.batch_fail_every))
    web.run_app(server.app(), host="127.0.0.1", port=args.port, access_log=None, print=None,
                handler_cancellation=args.slots is not None)


if __name__ == "__main__":
    main()
