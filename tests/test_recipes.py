"""Published recipes: `--task-mix` (one task per image, exact counts) and `--schema` (each set's record keys)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import read_records, run_cli
from teacher_server import ServerThread
from test_visual_genome import write_vg
from visinstruct.core.errors import UserError
from visinstruct.generate.task_mix import assign_tasks, parse_task_mix

ZH_MIX = "dialogue=247431,complex_reasoning=194646,captioning=199791"


def test_counts_are_exact_one_task_per_image_and_seeded() -> None:
    mix = parse_task_mix(ZH_MIX)
    assert mix.exact and mix.total == 641_868
    ids = [str(i) for i in range(700_000)]
    chosen = assign_tasks(ids, mix, seed=0)
    counts = Counter(chosen)
    assert counts == {"dialogue": 247_431, "complex_reasoning": 194_646, "captioning": 199_791, None: 58_132}
    assert assign_tasks(ids, mix, seed=0) == chosen  # a re-run (resume) sees the same assignment
    other = assign_tasks(ids, mix, seed=1)
    assert Counter(other) == counts and other != chosen


def test_weights_follow_the_ratio_and_survive_added_scenes() -> None:
    mix = parse_task_mix("dialogue=0.5,captioning=0.25,complex_reasoning=0.25")
    assert not mix.exact
    ids = [f"img{i}" for i in range(40_000)]
    chosen = assign_tasks(ids, mix, seed=3)
    share = Counter(chosen)
    assert None not in share and abs(share["dialogue"] / 40_000 - 0.5) < 0.02
    more = assign_tasks(ids + [f"new{i}" for i in range(500)], mix, seed=3)
    assert more[:40_000] == chosen  # adding scenes does not move the old ones


@pytest.mark.parametrize("text", ["dialogue=3,captioning=0.5", "dialogue", "dialogue=-1", "dialogue=nan",
                                  "dialogue=0", "dialogue=1,dialogue=2", "=4"])
def test_bad_mix_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_task_mix(text)


def test_more_images_asked_than_scenes() -> None:
    with pytest.raises(UserError, match="asks for 11 images but the input has 10 scenes"):
        assign_tasks([str(i) for i in range(10)], parse_task_mix("dialogue=6,captioning=5"), 0)


def _generate(tmp_path: Path, teacher: ServerThread, inputs: list[str], out: Path, *extra: str) -> list[dict]:
    result = run_cli("generate", *inputs, "--out", str(out), "--base-url", teacher.base_url, "--model", "m",
                     "--no-progress", *extra)
    assert result.returncode == 0, result.stderr
    return read_records(out)


def test_task_mix_through_the_cli_and_resume(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    mix = "conversation=30,complex_reasoning=20,detail_description=10"
    out = tmp_path / "mix.jsonl"
    records = _generate(tmp_path, teacher, ["--caps-boxes", str(caps80)], out, "--task-mix", mix)
    assert Counter(r["task"] for r in records) == {"conversation": 30, "complex_reasoning": 20,
                                                   "detail_description": 10}
    assert len({r["image"] for r in records}) == 60  # one task per image
    assert len(teacher.server.received) == 60
    again = _generate(tmp_path, teacher, ["--caps-boxes", str(caps80)], out, "--task-mix", mix)
    assert again == records and len(teacher.server.received) == 60  # resumed: nothing asked twice
    seeded = _generate(tmp_path, teacher, ["--caps-boxes", str(caps80)], tmp_path / "s.jsonl",
                       "--task-mix", mix, "--seed", "7")
    assert {r["image"] for r in seeded} != {r["image"] for r in records}


def test_task_mix_usage_errors(tmp_path: Path, caps80: Path) -> None:
    out = tmp_path / "o.json"
    out.write_text("keep")
    base = ["generate", "--caps-boxes", str(caps80), "--out", str(out), "--dry-run"]
    too_many = run_cli(*base, "--task-mix", "conversation=50,complex_reasoning=31")
    assert too_many.returncode == 2 and "asks for 81 images but" in too_many.stderr
    assert "Traceback" not in too_many.stderr and len(too_many.stderr.strip().splitlines()) == 1
    both = run_cli(*base, "--task-mix", "conversation=5", "--tasks", "conversation")
    assert both.returncode == 2 and "not both" in both.stderr
    mixed = run_cli(*base, "--task-mix", "conversation=5,complex_reasoning=0.5")
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    vlm_task = run_cli(*base, "--task-mix", "dialogue=5")
    assert vlm_task.returncode == 2 and "not text-mode tasks" in vlm_task.stderr
    assert out.read_text() == "keep"


def test_llava_instruct_ru_schema(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    records = _generate(tmp_path, teacher, ["--caps-boxes", str(caps80)], tmp_path / "ru.json", "--lang", "ru",
                        "--tasks", "conversation,complex_reasoning", "--limit", "5", "--schema", "llava-instruct-ru",
                        "--split", "val")
    assert len(records) == 10
    for record in records:
        assert list(record) == ["type", "conversations", "id", "image"]
        assert record["type"] in ("conversation", "complex_reasoning")
        assert record["id"] == int(record["image"].removesuffix(".jpg"))  # the image's id, not unique per row
        assert all(set(t) == {"from", "value"} for t in record["conversations"])
        assert "<image>" not in record["conversations"][0]["value"]  # val split, as the card says
    assert Counter(r["id"] for r in records).most_common(1)[0][1] == 2


def test_svit_schema_round_trips_through_convert(tmp_path: Path, teacher: ServerThread) -> None:
    vg = write_vg(tmp_path / "vg")
    out = tmp_path / "svit.json"
    rows = _generate(tmp_path, teacher, ["--vg", str(vg)], out, "--schema", "svit",
                     "--tasks", "conversation,complex_reasoning,referring_qa")
    assert rows and all(list(row) == ["image_id", "conversations"] for row in rows)
    assert {row["image_id"] for row in rows} == {1, 2}
    for row in rows:
        for conversation in row["conversations"]:
            roles = [t["from"] for t in conversation["content"]]
            assert roles == ["user", "gpt"] * (len(roles) // 2) and roles
            assert not any("<image>" in t["value"] for t in conversation["content"])
    referring = [c for row in rows for c in row["conversations"] if "<st>" in json.dumps(c, ensure_ascii=False)]
    assert referring and all(len(c["content"]) == 2 for c in referring)  # one pair per conversation
    llava = tmp_path / "llava.json"
    result = run_cli("convert", str(out), str(llava), "--from", "svit", "--to", "llava",
                     "--image-data", str(vg / "image_data.json"))
    assert result.returncode == 0, result.stderr
    converted = read_records(llava)
    assert len(converted) == sum(len(row["conversations"]) for row in rows)
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in converted)


def test_svit_schema_needs_native_referring_markup(tmp_path: Path, caps80: Path) -> None:
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"), "--dry-run",
                     "--schema", "svit", "--referring-style", "llava15", "--tasks", "referring_qa")
    assert result.returncode == 2 and "--referring-style native" in result.stderr
