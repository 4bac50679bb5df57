"""Generation at scale: the .jsonl output grows as units finish and survives kill -9 exactly once, the budget
cap stops a run and a higher cap continues it, the compact ledger rebuilds every request (and a first-format
ledger is still read), units go out grouped by prompt prefix, and a tokenizer makes dry runs exact."""

from __future__ import annotations

import itertools
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from conftest import answered_keys, make_caps_boxes, read_records, run_cli, start_server_process
from teacher_server import ServerThread, TeacherServer
from visinstruct.generate.ledger import Ledger
from visinstruct.generate.units import request_key

V1_SCHEMA = """CREATE TABLE units (key TEXT PRIMARY KEY, unit_id TEXT NOT NULL, status TEXT NOT NULL,
    request TEXT NOT NULL, reply TEXT, finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL)"""


def _generate(caps: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "visinstruct", "generate", "--caps-boxes", str(caps), "--out", str(out),
            "--base-url", base_url, "--model", "m", "--no-progress", *extra]


def test_jsonl_grows_and_kill_9_leaves_whole_lines_then_each_unit_once(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 80)
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.02)
    out, ledger = tmp_path / "out.jsonl", tmp_path / "out.jsonl.ledger.sqlite"
    cmd = _generate(caps, out, base_url, "--concurrency", "4")
    try:
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while len(answered_keys(ledger)) < 100 and time.time() < deadline:
            time.sleep(0.01)
        grown = out.read_bytes() if out.exists() else b""
        run.send_signal(signal.SIGKILL)
        run.wait()
        killed = out.read_bytes()
        answered = answered_keys(ledger)
        mark = len(log.read_text().splitlines())
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait()
    assert grown.count(b"\n") >= 50  # the file grew while the run went on
    lines = killed.split(b"\n")
    for line in lines[:-1]:
        json.loads(line)  # every complete line is a whole record (a torn last line is cut by the re-run)
    assert 100 <= len(answered) < 240
    assert rerun.returncode == 0, rerun.stderr
    assert not set(log.read_text().splitlines()[mark:]) & answered  # nothing answered is asked again
    records = read_records(out)
    ids = [r["id"] for r in records]
    rejects = read_records(tmp_path / "out.rejects.jsonl")
    assert len(ids) == len(set(ids))  # exactly once
    assert len({i.rsplit("-t", 1)[0] for i in ids}) + len(rejects) == 240
    again = run_cli(*cmd[3:])  # a third run: nothing sent, nothing appended
    assert again.returncode == 0 and out.read_bytes().count(b"\n") == len(records)
    whole = out.read_bytes()
    out.write_bytes(whole[:-25])  # as if killed after the last unit's commit, while its lines were written
    fourth = run_cli(*cmd[3:])
    assert fourth.returncode == 0, fourth.stderr
    assert sorted(read_records(out), key=lambda r: r["id"]) == sorted(records, key=lambda r: r["id"])


def test_max_cost_stops_within_a_window_and_a_higher_cap_continues(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 40)
    server = ServerThread(TeacherServer(latency=0.01))
    out = tmp_path / "out.json"
    prices = ["--tasks", "conversation", "--price-in", "2", "--price-out", "8", "--max-tokens", "200",
              "--concurrency", "4"]
    base = ["generate", "--caps-boxes", str(caps), "--out", str(out), "--base-url", server.base_url, "--model", "m",
            "--no-progress", *prices]
    try:
        low = run_cli(*base, "--max-cost", "0.02")
        sent_low = list(server.server.received)
        with sqlite3.connect(tmp_path / "out.json.ledger.sqlite") as db:
            prompt, completion = db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM units").fetchone()
        high = run_cli(*base, "--max-cost", "1")
        sent_high = server.server.received[len(sent_low):]
    finally:
        server.stop()
    assert low.returncode == 0, low.stderr
    assert "budget:" in low.stderr and "--max-cost 0.02" in low.stderr
    spent = (prompt * 2 + completion * 8) / 1e6
    assert spent <= 0.02  # never above the cap
    # within one in-flight window: the units left could not all have fit (4 more at their most would cross it)
    per_unit = spent / len(sent_low)
    assert 0.02 - spent < 4 * (per_unit + 200 * 8 / 1e6)
    assert 0 < len(sent_low) < 40
    assert high.returncode == 0, high.stderr
    assert len(sent_high) == 40 - len(sent_low) and not set(sent_high) & set(sent_low)  # nothing asked twice
    assert len(read_records(out)) == 40


