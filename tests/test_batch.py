"""`generate --batch` against the test server's fake Batch API: submit, kill, re-attach, collect; nothing lost,
nothing submitted twice, and the same records as the online path."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from PIL import Image

from conftest import make_caps_boxes, read_records, run_cli
from teacher_server import FakeBatches, ServerThread, TeacherServer, decode_data_url
from visinstruct.cli import main
from visinstruct.generate.batch import BatchOptions
from visinstruct.generate.stage import GenerateOptions, generate
from visinstruct.sources import InputSpec
from visinstruct.teachers.factory import TeacherConfig

TASKS = "conversation,detail_description"
KEY = "sk-batch-test-key-5a9c1f"


def serve(**batch: object) -> ServerThread:
    return ServerThread(TeacherServer(batch_api=FakeBatches(**batch)))


def args(caps: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return ["generate", "--caps-boxes", str(caps), "--out", str(out), "--base-url", base_url, "--model", "m",
            "--tasks", TASKS, "--batch-poll", "0.1", *extra]


def records(out: Path) -> set[str]:
    return {json.dumps(r, sort_keys=True) for r in read_records(out)}


def online(tmp_path: Path, caps: Path, server: ServerThread, *extra: str, env: dict | None = None) -> set[str]:
    """The same units asked online (another output and ledger, the same server)."""
    out = tmp_path / "online" / "out.jsonl"
    result = run_cli(*args(caps, out, server.base_url, *extra), env=env)
    assert result.returncode == 0, result.stderr
    return records(out)


def statuses(ledger: Path) -> dict[str, int]:
    with sqlite3.connect(ledger) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM units GROUP BY status").fetchall())


def batch_rows(ledger: Path) -> list[tuple]:
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT input_file, id, status, units FROM batches ORDER BY created").fetchall()


def leftovers(folder: Path) -> list[Path]:
    """Batch scratch files (input files, downloaded results, temporaries) left behind."""
    return [p for p in folder.rglob("*") if ".batch-" in p.name]


def test_submit_only_then_collect_gives_the_online_records(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 15)  # 30 units
    out = tmp_path / "out.jsonl"
    server = serve(delay=0.3)
    fake = server.server.batch_api
    try:
        submit = run_cli(*args(caps, out, server.base_url, "--batch-submit-only", "--batch-max-requests", "8"))
        assert submit.returncode == 0, submit.stderr
        assert fake.creates == 4 and len(fake.submissions) == 30 and set(fake.submissions.values()) == {1}
        assert all(batch_id in submit.stderr for batch_id in fake.batches)
        assert "collect with: visinstruct generate" in submit.stderr and "--batch-collect" in submit.stderr
        assert not out.exists() and server.server.received == []  # nothing online, no output yet
        ledger = tmp_path / "out.jsonl.ledger.sqlite"
        assert statuses(ledger) == {"submitted": 30}
        assert [(row[2], row[3]) for row in batch_rows(ledger)] != [] and all(row[1] for row in batch_rows(ledger))
        assert [f.count(b"\n") for f in list(fake.files.values())[:4]] == [8, 8, 8, 6]
        assert not leftovers(tmp_path)

        collect = run_cli(*args(caps, out, server.base_url, "--batch-collect"))
        assert collect.returncode == 0, collect.stderr
        assert "done: 30" in collect.stderr and "failed: 0" in collect.stderr
        assert "generate: batches: 4" in collect.stderr  # the progress line of each look
        assert fake.creates == 4 and set(fake.submissions.values()) == {1}
        assert statuses(ledger) == {"answered": 30}
        assert {row[2] for row in batch_rows(ledger)} == {"collected"}
        batch = records(out)
        assert len(batch) == 30 and batch == online(tmp_path, caps, server)
        assert len(server.server.received) == 30  # the online run's requests only
        again = run_cli(*args(caps, out, server.base_url, "--batch"))
        assert again.returncode == 0 and "from ledger: 30" in again.stderr
        assert fake.creates == 4 and records(out) == batch
        assert not leftovers(tmp_path)
    finally:
        server.stop()


def test_kill_9_while_polling_then_rerun_reattaches_without_resubmitting(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 15)
    out = tmp_path / "out.jsonl"
    server = ServerThread(TeacherServer(api_key=KEY, batch_api=FakeBatches(delay=1.5)))
    fake = server.server.batch_api
    env = {**os.environ, "BATCH_KEY": KEY}
    command = args(caps, out, server.base_url, "--batch", "--batch-max-requests", "7", "--api-key-env", "BATCH_KEY")
    log = tmp_path / "first.log"
    try:
        with log.open("w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "visinstruct", *command], stderr=stderr, env=env)
            deadline = time.time() + 60
            while "generate: batches:" not in log.read_text() and time.time() < deadline:
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert "generate: batches: 5 (5 in_progress)" in log.read_text()
        assert fake.creates == 5 and not out.exists()
        ledger = tmp_path / "out.jsonl.ledger.sqlite"
        assert statuses(ledger) == {"submitted": 30}
        rerun = run_cli(*command, env=env)
        assert rerun.returncode == 0, rerun.stderr
        assert "done: 30" in rerun.stderr and "0 new batches" in rerun.stderr
        assert fake.creates == 5 and len(fake.submissions) == 30 and set(fake.submissions.values()) == {1}
        assert statuses(ledger) == {"answered": 30}
        assert records(out) == online(tmp_path, caps, server, "--api-key-env", "BATCH_KEY", env=env)
        wrong = "sk-wrong-key-0000"
        refused = run_cli(*args(caps, tmp_path / "refused.jsonl", server.base_url, "--batch", "--api-key-env", "K"),
                          env={**os.environ, "K": wrong})
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "refused the API key (HTTP 401)" in refused.stderr and wrong not in refused.stderr
    finally:
        server.stop()
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.server.headers_seen)  # the online run
    for path in tmp_path.rglob("*"):  # the key reached the server, and no file
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    assert KEY not in rerun.stderr and not leftovers(tmp_path)


def test_per_request_errors_and_missing_lines_fail_and_a_rerun_resubmits_them(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 15)
    out = tmp_path / "out.json"
    server = serve(fail_every=4, drop_every=7)  # per batch of 10: lines 4 and 8 fail, line 7 gets no line
    fake = server.server.batch_api
    try:
        first = run_cli(*args(caps, out, server.base_url, "--batch", "--batch-max-requests", "10", "--price-in", "1000",
                              "--price-out", "3000"))
        assert first.returncode == 0, first.stderr
        assert cost(first.stderr) == pytest.approx(price(first.stderr, 1000, 3000) / 2, abs=1e-4)  # half price
        assert "done: 21" in first.stderr and "failed: 9" in first.stderr
        rejects = read_records(tmp_path / "out.rejects.jsonl")
        reasons = sorted(r["reason"] for r in rejects)
        assert len(rejects) == 9 and all(r["status"] == "failed" for r in rejects)
        assert sum("HTTP 400: fake failure of request" in r for r in reasons) == 6, reasons
        assert sum(r.startswith("not answered in batch batch_000") and r.endswith("(completed)") for r in reasons) == 3
        assert statuses(tmp_path / "out.json.ledger.sqlite") == {"answered": 21, "failed": 9}
        second = run_cli(*args(caps, out, server.base_url, "--batch", "--batch-max-requests", "10"))
        assert second.returncode == 0, second.stderr
        assert "done: 30" in second.stderr and "from ledger: 21" in second.stderr
        assert fake.creates == 4  # the 9 failed units went into one new batch
        assert sorted(fake.submissions.values()) == [1] * 21 + [2] * 9
        assert records(out) == online(tmp_path, caps, server)
    finally:
        server.stop()


def test_a_lost_create_is_adopted_not_made_twice(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 5)  # 10 units
    out = tmp_path / "out.jsonl"
    server = serve(create_faults=["lost"], page=2)
    fake = server.server.batch_api
    try:
        command = args(caps, out, server.base_url, "--batch", "--retries", "0")
        first = run_cli(*command)
        assert first.returncode == 2 and first.stderr.count("\n") == 1, first.stderr
        assert "creating the batch of file-0001 failed" in first.stderr and "Traceback" not in first.stderr
        ledger = tmp_path / "out.jsonl.ledger.sqlite"
        assert batch_rows(ledger) == [("file-0001", None, "uploaded", 10)] and statuses(ledger) == {"submitted": 10}
        other = run_cli(*args(caps, tmp_path / "other.jsonl", server.base_url, "--batch-submit-only", "--limit", "2",
                              "--batch-max-requests", "1", "--model", "other"))  # newer batches: 2 pages of 2
        assert other.returncode == 0, other.stderr
        assert fake.creates == 5 and len(fake.batches) == 5
        second = run_cli(*command)
        assert second.returncode == 0, second.stderr
        assert "done: 10" in second.stderr
        assert fake.creates == 5 and fake.lists == 3  # adopted from the third page, not created again
        assert batch_rows(ledger)[0][:3] == ("file-0001", "batch_0001", "collected")
        assert len(fake.submissions) == 14 and set(fake.submissions.values()) == {1}
    finally:
        server.stop()
    # in one run: a refused create, then a lost one, then the batch is found and adopted
    server = serve(create_faults=["refuse", "lost"])
    fake = server.server.batch_api
    try:
        result = run_cli(*args(caps, tmp_path / "retry.jsonl", server.base_url, "--batch", "--retries", "3",
                               "--backoff", "0.01"))
        assert result.returncode == 0, result.stderr
        assert "done: 10" in result.stderr
        assert fake.creates == 2 and list(fake.batches) == ["batch_0001"] and set(fake.submissions.values()) == {1}
    finally:
        server.stop()


def test_budget_cuts_the_batch_and_the_cost_is_discounted(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 15)
    out = tmp_path / "out.jsonl"
    server = serve()
    fake = server.server.batch_api
    try:
        dry = run_cli(*args(caps, out, server.base_url, "--max-tokens", "100", "--dry-run"))
        prompt = int(dry.stderr.split("tokens: ~")[1].split(" prompt")[0].replace(",", ""))
        cap = int((prompt + 30 * 100) / 30 * 12)  # room for about 12 of the 30 units at their most
        capped = run_cli(*args(caps, out, server.base_url, "--batch", "--max-tokens", "100",
                               "--max-tokens-total", str(cap)))
        assert capped.returncode == 0, capped.stderr
        sent = len(fake.submissions)
        assert 6 <= sent < 30 and "budget:" in capped.stderr and "--max-tokens-total" in capped.stderr
        assert f"done: {sent}" in capped.stderr
        full = run_cli(*args(caps, out, server.base_url, "--batch", "--max-tokens", "100", "--price-in", "1000",
                             "--price-out", "3000", "--batch-discount", "0.25"))
        assert full.returncode == 0 and "done: 30" in full.stderr, full.stderr
        assert len(fake.submissions) == 30 and set(fake.submissions.values()) == {1}
        assert cost(full.stderr) == pytest.approx(price(full.stderr, 1000, 3000) * 0.25, abs=1e-4)
    finally:
        server.stop()


def cost(stderr: str) -> float:
    return float(stderr.split("cost: ")[1].split()[0].replace(",", ""))


def price(stderr: str, price_in: float, price_out: float) -> float:
    """The full price of this run's tokens, from its summary line."""
    tokens = stderr.split("tokens: ")[1].split("\n")[0]
    prompt, completion = (int(tokens.split(kind)[0].split()[-1].replace(",", ""))
                          for kind in (" prompt", " completion"))
    return (prompt * price_in + completion * price_out) / 1e6


