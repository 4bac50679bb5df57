"""Adaptive concurrency and honest progress: the AIMD window, streamed replies timed from their first token,
the timeout raised after queue waits without streaming, and progress lines in logs."""

from __future__ import annotations

import asyncio
import heapq
import io
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import make_caps_boxes, read_records, run_cli
from teacher_server import ServerThread, TeacherServer
from visinstruct.core.errors import UserError
from visinstruct.core.report import Progress, duration
from visinstruct.generate.limits import AIMD, Window
from visinstruct.teachers.base import TeacherError
from visinstruct.teachers.http import EventStream, HTTPTeacher

REQUEST = {"model": "m", "max_tokens": 50, "temperature": 0.7,
           "messages": [{"role": "system", "content": "Describe the scene."},
                        {"role": "user", "content": "A dog in a park.\nA dog."}]}


# --- the controller, on simulated servers ---------------------------------------------------------------------

def simulate(control: AIMD, slots: int, service: float, requests: int) -> list[int]:
    """Drive `control` against a server with `slots` slots and a FIFO queue, each request holding a slot for
    `service` s; the first token comes when a slot takes the request. Returns the in-flight count at each send."""
    clock, free = 0.0, [0.0] * slots
    done: list[tuple[float, int, object, float]] = []
    in_flight = sent = 0
    seen = []
    while sent < requests or done:
        while sent < requests and in_flight < control.allowed:
            in_flight += 1
            seen.append(in_flight)
            start = max(clock, heapq.heappop(free))
            heapq.heappush(free, start + service)
            heapq.heappush(done, (start + service, sent, control.ticket(in_flight), start - clock))
            sent += 1
        clock, _, ticket, first_byte = heapq.heappop(done)
        in_flight -= 1
        control.on_reply(ticket, first_byte)
    return seen


def test_single_slot_server_is_driven_at_one_or_two() -> None:
    control = AIMD(ceiling=16)
    seen = simulate(control, slots=1, service=3.0, requests=60)
    assert max(seen[:6]) == 4  # the start window
    assert max(seen[10:]) <= 2 and control.allowed <= 2


def test_batched_server_keeps_its_slots_busy() -> None:
    control = AIMD(ceiling=64)
    seen = simulate(control, slots=8, service=3.0, requests=600)
    tail = seen[-200:]
    assert max(seen) <= 3 * 8  # slow start overshoots while the first queued replies are out, then backs off
    assert sum(tail) / len(tail) >= 6  # and does not collapse below the server's 8 slots


def test_fast_server_reaches_the_ceiling_by_slow_start() -> None:
    control = AIMD(ceiling=32)
    seen = simulate(control, slots=256, service=1.0, requests=200)
    assert control.allowed == 32 and control.epoch == 0
    # doubling per round (4 -> 6 -> 12 -> 24 -> 32): the ceiling within ~4 + 6 + 12 + 24 + 24 sends
    assert max(seen[:70]) == 32


def test_overload_halves_once_per_round_and_stale_tickets_count_for_nothing() -> None:
    control = AIMD(ceiling=16, start=8)
    old = [control.ticket(8) for _ in range(3)]
    control.on_overload(old[0])
    assert control.allowed == 4 and control.epoch == 1
    control.on_overload(old[1])  # sent before the back-off: already paid for
    control.on_reply(old[2], 0.01)  # nor does a stale reply grow the window
    assert control.allowed == 4
    fresh = control.ticket(4)
    control.on_overload(fresh)
    assert control.allowed == 2
    for _ in range(5):
        control.on_overload(control.ticket(1))
    assert control.allowed == 1 and control.limit == 1.0  # never below one