def test_max_tokens_total_and_missing_prices(tmp_path: Path, teacher: ServerThread) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 10)
    base = ["generate", "--caps-boxes", str(caps), "--out", str(tmp_path / "o.json"), "--base-url",
            teacher.base_url, "--model", "m", "--no-progress", "--tasks", "conversation"]
    no_price = run_cli(*base, "--max-cost", "1")
    assert no_price.returncode == 2 and "--max-cost needs the prices" in no_price.stderr
    assert not (tmp_path / "o.json").exists()
    capped = run_cli(*base, "--max-tokens-total", "1500", "--max-tokens", "100", "--concurrency", "1")
    assert capped.returncode == 0, capped.stderr
    assert "--max-tokens-total 1,500" in capped.stderr
    with sqlite3.connect(tmp_path / "o.json.ledger.sqlite") as db:
        (used,) = db.execute("SELECT SUM(prompt_tokens + completion_tokens) FROM units").fetchone()
    assert 0 < used <= 1500 and 0 < len(teacher.server.received) < 10


def test_compact_ledger_rebuilds_requests_and_reads_a_first_format_ledger(tmp_path: Path,
                                                                           teacher: ServerThread) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 30)
    out = tmp_path / "out.json"
    args = ["generate", "--caps-boxes", str(caps), "--out", str(out), "--base-url", teacher.base_url,
            "--model", "m", "--no-progress"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "out.json.ledger.sqlite"
    ledger = Ledger(path)
    keys = sorted(ledger.answered_keys())
    requests = {key: ledger.request(key) for key in keys}
    ledger.close()
    assert len(keys) == 90 and all(request_key(r) == k for k, r in requests.items())  # rebuilt exactly
    with sqlite3.connect(path) as db:
        (prefixes,) = db.execute("SELECT COUNT(*) FROM prefixes").fetchone()
        (per_unit,) = db.execute("SELECT AVG(LENGTH(last)) FROM units").fetchone()
        rows = db.execute("SELECT key, unit_id, status, reply, finish_reason, prompt_tokens, completion_tokens "
                          "FROM units").fetchall()
    assert prefixes == 3  # one per task: system prompt and few-shot examples stored once
    full = sum(len(orjson.dumps(r)) for r in requests.values()) / len(requests)
    assert per_unit < full / 5, (per_unit, full)
    old = tmp_path / "old.sqlite"  # the same answers in the first format (a full request per row)
    with sqlite3.connect(old) as db:
        db.execute(V1_SCHEMA)
        db.executemany("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, 0)",
                       [(k, u, s, orjson.dumps(requests[k]).decode(), r, f, p, c) for k, u, s, r, f, p, c in rows])
    sent, old_size = len(teacher.server.received), old.stat().st_size
    again = run_cli(*args[:4], str(tmp_path / "again.json"), *args[5:], "--ledger", str(old))
    assert again.returncode == 0, again.stderr
    assert "converting" in again.stderr and "from ledger: 90" in again.stderr
    assert len(teacher.server.received) == sent  # nothing asked again
    assert read_records(tmp_path / "again.json") == read_records(out)
    with sqlite3.connect(old) as db:
        assert "request" not in {row[1] for row in db.execute("PRAGMA table_info(units)")}
    assert old.stat().st_size < old_size / 2  # vacuumed: the full requests' pages are given back


def test_units_go_out_grouped_by_prompt_prefix_and_cached_tokens_are_kept(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 12)
    seen: list[str] = []

    class Spy(TeacherServer):
        async def handle(self, request: web.Request) -> web.StreamResponse:
            seen.append(orjson.loads(await request.read())["messages"][0]["content"][:40])
            return await super().handle(request)

    server = ServerThread(Spy(prefix_cache=True))
    try:
        result = run_cli("generate", "--caps-boxes", str(caps), "--out", str(tmp_path / "o.jsonl"), "--base-url",
                         server.base_url, "--model", "m", "--no-progress", "--concurrency", "1")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    changes = sum(1 for a, b in itertools.pairwise(seen) if a != b)
    assert len(seen) == 36 and changes == 2  # three tasks, each one's requests back to back
    with sqlite3.connect(tmp_path / "o.jsonl.ledger.sqlite") as db:
        cached = [row[0] for row in db.execute("SELECT cached_tokens FROM units")]
    assert len(cached) == 36 and sum(1 for c in cached if c) >= 33  # all but each prefix's first


def _tokenizer(path: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    words = [f"w{i}" for i in range(50)]
    tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_dry_run_counts_with_a_tokenizer(tmp_path: Path, teacher: ServerThread) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 5)
    tokenizer = _tokenizer(tmp_path / "tokenizer.json")
    base = ["generate", "--caps-boxes", str(caps), "--out", str(tmp_path / "o.json"), "--base-url",
            teacher.base_url, "--model", "m", "--tasks", "conversation", "--dry-run"]
    estimated = run_cli(*base)
    exact = run_cli(*base, "--tokenizer", str(tokenizer))
    assert estimated.returncode == 0 and exact.returncode == 0, exact.stderr
    assert "estimated tokens: ~" in estimated.stderr
    line = next(x for x in exact.stderr.splitlines() if "counted with the tokenizer" in x)
    assert line != next(x for x in estimated.stderr.splitlines() if "estimated tokens" in x)
    missing = run_cli(*base, "--tokenizer", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "--tokenizer" in missing.stderr


def test_units_stream_requests_go_out_before_the_input_is_read(tmp_path: Path, teacher: ServerThread) -> None:
    from visinstruct.generate.stage import GenerateOptions, generate_scenes
    from visinstruct.sources.scene import Box, Scene
    from visinstruct.teachers.factory import TeacherConfig

    pulled = {"scenes": 0, "at_first_request": None}

    def scenes() -> Iterator[Scene]:  # a generator: the engine may read it only once
        for i in range(6000):
            if teacher.server.received and pulled["at_first_request"] is None:
                pulled["at_first_request"] = i
            pulled["scenes"] = i + 1
            yield Scene(f"{i:06d}", f"{i:06d}.jpg", [f"A dog number {i} in a park."],
                        [Box("dog", [0.1, 0.1, 0.5, 0.5])], "test")

    config = TeacherConfig(teacher.base_url, "m", concurrency=8)
    opts = GenerateOptions(out=tmp_path / "o.jsonl", task_names=["conversation"], progress=False)
    config.settle()
    summary = generate_scenes(scenes(), config, opts)
    assert summary.units == 6000 and summary.done == 6000 and pulled["scenes"] == 6000
    # the first request goes out before the input is read: at most four feeds of 1,000 units (read in groups
    # of 256 scenes) are in — the one sent, the one read ahead for the total, and the thread's waiting and next
    assert pulled["at_first_request"] is not None and pulled["at_first_request"] <= 4 * 1000 + 256
    assert len(read_records(tmp_path / "o.jsonl")) == 6000


def test_seen_ids_find_duplicates_across_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    from visinstruct.core import seen

    monkeypatch.setattr(seen, "MERGE", 100)
    ids = seen.SeenIds()
    assert all(ids.add(f"img-{i}") for i in range(1050))
    assert len(ids) == 1050 and len(ids.sorted) == 1000  # ten merges into the sorted array
    assert not ids.add("img-3") and not ids.add("img-1049") and not ids.add("img-999")
    assert ids.add("img-1050")


def test_a_jsonl_this_ledger_did_not_write_is_refused_untouched(tmp_path: Path, teacher: ServerThread) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 4)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"someone": "else"}\n')
    base = ["generate", "--caps-boxes", str(caps), "--out", str(out), "--base-url", teacher.base_url, "--model",
            "m", "--no-progress", "--tasks", "conversation"]
    refused = run_cli(*base)
    assert refused.returncode == 2 and "was not written with the ledger" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and out.read_bytes() == b'{"someone": "else"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caps.jsonl", "out.jsonl"]  # no ledger made
    out.unlink()
    assert run_cli(*base).returncode == 0
    changed = run_cli(*base, "--schema", "llava-instruct-ru")  # its own file, other settings: written afresh
    assert changed.returncode == 0 and {tuple(sorted(r)) for r in read_records(out)} == {
        ("conversations", "id", "image", "type")}
    ray_cap = run_cli(*base, "--executor", "ray", "--workers", "2", "--max-tokens-total", "100")
    assert ray_cap.returncode == 2 and "--executor local" in ray_cap.stderr