def test_vlm_batch_sends_the_image_and_fails_a_bad_one(tmp_path: Path) -> None:
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(images / "red.jpg", quality=85)
    Image.new("RGB", (40, 40), (10, 120, 200)).save(images / "blue.png")
    (images / "empty.jpg").write_bytes(b"")
    server = serve()
    fake = server.server.batch_api
    try:
        common = ["generate", "--images", str(images), "--base-url", server.base_url, "--model", "vlm",
                  "--batch-poll", "0.1", "--tasks", "captioning"]
        batch = run_cli(*common, "--out", str(tmp_path / "batch.jsonl"), "--batch")
        assert batch.returncode == 0, batch.stderr
        assert "done: 2" in batch.stderr and "failed: 1" in batch.stderr
        (reject,) = read_records(tmp_path / "batch.rejects.jsonl")
        assert "bad image" in reject["reason"] and "empty.jpg" in reject["reason"]
        lines = [orjson.loads(line) for line in fake.files["file-0001"].splitlines()]
        mimes = sorted(decode_data_url(line["body"]["messages"][-1]["content"][1]["image_url"]["url"])[0]
                       for line in lines)
        assert mimes == ["image/jpeg", "image/png"]
        on = run_cli(*common, "--out", str(tmp_path / "online.jsonl"))
        assert on.returncode == 0, on.stderr
        assert records(tmp_path / "batch.jsonl") == records(tmp_path / "online.jsonl")
    finally:
        server.stop()


