"""Referring QA from Visual Genome regions, in native and LLaVA-1.5 styles, through the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import read_records, run_cli
from teacher_server import ServerThread
from test_visual_genome import write_vg
from visinstruct.core.boxes import pad_box, pad_box_svit, pad_boxes_in_text
from visinstruct.core.referring import FORMAT_INSTRUCTIONS, SVIT_INSTRUCTIONS, MarkupError, check_markup, to_llava15


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


def test_svit_rounding_worked_example() -> None:
    # README's example, 640 x 427: pixels (61.44, 12.383, 319.36, 390.278)
    box = [0.096, 0.029, 0.499, 0.914]
    # exact: y + 106.5 → 118.883, 496.778; / 640
    assert pad_box(box, 640, 427) == [0.096, 0.186, 0.499, 0.776]
    # SVIT: (61, 12, 319, 390), y + 213 // 2 = 106 → 118, 496; / 640 = 0.0953125, 0.184375, 0.4984375, 0.775
    assert pad_box_svit(box, 640, 427) == [0.095, 0.184, 0.498, 0.775]
    # ties go to the even pixel (Python's round): 0.5 * 427 = 213.5 → 214, 0.5 * 425 = 212.5 → 212
    assert pad_box_svit([0.5, 0.5, 0.5, 0.5], 640, 427) == [0.5, 0.5, 0.5, 0.5]  # (214 + 106) / 640
    assert pad_box_svit([0.5, 0.5, 0.5, 0.5], 640, 425) == [0.5, 0.498, 0.5, 0.498]  # (212 + 107) / 640 = 0.4984375
    # a square image is not shifted, but its pixels are still rounded: 0.123 * 500 = 61.5 → 62
    assert pad_box_svit([0.123, 0.0, 1.0, 1.0], 500, 500) == [0.124, 0.0, 1.0, 1.0]
    assert to_llava15("<st>a<ed> [0.096, 0.029, 0.499, 0.914]", 640, 427, "svit") == "a [0.095, 0.184, 0.498, 0.775]"
    with pytest.raises(ValueError, match="unknown box rounding"):
        pad_boxes_in_text("[0.1, 0.1, 0.2, 0.2]", 10, 10, "half")


def test_svit_instructions_are_the_cards() -> None:
    assert SVIT_INSTRUCTIONS == ("Provide the bounding boxes of the mentioned objects.",
                                 "Include the coordinates for each mentioned object.",
                                 "Locate the objects with their coordinates.")


@pytest.mark.parametrize("rounding, expected", [("exact", "[0.096, 0.186, 0.499, 0.776]"),
                                                ("svit", "[0.095, 0.184, 0.498, 0.775]")])
def test_pad_boxes_cli_rounding(rounding: str, expected: str) -> None:
    args = [sys.executable, "-m", "visinstruct", "pad-boxes", "--width", "640", "--height", "427"]
    if rounding == "svit":
        args += ["--box-rounding", "svit"]
    result = subprocess.run(args, input="<st>cup<ed> [0.096, 0.029, 0.499, 0.914]\n", capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"<st>cup<ed> {expected}\n"


coordinate = st.integers(0, 1000).map(lambda n: n / 1000)


@given(coordinate, coordinate, coordinate, coordinate, st.integers(1, 4000), st.integers(1, 4000))
def test_svit_and_exact_differ_by_rounding_only(a, b, c, d, width, height) -> None:
    box = [min(a, c), min(b, d), max(a, c), max(b, d)]
    svit, exact = pad_box_svit(box, width, height), pad_box(box, width, height)
    # half a pixel from rounding the pixel, half from the // 2 shift, and two 3-decimal roundings
    assert all(abs(s - e) <= 1 / max(width, height) + 0.001 + 1e-9 for s, e in zip(svit, exact, strict=True))
    assert all(0.0 <= v <= 1.0 for v in svit) and svit[0] <= svit[2] and svit[1] <= svit[3]


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