def test_a_bad_line_past_the_first_chunks_stops_with_one_line_after_storing_answers(tmp_path: Path) -> None:
    """Units are made in a thread ahead of the requests: an input error found there still ends the run with one
    line naming the file and line (exit 2), what was answered is in the ledger, and nothing is asked twice."""
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 900)
    lines = caps.read_text().splitlines(keepends=True)
    lines[799] = '{"id": "broken", "captions": \n'
    caps.write_text("".join(lines))
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.0)
    out = tmp_path / "out.jsonl"
    try:
        first = run_cli(*_generate(caps, out, base_url, "--concurrency", "8")[3:])
        answered = answered_keys(tmp_path / "out.jsonl.ledger.sqlite")
        lines[799] = lines[798].replace(lines[798][8:20], "999999999999")
        caps.write_text("".join(lines))
        asked = len(log.read_text().splitlines())
        second = run_cli(*_generate(caps, out, base_url, "--concurrency", "8")[3:])
    finally:
        server.kill()
        server.wait()
    assert first.returncode == 2
    message = first.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in first.stderr, first.stderr
    assert "caps.jsonl" in message[0] and "800" in message[0], message[0]
    assert len(answered) >= 900  # the first chunk (1,000 units) was answered and stored, but those in flight
    assert second.returncode == 0, second.stderr
    assert not set(log.read_text().splitlines()[asked:]) & answered
    ids = [r["id"] for r in read_records(out)]
    assert len(ids) == len(set(ids))