def test_growth_after_a_back_off_is_additive_and_needs_a_used_window() -> None:
    control = AIMD(ceiling=16, start=8)
    control.on_overload(control.ticket(8))  # 8 -> 4, slow start over
    for _ in range(4):  # one round of four full-window replies: about +1
        control.on_reply(control.ticket(4), 0.01)
    assert control.allowed == 4 and 4.9 < control.limit < 5.0
    before = control.limit
    control.on_reply(control.ticket(1), 0.01)  # less than half the window in use: no evidence to grow on
    assert control.limit == before


def test_rising_first_byte_time_backs_off_but_one_slow_reply_does_not() -> None:
    control = AIMD(ceiling=16, start=8)
    for _ in range(3):
        control.on_reply(control.ticket(8), 0.2)
    assert control.epoch == 0
    control.on_reply(control.ticket(8), 9.0)  # one spike: median of (0.2, 0.2, 9.0) is flat
    assert control.epoch == 0
    control.on_reply(control.ticket(8), 9.0)  # two in three: the server queues
    assert control.epoch == 1 and control.allowed == 5
    control.on_reply(control.ticket(5), None)  # not streamed: no latency signal, a good reply grows
    assert control.epoch == 1 and control.limit > 5.5


def test_window_holds_its_limit_and_hands_room_over_in_order() -> None:
    async def main() -> list[int]:
        window = Window(ceiling=3, adaptive=False)
        order, peak = [], 0

        async def one(i: int) -> None:
            nonlocal peak
            ticket = await window.acquire()
            peak = max(peak, window.in_flight)
            order.append(i)
            await asyncio.sleep(0.01)
            window.release(ticket)

        await asyncio.gather(*(one(i) for i in range(10)))
        blocked = [await window.acquire() for _ in range(3)]
        late = asyncio.create_task(window.acquire())  # a waiter that is cancelled takes no room
        await asyncio.sleep(0.01)
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)
        for ticket in blocked:
            window.release(ticket)
        assert window.in_flight == 0 and not window._waiters and peak == 3
        return order

    assert asyncio.run(main()) == list(range(10))


# --- the HTTP client: streamed replies, fallbacks, the two timeouts ------------------------------------------

def test_event_stream_reads_pieces_split_anywhere() -> None:
    body = (b": keep-alive\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}"
            b"\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xd0\x9f\xd1\x80\xd0\xb8\"}}]}\n\n"
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"vet\"},\"finish_reason\":\"length\"}]}\n\n"
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
            b"\"prompt_tokens_details\":{\"cached_tokens\":5}}}\n\ndata: [DONE]")
    for size in (1, 3, 17, len(body)):
        events = EventStream()
        for i in range(0, len(body), size):
            events.feed(body[i:i + size])
        events.end()
        reply = events.reply(0.5)
        assert (reply.text, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens) == \
            ("Приvet", "length", 7, 3)  # a multi-byte piece, then a plain one
        assert reply.cached_tokens == 5 and reply.first_byte_s == 0.5 and reply.truncated


def test_event_stream_cut_or_malformed_is_a_retryable_error() -> None:
    cut = EventStream()
    cut.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n")
    cut.end()
    with pytest.raises(TeacherError, match="ended before the reply") as info:
        cut.reply(0.1)
    assert info.value.retryable
    for bad in (b"data: {not json\n", b"data: [1, 2]\n", b"data: {\"choices\": [3]}\n",
                b"data: {\"error\": {\"message\": \"overloaded\"}}\n"):
        events = EventStream()
        events.feed(bad + b"data: [DONE]\n")
        with pytest.raises(TeacherError) as info:
            events.reply(0.1)
        assert info.value.retryable


def complete_all(teacher: HTTPTeacher, requests: list[dict]) -> list:
    """Send the requests together; each result is a Reply or the TeacherError it raised."""
    async def main() -> list:
        try:
            return await asyncio.gather(*(teacher.complete(r) for r in requests), return_exceptions=True)
        finally:
            await teacher.close()
    return asyncio.run(main())


