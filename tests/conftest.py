"""Shared fixtures: a real local teacher server, the shared COCO data, a CLI runner."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from teacher_server import ServerThread, TeacherServer

REPO = Path(__file__).resolve().parents[1]
VAL80 = REPO.parent / "shared" / "data" / "coco2014-val80" / "caps_boxes_coco2014_val_80.jsonl"


@pytest.fixture
def teacher():
    """A fault-free teacher server on 127.0.0.1; yields the ServerThread."""
    thread = ServerThread(TeacherServer())
    yield thread
    thread.stop()


@pytest.fixture
def val80() -> Path:
    """The 80-image caps-boxes file from ../shared/data (skipped where it is absent)."""
    if not VAL80.exists():
        pytest.skip(f"{VAL80} not present")
    return VAL80


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m visinstruct ...` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "visinstruct", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def read_records(path: Path) -> list[dict]:
    """Records from a .json list or a .jsonl file."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def start_server_process(log: Path, latency: float) -> tuple[subprocess.Popen, str]:
    """The teacher server in its own process (it logs the hash of every request it receives)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "teacher_server.py"), "--port", str(port),
                             "--latency", str(latency), "--log", str(log)])
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("teacher server did not start")


def answered_keys(ledger: Path) -> set[str]:
    """Answered keys of a ledger another process may be writing (a busy database is read again)."""
    for _ in range(50):
        if not ledger.exists():
            return set()
        try:
            with sqlite3.connect(ledger, timeout=5) as db:
                return {row[0] for row in db.execute("SELECT key FROM units WHERE status = 'answered'")}
        except sqlite3.OperationalError:  # the writer is creating the schema or holds a lock
            time.sleep(0.05)
    raise AssertionError(f"{ledger}: stayed locked")