def test_a_ledger_that_cannot_be_written_stops_the_run_in_one_line_and_the_rerun_completes(tmp_path: Path) -> None:
    """A file size limit makes the ledger's commit fail mid-run (as a full disk would): one line, exit 2, no
    line in the .jsonl the ledger does not vouch for; the re-run ends with every unit exactly once."""
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 300)
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.0)
    out = tmp_path / "out.jsonl"
    cmd = _generate(caps, out, base_url)

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    try:
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=limited)
        answered = answered_keys(tmp_path / "out.jsonl.ledger.sqlite")
        asked = len(log.read_text().splitlines())
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait()
    assert first.returncode == 2 and len(first.stderr.strip().splitlines()) == 1, first.stderr
    assert "cannot write the ledger" in first.stderr and "Traceback" not in first.stderr
    assert 0 < len(answered) < 900
    assert second.returncode == 0, second.stderr
    assert not set(log.read_text().splitlines()[asked:]) & answered  # nothing committed is asked again
    ids = [r["id"] for r in read_records(out)]
    assert len(ids) == len(set(ids)) == 900 - len(read_records(tmp_path / "out.rejects.jsonl"))


def test_line_appender_stops_after_a_failed_or_misplaced_write(tmp_path: Path) -> None:
    from visinstruct.core.errors import UserError
    from visinstruct.core.io import LineAppender

    path = tmp_path / "out.jsonl"
    lines = LineAppender(path, 0)
    first, second = lines.encode([{"a": 1}]), lines.encode([{"b": 2}])
    ends = lines.promise(len(first)), lines.promise(len(second))
    assert lines.write(first, ends[0]) == ends[0]
    with pytest.raises(UserError, match="out of step"):  # a unit's lines would not end where the ledger says
        lines.write(first, ends[0])
    with pytest.raises(UserError, match="out of step"):  # and nothing is written after that
        lines.write(second, ends[1])
    lines.close()
    assert path.read_bytes() == first
    folder = tmp_path / "taken"
    folder.mkdir()
    broken = LineAppender(folder, 0)
    with pytest.raises(UserError, match="cannot write"):
        broken.write(first)
    with pytest.raises(UserError, match="cannot write"):
        broken.write(second)
