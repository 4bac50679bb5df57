"""Referring QA from Visual Genome regions, in native and LLaVA-1.5 styles, through the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_records, run_cli
from teacher_server import ServerThread
from test_visual_genome import write_vg
from visinstruct.core.referring import FORMAT_INSTRUCTIONS, MarkupError, check_markup, to_llava15


@pytest.mark.parametrize("text, reason", [
    ("<st>dog<ed> runs", "<st>dog<ed> is not followed by a box"),
    ("<st>dog [0.1, 0.2, 0.3, 0.4]", "never closed"),
    ("<st>a<st>b<ed> [0.1, 0.2, 0.3, 0.4]", "not closed before the next <st>"),
    ("dog<ed> [0.1, 0.2, 0.3, 0.4]", "has no <st> before it"),
    ("<st>dog<ed> [0.5, 0.2, 0.3, 0.4]", "x1 <= x2"),
    ("<st>dog<ed> [0.1, 0.2, 1.3, 0.4]", "in \\[0, 1\\]"),
    ("<st>dog<ed> [0.1, 0.2, 0.3]", "does not have 4 numbers"),
    ("<st>dogs<ed> [0.1, 0.2, 0.3, 0.4], [0.1, 0.2]", "does not have 4 numbers"),
])
def test_broken_markup_is_refused_with_reason(text: str, reason: str) -> None:
    with pytest.raises(MarkupError, match=reason):
        check_markup(text)


def test_good_markup_and_llava15_conversion() -> None:
    text = ("Are <st>the cups<ed> [0.1, 0.5, 0.2, 0.7], [0.3, 0.5, 0.4, 0.7] near [1, 2, 3] "
            "<st>it<ed> [0.0, 0.0, 1.0, 1.0]?")
    assert check_markup(text) == 2
    assert to_llava15(text, 800, 600) == (
        "Are the cups [0.1, 0.5, 0.2, 0.65], [0.3, 0.5, 0.4, 0.65] near [1, 2, 3] it [0.0, 0.125, 1.0, 0.875]?")


def _generate(vg: Path, base_url: str, out: Path, *extra: str):
    return run_cli("generate", "--vg", str(vg), "--coco-captions", str(vg / "captions.json"), "--out", str(out),
                   "--base-url", base_url, "--model", "m", "--tasks", "referring_qa", *extra)


def test_native_and_llava15_styles_share_the_ledger(tmp_path: Path, teacher: ServerThread) -> None:
    vg = write_vg(tmp_path / "vg")
    out = tmp_path / "ref.jsonl"
    result = _generate(vg, teacher.base_url, out)
    assert result.returncode == 0, result.stderr
    native = read_records(out)
    assert [r["id"] for r in native] == ["1-referring_qa-0", "2-referring_qa-0"]
    first = native[0]["conversations"]
    assert first[0]["value"] == "<image>\nWhere is <st>red shiny car<ed> [0.1, 0.1, 0.3, 0.3]?"
    assert first[1]["value"] == "<st>red shiny car<ed> [0.1, 0.1, 0.3, 0.3] is right there."
    assert len(teacher.server.received) == 2

    result = _generate(vg, teacher.base_url, out, "--referring-style", "llava15")
    assert result.returncode == 0 and "from ledger: 2" in result.stderr
    assert len(teacher.server.received) == 2  # the style is applied to stored replies: nothing re-requested
    padded = read_records(out)[0]["conversations"]
    instructions = FORMAT_INSTRUCTIONS["en"]
    question, instruction = padded[0]["value"].split("? ", 1)
    assert question == "<image>\nWhere is red shiny car [0.1, 0.2, 0.3, 0.35]"  # 800 x 600: y + 100 px, / 800
    assert instruction in instructions
    assert padded[1]["value"] == "red shiny car [0.1, 0.2, 0.3, 0.35] is right there."
    assert all("<st>" not in t["value"] and "<ed>" not in t["value"] for t in padded)


@pytest.mark.parametrize("lang", ["ru", "zh"])
def test_referring_in_other_languages(tmp_path: Path, teacher: ServerThread, lang: str) -> None:
    vg = write_vg(tmp_path / "vg")
    result = _generate(vg, teacher.base_url, tmp_path / "o.json", "--lang", lang)
    assert result.returncode == 0 and "done: 2" in result.stderr, result.stderr


def test_broken_reply_markup_rejects_the_unit(tmp_path: Path, teacher: ServerThread) -> None:
    vg = write_vg(tmp_path / "vg")
    objects = json.loads((vg / "objects.json").read_text())
    objects[1]["objects"][0]["names"] = ["broken sign"]
    (vg / "objects.json").write_text(json.dumps(objects))
    out = tmp_path / "o.json"
    result = _generate(vg, teacher.base_url, out)
    assert result.returncode == 0 and "done: 1" in result.stderr and "rejected: 1" in result.stderr
    reject = read_records(tmp_path / "o.rejects.jsonl")[0]
    assert reject["id"] == "2-referring_qa-0" and "never closed" in reject["reason"]
    assert "<st>broken sign [0.0, 0.0, 0.25, 0.1]" in reject["reply"]


def test_llava15_needs_image_sizes(tmp_path: Path, teacher: ServerThread, caps80: Path) -> None:
    result = run_cli("generate", "--caps-boxes", str(caps80), "--out", str(tmp_path / "o.json"), "--base-url",
                     teacher.base_url, "--model", "m", "--tasks", "referring_qa", "--referring-style", "llava15")
    assert result.returncode == 2 and "needs each image's size" in result.stderr