def test_streamed_reply_equals_the_plain_one_with_usage_and_cache() -> None:
    thread = ServerThread(TeacherServer(prefix_cache=True))
    try:
        streamed = complete_all(HTTPTeacher(thread.base_url, "m"), [REQUEST])[0]
        plain = complete_all(HTTPTeacher(thread.base_url, "m", stream=False), [REQUEST])[0]
    finally:
        thread.stop()
    assert thread.server.streamed == 1 and len(set(thread.server.received)) == 1  # same key either way
    assert streamed.text == plain.text and streamed.text
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (plain.prompt_tokens, plain.completion_tokens)
    assert streamed.finish_reason == "stop" and streamed.first_byte_s is not None and plain.first_byte_s is None
    assert (streamed.cached_tokens, plain.cached_tokens) == (0, 64)  # the second time the prefix is cached


@pytest.mark.parametrize("mode", ["reject", "ignore"])
def test_server_that_cannot_stream_is_asked_plainly(mode: str) -> None:
    thread = ServerThread(TeacherServer(stream_mode=mode))
    teacher = HTTPTeacher(thread.base_url, "m")
    try:
        replies = complete_all(teacher, [REQUEST])
        replies += complete_all(teacher, [{**REQUEST, "seed": 1}])
    finally:
        thread.stop()
    assert all(r.text and r.first_byte_s is None for r in replies), replies
    assert thread.server.streamed == 0
    # refused: asked again without streaming, and never streamed again; ignored: read as plain JSON
    assert len(thread.server.received) == (3 if mode == "reject" else 2)
    assert teacher.stream is (mode == "ignore")


def test_first_token_and_body_have_their_own_timeouts() -> None:
    thread = ServerThread(TeacherServer(slots=1, latency=1.0))
    try:
        # one slot: the second request waits 1 s in the queue, longer than its first-byte timeout
        queued = complete_all(HTTPTeacher(thread.base_url, "m", timeout=5, first_byte_timeout=0.5),
                              [REQUEST, {**REQUEST, "seed": 1}])
        slow = complete_all(HTTPTeacher(thread.base_url, "m", timeout=0.3, first_byte_timeout=5), [REQUEST])
    finally:
        thread.stop()
    assert queued[0].text and queued[0].first_byte_s < 0.5
    assert isinstance(queued[1], TeacherError) and "no first token within 0.5 s" in queued[1].reason
    assert isinstance(slow[0], TeacherError) and "not finished 0.3 s after its first token" in slow[0].reason
    assert all(e.timed_out and e.overload and e.retryable for e in (queued[1], slow[0]))


def test_plain_timeout_is_raised_after_a_queue_wait_only() -> None:
    thread = ServerThread(TeacherServer(slots=1, latency=0.6))
    try:
        alone = HTTPTeacher(thread.base_url, "m", timeout=0.3, first_byte_timeout=10, stream=False)
        lone = complete_all(alone, [REQUEST])[0]
        queued = HTTPTeacher(thread.base_url, "m", timeout=1.0, first_byte_timeout=10, stream=False)
        pair = complete_all(queued, [REQUEST, {**REQUEST, "seed": 1}, {**REQUEST, "seed": 2}])
    finally:
        thread.stop()
    assert isinstance(lone, TeacherError) and lone.raised_timeout is None and alone.timeout == 0.3
    assert pair[0].text  # 0.6 s: in time; the next two waited in the queue and timed out
    late = [r for r in pair[1:] if isinstance(r, TeacherError)]
    assert len(late) == 2 and [e.raised_timeout for e in late].count(2.0) == 1  # raised once, not per error
    assert queued.timeout == 2.0 and "server's queue" in " ".join(e.reason for e in late)


# --- progress lines -------------------------------------------------------------------------------------------

