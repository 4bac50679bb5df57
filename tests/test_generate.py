"""End-to-end generation against a real local OpenAI-compatible teacher server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import answered_keys, read_records, run_cli, start_server_process
from teacher_server import ServerThread, TeacherServer
from visinstruct.generate.prompts import load_pack
from visinstruct.generate.tasks import REGISTRY

TASKS = ("conversation", "detail_description", "complex_reasoning")


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_all_units_parsed(tmp_path: Path, teacher: ServerThread, caps80: Path, lang: str) -> None:
    out = tmp_path / "out.json"
    result = run_cli("generate", "--caps-boxes", str(caps80), "--image-prefix", "coco/val2014/", "--out", str(out),
                     "--base-url", teacher.base_url, "--model", "test-teacher", "--lang", lang)
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert len(records) == 80 * 3 and len(teacher.server.received) == 240
    assert "done: 240" in result.stderr and "rejected: 0" in result.stderr and "failed: 0" in result.stderr
    assert len({r["id"] for r in records}) == 240
    for record in records:
        assert record["lang"] == lang and record["task"] in TASKS
        assert record["source"] == "caps_boxes_80"
        assert record["image"].startswith("coco/val2014/") and record["image"].endswith(".jpg")
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and turns
        assert turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert all(t["value"].strip() for t in turns)
    detail = [r for r in records if r["task"] == "detail_description"]
    instructions = set(load_pack(REGISTRY[("text", "detail_description")], lang).instructions)
    assert all(r["conversations"][0]["value"].removeprefix("<image>\n") in instructions for r in detail)
    assert len({r["conversations"][0]["value"] for r in detail}) > 3  # drawn, not always the same one


def test_resume_requests_nothing_twice_and_output_is_stable(tmp_path: Path, teacher: ServerThread,
                                                           caps80: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ["generate", "--caps-boxes", str(caps80), "--out", str(out), "--base-url", teacher.base_url,
            "--model", "m", "--tasks", "conversation,complex_reasoning", "--limit", "10"]
    assert run_cli(*args).returncode == 0
    first = out.read_bytes()
    assert len(teacher.server.received) == 20
    result = run_cli(*args)
    assert result.returncode == 0 and "from ledger: 20" in result.stderr
    assert len(teacher.server.received) == 20  # nothing requested again
    assert out.read_bytes() == first
    # more scenes: only the new units are requested
    assert run_cli(*args[:-1], "12").returncode == 0
    assert len(teacher.server.received) == 24
    assert len(read_records(out)) == 24


def test_val_split_samples_and_json_vs_jsonl(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    out = tmp_path / "val.json"
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(out), "--base-url", teacher.base_url,
                     "--model", "m", "--split", "val", "--samples-per-image", "2", "--limit", "3",
                     "--tasks", "conversation", "--source", "my-source")
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())  # a json list
    first = [json.loads(line)["id"] for line in caps80.read_text().splitlines()[:3]]
    assert [r["id"] for r in records] == [f"{i}-conversation-{s}" for i in first for s in (0, 1)]
    assert all("<image>" not in t["value"] for r in records for t in r["conversations"])
    assert {r["source"] for r in records} == {"my-source"}
    assert len(set(teacher.server.received)) == 6  # the two samples are different requests


def test_unparseable_reply_is_a_rejected_unit_with_raw_text(tmp_path: Path, caps80: Path) -> None:
    class Refuser(TeacherServer):
        async def handle(self, request):
            from aiohttp import web
            body = json.loads(await request.read())
            if "conversation" in json.dumps(body) and "Question:" in body["messages"][2]["content"]:
                self.received.append("x")
                text = "I am sorry, but I cannot help with that."
                return web.json_response({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                                          "usage": {"prompt_tokens": 5, "completion_tokens": 9}})
            return await super().handle(request)

    server = ServerThread(Refuser())
    try:
        out = tmp_path / "out.json"
        result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(out), "--base-url", server.base_url,
                         "--model", "m", "--limit", "4", "--tasks", "conversation,detail_description")
    finally:
        server.stop()
    assert result.returncode == 0
    assert "rejected: 4" in result.stderr and "done: 4" in result.stderr
    rejects = read_records(tmp_path / "out.rejects.jsonl")
    assert len(rejects) == 4
    assert all(r["status"] == "rejected" and "no question/answer labels" in r["reason"] for r in rejects)
    assert all(r["reply"] == "I am sorry, but I cannot help with that." for r in rejects)


def test_faults_every_unit_done_or_failed_with_reason(tmp_path: Path, caps80: Path) -> None:
    server = ServerThread(TeacherServer(fault_rate=0.2, hang_s=3.0, seed=1))
    try:
        out = tmp_path / "out.json"
        result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(out), "--base-url", server.base_url,
                         "--model", "m", "--timeout", "0.5", "--backoff", "0.02", "--retries", "6",
                         "--concurrency", "32")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    faults = server.server.faults
    assert set(faults) == {"429", "500", "hang", "truncated", "reset"}, faults
    assert sum(faults.values()) >= 30
    records = read_records(out)
    rejects = read_records(tmp_path / "out.rejects.jsonl")
    assert len(records) + len(rejects) == 240
    assert len({r["id"] for r in records} | {r["id"] for r in rejects}) == 240
    assert all(r["status"] == "failed" and r["reason"] for r in rejects)
    assert "retries" in result.stderr


def test_sigkill_midway_then_resume(tmp_path: Path, caps80: Path) -> None:
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.02)
    out, ledger = tmp_path / "out.json", tmp_path / "out.json.ledger.sqlite"
    cmd = [sys.executable, "-m", "visinstruct", "generate", "--caps-boxes", str(caps80), "--out", str(out),
           "--base-url", base_url, "--model", "m", "--concurrency", "4", "--no-progress"]
    (tmp_path / ".out.json.999999.tmp").write_text("[\n{\"half\": ")  # as if killed while writing
    try:
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while len(answered_keys(ledger)) < 60 and time.time() < deadline:
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert not out.exists() or json.loads(out.read_text()) is not None  # never a corrupt output
        answered = answered_keys(ledger)
        assert 60 <= len(answered) < 240
        mark = len(log.read_text().splitlines())
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        server.kill()
        server.wait()
    second_run_requests = log.read_text().splitlines()[mark:]
    assert not set(second_run_requests) & answered  # nothing already answered was asked again
    records = read_records(out)
    ids = [r["id"] for r in records]
    assert len(ids) == 240 and len(set(ids)) == 240
    assert f"from ledger: {len(answered)}" in rerun.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_api_key_reaches_the_server_but_no_file(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    secret = "sk-test-0123456789-SECRET-abcdef"
    env = {**os.environ, "MY_TEACHER_KEY": secret}
    out_dir = tmp_path / "run"
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(out_dir / "out.json"),
                     "--base-url", teacher.base_url, "--model", "m", "--api-key-env", "MY_TEACHER_KEY",
                     "--limit", "5", env=env)
    assert result.returncode == 0, result.stderr
    assert all(h.get("Authorization") == f"Bearer {secret}" for h in teacher.server.headers_seen)
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert len(files) >= 3  # output, rejects, ledger (+ WAL)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stderr and secret not in result.stdout
    missing = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(out_dir / "o2.json"),
                      "--base-url", teacher.base_url, "--model", "m", "--api-key-env", "NOT_SET_ANYWHERE")
    assert missing.returncode == 2 and "NOT_SET_ANYWHERE" in missing.stderr


def test_dry_run_sends_nothing(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                     "--base-url", teacher.base_url, "--model", "m", "--limit", "10",
                     "--price-in", "2.5", "--price-out", "10", "--max-tokens", "500", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "30 requests to send" in result.stderr
    assert "up to 15,000 completion" in result.stderr
    assert "estimated cost" in result.stderr
    assert teacher.server.received == [] and not (tmp_path / "o.json").exists()
    assert not (tmp_path / "o.json.ledger.sqlite").exists()
    args = ["generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"), "--base-url",
            teacher.base_url, "--model", "m", "--max-tokens", "500"]
    assert run_cli(*args, "--limit", "4").returncode == 0  # 12 units answered
    again = run_cli(*args, "--limit", "10", "--dry-run")
    assert "30 units, 12 already in the ledger, 18 requests to send" in again.stderr, again.stderr


def test_cost_line_and_usage_errors(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                     "--base-url", teacher.base_url, "--model", "m", "--limit", "2", "--price-in", "1000000",
                     "--price-out", "0")
    assert result.returncode == 0
    assert "tokens: 600 prompt" in result.stderr and "cost: 600.0000" in result.stderr
    assert run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.txt"),
                   "--base-url", teacher.base_url, "--model", "m").returncode == 2
    assert run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                   "--tasks", "poetry").returncode == 2
    assert run_cli("generate", "--out", str(tmp_path / "o.json")).returncode == 2
    assert run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                   "--base-url", teacher.base_url).returncode == 2
