"""`filter --stages …,grounding`: records whose answers contradict the annotations the tests write are
rejected with the kind and the first problem in the reason (en, ru, zh); clean records, and records that join
no annotations, are kept; the threshold and the kinds are respected; the stage decides as `audit` does, with
one worker or two; bad flag combinations are one line, exit status 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_records
from test_audit import WORDS, build_sets, make_images, record, write_coco, write_jsonl
from visinstruct.cli import main


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("coco")
    images = make_images(30)
    return write_coco(folder / "instances.json", images), images


def run_filter(tmp: Path, records: list[dict], *flags: str, name: str = "in") -> tuple[list[dict], list[dict], dict]:
    """Filter `records` in-process; returns (kept, rejects, report)."""
    source = write_jsonl(tmp / f"{name}.jsonl", records)
    kept, rejects, report = tmp / f"{name}-kept.jsonl", tmp / f"{name}-rejects.jsonl", tmp / f"{name}-report.json"
    code = main(["filter", str(source), "--out", str(kept), "--rejects", str(rejects), "--report", str(report),
                 "--no-progress", *flags])
    assert code == 0
    return read_records(kept), read_records(rejects), json.loads(report.read_text())


def absent_words(img: dict, n: int) -> list[str]:
    """English words for `n` categories the image does not have."""
    return [WORDS[c][0][0] for c in WORDS if c not in img["objects"] and c != "person"][:n]


# ---- planted defects and clean records ---------------------------------------------------------------

def test_planted_defects_are_rejected_with_their_kind_and_clean_records_kept(
        tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, planted = build_sets(images)
    kept, rejects, report = run_filter(tmp_path, records, "--stages", "structure,grounding",
                                       "--coco-instances", str(instances), "--workers", "2")
    by_id = {r["id"]: r for r in rejects}
    assert len(kept) + len(rejects) == len(records)
    assert {r["reject_stage"] for r in rejects} == {"grounding"}
    for lang in ("en", "ru", "zh"):
        ours = [rid for rid in planted if f"-{lang}-" in rid]
        found = [rid for rid in ours if rid in by_id]
        assert len(ours) >= 10 and len(found) >= 0.95 * len(ours), (lang, set(ours) - set(found))
    wrong_reason = []
    for rid, (kind, text) in planted.items():
        reason = by_id.get(rid, {}).get("reject_reason", "")
        code, _, rest = reason.partition(": ")
        if rid in by_id and (code != kind or text not in rest or "more than 0; first: turn 1" not in rest):
            wrong_reason.append((rid, kind, text, reason))
    assert not wrong_reason, wrong_reason
    clean = [r["id"] for r in records if r["id"].endswith("-clean")]
    false = [rid for rid in clean if rid in by_id]
    assert len(clean) >= 90 and len(false) <= 0.05 * len(clean), [by_id[rid]["reject_reason"] for rid in false]
    step = report["steps"]["grounding"]
    assert step["counts"]["joined"] == len(records) and "unjoined" not in step["counts"]
    assert set(step["rejected_by_reason"]) == {"object", "count", "box"}
    assert step["counts"]["flagged"] == len(rejects)


def test_the_stage_rejects_what_audit_rejects_with_the_same_reason(tmp_path: Path,
                                                                    coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, _ = build_sets(images[:12], seed=5)
    _, rejects, _ = run_filter(tmp_path, records, "--stages", "structure,grounding", "--coco-instances",
                               str(instances), "--grounding-max", "1")
    source = write_jsonl(tmp_path / "audit-in.jsonl", records)
    out = tmp_path / "audited.jsonl"
    assert main(["audit", str(source), "--coco-instances", str(instances), "--out", str(out), "--reject-above", "1",
                 "--no-progress"]) == 0
    audited = read_records(tmp_path / "audited.rejects.jsonl")
    assert [(r["id"], r["reject_reason"]) for r in rejects] == [(r["id"], r["reject_reason"]) for r in audited]


# ---- threshold, kinds, join --------------------------------------------------------------------------

def test_the_threshold_counts_problems(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    img = images[0]
    words = absent_words(img, 3)
    records = [record(f"bad-{n}", img["file_name"], [" ".join(f"A {w} is here." for w in words[:n]) or "Nice."],
                      "detail", "en") for n in range(4)]
    for limit, rejected in (("0", {"bad-1", "bad-2", "bad-3"}), ("1", {"bad-2", "bad-3"}), ("3", set())):
        kept, rejects, _ = run_filter(tmp_path, records, "--stages", "structure,grounding", "--coco-instances",
                                      str(instances), "--grounding-max", limit, name=f"max{limit}")
        assert {r["id"] for r in rejects} == rejected and len(kept) == 4 - len(rejected)
        for r in rejects:
            n = int(r["id"][-1])
            assert r["reject_reason"].startswith(f"object: {n} problem{'s' * (n > 1)} (object {n}), more than "
                                                 f"{limit}; first: turn 1 '{words[0]}': no '")


def test_only_the_chosen_kinds_count(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, planted = build_sets(images[:6], seed=2)
    planted_records = [r for r in records if r["id"] in planted]
    kept, rejects, report = run_filter(tmp_path, planted_records, "--stages", "structure,grounding",
                                       "--coco-instances", str(instances), "--grounding-kinds", "box,count")
    assert {r["id"] for r in rejects} == {rid for rid, (kind, _) in planted.items() if kind != "object"}
    assert {r["id"] for r in kept} == {rid for rid, (kind, _) in planted.items() if kind == "object"}
    assert "problems: object" not in report["steps"]["grounding"]["counts"]


def test_records_without_annotations_are_kept_and_counted(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    name = images[0]["file_name"]
    records = [record("prefixed", f"coco/train2017/{name}", ["A unicorn and a cat."], "detail", "en"),
               record("unknown", "elsewhere/nothing.jpg", ["A cat and a dog."], "detail", "en"),
               {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"},
                                                     {"from": "gpt", "value": "A cat."}]},
               {"id": "two", "image": [name, name], "conversations": [
                   {"from": "human", "value": "<image>\n<image>\nWhat?"}, {"from": "gpt", "value": "A giraffe."}]}]
    has_cat = "cat" in images[0]["objects"]
    kept, rejects, report = run_filter(tmp_path, records, "--stages", "structure,grounding", "--coco-instances",
                                       str(instances), "--image-prefix", "coco/train2017")
    assert [r["id"] for r in rejects] == ([] if has_cat else ["prefixed"])
    assert {r["id"] for r in kept} >= {"unknown", "text-only", "two"}
    counts = report["steps"]["grounding"]["counts"]
    assert counts["unjoined"] == 3 and counts["joined"] == 1
    assert (counts["unjoined: no annotations"], counts["unjoined: no image"], counts["unjoined: several images"]) \
        == (1, 1, 1)


def test_an_annotation_source_turns_the_stage_on_with_the_default_stages(tmp_path: Path,
                                                                         coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, planted = build_sets(images[:3])
    _, rejects, report = run_filter(tmp_path, records, "--no-spelling", "--coco-instances", str(instances))
    assert "grounding" in report["steps"] and report["config"]["stages"][-1] == "grounding"
    assert {r["id"] for r in rejects if r["reject_stage"] == "grounding"} <= set(planted)
    _, _, report = run_filter(tmp_path, records, "--no-spelling", name="plain")
    assert "grounding" not in report["steps"]


def test_config_file_settings(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    img = images[0]
    words = absent_words(img, 2)
    records = [record("two", img["file_name"], [f"A {words[0]} and a {words[1]}."], "detail", "en")]
    config = tmp_path / "filters.yaml"
    config.write_text(f"stages: [structure, grounding]\ncoco_instances: {instances}\ngrounding_max: 1\n")
    kept, _, _ = run_filter(tmp_path, records, "--config", str(config))
    assert [r["id"] for r in kept] == []
    kept, _, _ = run_filter(tmp_path, records, "--config", str(config), "--grounding-max", "2", name="flag")
    assert [r["id"] for r in kept] == ["two"]


def test_russian_and_chinese_answers_without_a_lang_key(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    """A record without `lang` is read in the script of its answers, as audit does."""
    instances, images = coco
    img = next(i for i in images if "dog" not in i["objects"] and "cat" not in i["objects"])
    records = [{"id": "ru", "image": img["file_name"], "conversations": [
                   {"from": "human", "value": "<image>\nЧто здесь?"}, {"from": "gpt", "value": "Рядом сидит собака."}]},
               {"id": "zh", "image": img["file_name"], "conversations": [
                   {"from": "human", "value": "<image>\n这是什么？"}, {"from": "gpt", "value": "旁边有一只猫。"}]}]
    _, rejects, _ = run_filter(tmp_path, records, "--stages", "structure,grounding", "--coco-instances",
                               str(instances))
    assert {r["id"]: r["reject_reason"].split("; ")[1] for r in rejects} == {
        "ru": "first: turn 1 'собака': no 'dog' in the annotations",
        "zh": "first: turn 1 '猫': no 'cat' in the annotations"}


# ---- bad flags and files -----------------------------------------------------------------------------

def _bad(tmp_path: Path, source: Path, flags: list[str], capsys: pytest.CaptureFixture) -> str:
    out, rejects = tmp_path / "kept.jsonl", tmp_path / "rejects.jsonl"
    out.write_text("before\n")
    code = main(["filter", str(source), "--out", str(out), "--rejects", str(rejects), "--no-progress", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("visinstruct: error: "), err
    assert out.read_text() == "before\n" and not rejects.exists() and not list(tmp_path.glob(".*.tmp"))
    return err


def test_bad_flag_combinations_fail_before_anything_is_read(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            coco: tuple[Path, list[dict]]) -> None:
    instances, _ = coco
    missing_input = tmp_path / "never-read.jsonl"  # these fail on the flags, before the input is opened
    caps = tmp_path / "caps.jsonl"
    caps.write_text("")
    cases = [
        (["--stages", "structure,grounding"], "the grounding stage needs annotations"),
        (["--stages", "structure", "--coco-instances", str(instances)], "add grounding to --stages"),
        (["--coco-instances", str(instances), "--caps-boxes", str(caps)], "give only one of"),
        (["--grounding-max", "2"], "--grounding-max: settings of the grounding stage"),
        (["--stages", "structure", "--iou", "0.3"], "--iou: settings of the grounding stage"),
        (["--coco-instances", str(instances), "--grounding-max", "-1"], "--grounding-max must be 0 or more"),
        (["--coco-instances", str(instances), "--iou", "1.5"], "--iou must be in (0, 1]"),
        (["--coco-instances", str(instances), "--grounding-kinds", "object,colour"], "--grounding-kinds takes"),
        (["--coco-instances", str(instances), "--box-frame", "padded"], "--box-frame must be one of"),
        (["--coco-instances", str(tmp_path / "none.json")], "--coco-instances not found"),
        (["--coco-instances", str(tmp_path)], "--coco-instances expects a file"),
        (["--vg", str(instances)], "--vg expects the Visual Genome folder"),
        (["--stages", "structure,grounding,colour", "--coco-instances", str(instances)], "unknown stage(s) colour"),
    ]
    for flags, message in cases:
        assert message in _bad(tmp_path, missing_input, flags, capsys), flags


def test_bad_annotation_files_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    source = write_jsonl(tmp_path / "in.jsonl", [record("a", images[0]["file_name"], ["A dog."], "detail", "en")])
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(instances.read_bytes()[:5000])
    no_images = tmp_path / "no_images.json"
    no_images.write_text('{"annotations": [], "categories": []}')
    copy = tmp_path / "copy.json"
    copy.write_bytes(instances.read_bytes())
    for workers in ("1", "2"):  # loaded in the workers: their error comes back as the one line
        err = _bad(tmp_path, source, ["--coco-instances", str(truncated), "--workers", workers], capsys)
        assert f"{truncated}: not valid JSON" in err
    assert "expected a JSON object with a 'images' list" in _bad(tmp_path, source, ["--coco-instances",
                                                                                    str(no_images)], capsys)
    out = tmp_path / "o.jsonl"
    code = main(["filter", str(source), "--out", str(copy), "--rejects", str(out), "--coco-instances", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input --coco-instances" in err and err.count("\n") == 1
    assert copy.read_bytes() == instances.read_bytes() and not out.exists()