def test_input_files_stop_at_the_size_limit(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 10)
    server = serve()
    fake = server.server.batch_api
    try:
        inputs = InputSpec("text", None, None, caps, None, None, "", None)
        teacher = TeacherConfig(server.base_url, "m")
        opts = GenerateOptions(out=tmp_path / "out.json", task_names=TASKS.split(","), progress=False,
                               batch=BatchOptions(poll=0.05, max_bytes=12_000))
        summary = generate(inputs, teacher, opts)
        assert summary.done == 20
        uploaded = [data for name, data in fake.files.items() if name in {b["input_file_id"]
                                                                          for b in fake.batches.values()}]
        assert len(uploaded) > 1 and all(len(data) <= 12_000 for data in uploaded)
        lines = [orjson.loads(line) for data in uploaded for line in data.splitlines()]
        assert len(lines) == 20 and {line["url"] for line in lines} == {"/v1/chat/completions"}
        assert all(line["method"] == "POST" and line["body"]["model"] == "m" for line in lines)
        assert set(fake.submissions) == {line["custom_id"] for line in lines}
    finally:
        server.stop()


@pytest.mark.parametrize(("extra", "message"), [
    (("--batch",), "--batch needs a server with a Batch API"),
    (("--batch", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--executor", "ray"), "drop --executor ray"),
    (("--batch-submit-only", "--batch-collect", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
     "not both"),
])
def test_what_batch_mode_refuses(tmp_path: Path, extra: tuple[str, ...], message: str,
                                 capsys: pytest.CaptureFixture) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 2)
    assert main(["generate", "--caps-boxes", str(caps), "--out", str(tmp_path / "out.jsonl"), *extra]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.count("\n") == 1, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caps.jsonl"]


def test_presence_units_are_made_here_not_put_in_a_batch(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 12)
    out = tmp_path / "out.jsonl"
    server = serve(delay=0.1)
    fake = server.server.batch_api
    try:
        result = run_cli("generate", "--caps-boxes", str(caps), "--out", str(out), "--base-url", server.base_url,
                         "--model", "m", "--tasks", "presence,conversation", "--batch-poll", "0.1", "--batch")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    made = read_records(out)
    presence = [r for r in made if r["task"] == "presence"]
    assert presence and len([r for r in made if r["task"] == "conversation"]) == 12
    assert len(fake.submissions) == 12  # the conversation units only
    assert all(b"visinstruct:presence" not in body for body in fake.files.values())


def test_a_batch_refused_for_good_releases_its_units_for_the_next_run(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 6)  # 12 units
    out = tmp_path / "out.jsonl"
    server = serve(create_faults=["expired"])
    fake = server.server.batch_api
    try:
        first = run_cli(*args(caps, out, server.base_url, "--batch"))
        ledger = tmp_path / "out.jsonl.ledger.sqlite"
        after_first = statuses(ledger)
        second = run_cli(*args(caps, out, server.base_url, "--batch"))
    finally:
        server.stop()
    assert first.returncode == 0, first.stderr
    assert "refused the batch of input file" in first.stderr and "input file expired" in first.stderr
    assert after_first == {"failed": 12}  # released, not stuck as submitted
    assert second.returncode == 0 and "done: 12" in second.stderr, second.stderr
    assert statuses(ledger) == {"answered": 12} and set(fake.submissions.values()) == {1}
