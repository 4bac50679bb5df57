"""Rate limits hold against a real server: requests per minute and tokens per minute."""

import time
from pathlib import Path

from conftest import run_cli
from teacher_server import ServerThread
from visinstruct.teachers.http import parse_retry_after


def test_rpm_limit_spaces_requests(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    start = time.monotonic()
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                     "--base-url", teacher.base_url, "--model", "m", "--limit", "12", "--rpm", "1200",
                     "--concurrency", "64")
    elapsed = time.monotonic() - start
    assert result.returncode == 0
    assert len(teacher.server.received) == 36
    # 20 req/s with one second of burst: 36 requests need at least ~0.8 s of waiting
    assert elapsed > 0.75


def test_tpm_limit_spaces_requests(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    start = time.monotonic()
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"),
                     "--base-url", teacher.base_url, "--model", "m", "--limit", "4", "--tasks", "conversation",
                     "--max-tokens", "100", "--tpm", "60000")
    elapsed = time.monotonic() - start
    assert result.returncode == 0
    # each request reserves ~600 prompt + 100 completion tokens of a 1,000 tokens/s budget
    assert elapsed > 1.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    in_a_while = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < parse_retry_after(in_a_while) <= 31
