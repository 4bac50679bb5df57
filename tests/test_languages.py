"""The embedded teacher's Russian and Chinese: announced before the run, and caught by the language stage."""

from __future__ import annotations

from pathlib import Path

from conftest import make_caps_boxes, read_records, run_cli

# Real replies of the embedded SmolLM2-135M on the bundled example (detail_description, --lang ru and zh, 80 tokens),
# kept as they came: Russian prompts answered in English, Chinese ones in nonsense that sometimes runs on in English.
EMBEDDED = Path(__file__).parent / "data" / "embedded_ru_zh.jsonl"


def test_a_non_english_run_with_the_embedded_teacher_says_so_first(tmp_path: Path) -> None:
    caps = make_caps_boxes(tmp_path / "caps.jsonl", 3)
    for lang in ("ru", "zh"):
        result = run_cli("generate", "--caps-boxes", str(caps), "--out", str(tmp_path / f"{lang}.json"),
                         "--lang", lang, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[0].startswith("note: the embedded SmolLM2-135M is a tiny English-first")
    english = run_cli("generate", "--caps-boxes", str(caps), "--out", str(tmp_path / "en.json"), "--dry-run")
    assert "English-first" not in english.stderr


def test_the_language_stage_rejects_the_embedded_teachers_wrong_language(tmp_path: Path) -> None:
    kept, rejects = tmp_path / "kept.jsonl", tmp_path / "rejects.jsonl"
    result = run_cli("filter", str(EMBEDDED), "--out", str(kept), "--rejects", str(rejects), "--stages", "language")
    assert result.returncode == 0, result.stderr
    rejected = {r["id"] + r["lang"]: r for r in read_records(rejects)}
    records = read_records(EMBEDDED)
    russian = [r for r in records if r["lang"] == "ru"]
    assert russian and all(r["id"] + "ru" in rejected for r in russian)  # every English answer to a ru prompt
    mixed = [r for r in records if r["lang"] == "zh" and any(w in r["conversations"][1]["value"]
                                                              for w in (" the ", " is ", "I've"))]
    assert mixed and all(r["id"] + "zh" in rejected for r in mixed)  # Chinese running on in English
    assert all(r["reject_stage"] == "language" for r in rejected.values())