def test_progress_lines_in_logs_carry_rate_eta_and_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISINSTRUCT_PROGRESS_S", "0.05")
    stream = io.StringIO()
    with Progress("generate", total=10, stream=stream, unit="req", detail=lambda: "2 in flight") as bar:
        bar.tick()
        assert stream.getvalue() == ""  # not due yet
        time.sleep(0.06)
        bar.tick()  # a stalled run still reports
        bar.update(4)
        time.sleep(0.06)
        bar.update(1)
        bar.note("a note")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("generate: 0/10 req (0/s): 2 in flight")
    assert re.fullmatch(r"generate: 5/10 req \([0-9.]+/s, ETA \d+ s\): 2 in flight", lines[1]), lines
    assert lines[2] == "a note"
    assert duration(42) == "42 s" and duration(185) == "3 min 05 s" and duration(7620) == "2 h 07 min"
    monkeypatch.setenv("VISINSTRUCT_PROGRESS_S", "0")
    with pytest.raises(UserError, match="VISINSTRUCT_PROGRESS_S"):
        Progress("generate", stream=io.StringIO())


# --- acceptance: a single-slot server, end to end --------------------------------------------------------------

PROGRESS = re.compile(r"^generate: (\d+)/9 req \([^)]*\): (\d+) answered, (\d+) failed, (\d+) in flight, "
                      r"concurrency (\d+) \(max 16\)$", re.MULTILINE)


def test_single_slot_server_with_a_short_timeout_finishes_every_unit(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 9)
    thread = ServerThread(TeacherServer(slots=1, latency=3.0, prefix_cache=True))
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    started = time.monotonic()
    try:
        result = run_cli("generate", "--caps-boxes", str(caps), "--tasks", "conversation", "--out", str(out),
                         "--base-url", thread.base_url, "--model", "m", "--concurrency", "16", "--timeout", "5",
                         "--report", str(report), env={**os.environ, "VISINSTRUCT_PROGRESS_S": "1"}, timeout=120)
    finally:
        thread.stop()
    wall = time.monotonic() - started
    server = thread.server
    assert result.returncode == 0, result.stderr
    assert len(read_records(out)) == 9 and "done: 9" in result.stderr and "failed: 0" in result.stderr
    assert server.completed == 9 and len(set(server.received)) == 9
    assert server.abandoned <= 0.1 * len(server.received), (server.abandoned, len(server.received))
    assert max(server.depths[-4:]) <= 1  # once adapted, at most two requests at the server at a time
    lines = PROGRESS.findall(result.stderr)
    assert len(lines) >= 5, result.stderr  # stderr is a pipe here: progress comes as lines
    assert all(int(in_flight) <= 4 for *_, in_flight, _ in lines) and any(" ETA " in x for x in
                                                                         result.stderr.splitlines())
    assert "tokens: 900 prompt (512 cached)" in result.stderr  # 8 of 9 requests reuse the cached prefix
    counts = json.loads(report.read_text())["steps"]["teacher"]["counts"]
    assert counts["cached_tokens"] == 512 and counts["streamed"] == 9 and counts["timeouts"] == 0
    assert 1 <= counts["concurrency"] <= 2 and counts["back_offs"] >= 1
    assert wall < 60


def test_without_streaming_the_timeout_rises_after_queue_waits(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 6)
    thread = ServerThread(TeacherServer(slots=1, latency=2.0))
    out = tmp_path / "out.jsonl"
    try:
        result = run_cli("generate", "--caps-boxes", str(caps), "--tasks", "conversation", "--out", str(out),
                         "--base-url", thread.base_url, "--model", "m", "--concurrency", "16", "--timeout", "3",
                         "--no-stream", "--no-progress", timeout=120)
    finally:
        thread.stop()
    assert result.returncode == 0, result.stderr
    assert len(read_records(out)) == 6 and "failed: 0" in result.stderr
    # a request the client gave up on just as the server finished it counts as completed there too
    assert thread.server.streamed == 0 and thread.server.completed >= 6
    assert "the request timeout is now 6 s" in result.stderr and "request timeout raised" in result.stderr
    assert re.search(r"requests: 0 of 6 answers streamed; [1-9]\d* timed out", result.stderr), result.stderr
