"""Shared fixtures: a real local teacher server, the shared COCO data, a CLI runner."""

from __future__ import annotations

import json
import subprocess
import sys
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
