"""Decontamination: eval images found again after resizing and re-encoding, none among unrelated pictures,
eval questions found through shared n-grams in English and Chinese, the perceptual-hash index against
brute force, and bad eval inputs refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visinstruct.cli import main
from visinstruct.core.phash import PhashIndex, layout, popcounts
from visinstruct.filters.decontaminate import tokens


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A random picture: a smooth field of colours (a 2-8 cell grid upscaled) with 2-6 random ellipses and
    rectangles on it. Different seeds give pictures that differ in layout, not only in noise."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(2, 9, 2)
    image = Image.fromarray(rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    draw, (width, height) = ImageDraw.Draw(image), size
    for _ in range(rng.integers(2, 7)):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x, y, x + int(rng.integers(width // 10, width // 2)), y + int(rng.integers(height // 10, height // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def save(image: Image.Image, path: Path, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)
    return path


def record(rid: str, question: str, image: str | None = None, answer: str = "A plain answer.") -> dict[str, Any]:
    found: dict[str, Any] = {"id": rid, "conversations": [
        {"from": "human", "value": ("<image>\n" if image else "") + question}, {"from": "gpt", "value": answer}]}
    if image:
        found["image"] = image
    return found


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture, tmp_path: Path, source: Path, *flags: str) -> tuple[int, str]:
    code = main(["filter", str(source), "--out", str(tmp_path / "kept.jsonl"), "--rejects",
                 str(tmp_path / "rejects.jsonl"), "--report", str(tmp_path / "report.json"),
                 "--stages", "structure,decontaminate", "--no-progress", *flags])
    return code, capsys.readouterr().err


def outputs(tmp_path: Path) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """(kept ids, rejected records, report)."""
    kept = [json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    return kept, rejected, json.loads((tmp_path / "report.json").read_text())


# ---- images --------------------------------------------------------------------------------------------

def test_a_resized_reencoded_eval_image_is_found(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    evals = tmp_path / "bench"
    for k in (0, 1, 2, 3, 47):
        save(picture(k), evals / "val" / f"e{k}.jpg")
    root = tmp_path / "images"
    copy = picture(47)  # its copy lands 4 bits away (most land 0-2 bits away)
    save(copy.resize((round(copy.width * 0.6), round(copy.height * 0.6)), Image.LANCZOS), root / "copy.jpg", 70)
    for k in range(5):
        save(picture(100 + k), root / f"t{k}.jpg")
    rows = [record("copy", "What is this?", "copy.jpg")] + \
        [record(f"t{k}", "What is this?", f"t{k}.jpg") for k in range(5)] + [record("text", "Tell me a joke.")]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    code, err = run(capsys, tmp_path, source, "--decontaminate", str(evals), "--image-root", str(root),
                    "--workers", "2")
    assert code == 0, err
    kept, rejected, report = outputs(tmp_path)
    assert kept == ["t0", "t1", "t2", "t3", "t4", "text"]  # the record with no image passes
    assert [(r["id"], r["reject_stage"]) for r in rejected] == [("copy", "decontaminate")]
    assert rejected[0]["reject_reason"].startswith("eval_image: copy.jpg is ")
    assert rejected[0]["reject_reason"] == "eval_image: copy.jpg is 4 bits from eval image val/e47.jpg"
    found = report["decontamination"]
    assert found["eval_images"] == 5 and found["phash_distance"] == 6
    [match] = found["matches"]
    assert match == {"kind": "image", "id": "copy", "image": "copy.jpg", "eval_image": "val/e47.jpg", "distance": 4}
    assert report["steps"]["decontaminate"]["rejected_by_reason"] == {"eval_image": 1}
    assert "decontamination: 1 match(es)" in err

    # the same eval set as a list of paths (relative to the list, or absolute), and the threshold obeyed
    listing = tmp_path / "eval.txt"
    listing.write_text(f"# the benchmark\nbench/val/e0.jpg\n\n{evals / 'val' / 'e47.jpg'}\n")
    code, err = run(capsys, tmp_path, source, "--decontaminate", str(listing), "--image-root", str(root))
    assert code == 0, err
    assert outputs(tmp_path)[2]["decontamination"]["matches"][0]["eval_image"] == str(evals / "val" / "e47.jpg")
    code, err = run(capsys, tmp_path, source, "--decontaminate", str(listing), "--image-root", str(root),
                    "--phash-distance", "3")
    assert code == 0 and outputs(tmp_path)[0][0] == "copy", err  # 4 bits away: beyond 3


def test_a_thousand_unrelated_images_give_no_match(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    evals, root = tmp_path / "eval", tmp_path / "images"
    for k in range(20):
        save(picture(k), evals / f"{k}.jpg")
    rows = []
    for k in range(1000):
        save(picture(10_000 + k, (128, 96)), root / f"{k // 100}" / f"{k}.jpg", 85)
        rows.append(record(str(k), "What is this?", f"{k // 100}/{k}.jpg"))
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    code, err = run(capsys, tmp_path, source, "--decontaminate", str(evals), "--image-root", str(root),
                    "--workers", "2")
    assert code == 0, err
    kept, rejected, report = outputs(tmp_path)
    assert len(kept) == 1000 and rejected == [] and report["decontamination"]["matches"] == []
    assert report["steps"]["decontaminate"]["counts"]["images hashed"] == 1000


def test_index_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    for size, distance in [(300, 4), (3000, 6), (70_000, 6), (2000, 8), (50, 0)]:
        stored = rng.integers(0, np.iinfo(np.uint64).max, size, dtype=np.uint64, endpoint=True)
        queries = rng.integers(0, np.iinfo(np.uint64).max, 3000, dtype=np.uint64, endpoint=True)
        for i in range(300):  # planted: a stored hash with 0..distance+2 bits flipped
            flips = rng.choice(64, int(rng.integers(0, distance + 3)), replace=False)
            queries[i] = stored[i % size] ^ np.uint64(sum(1 << int(b) for b in flips))
        index = PhashIndex(stored, distance)
        where, hashes, distances = index.pairs(queries)
        expected = [(q, int(h)) for q in range(len(queries))
                    for h in index.hashes[popcounts(index.hashes ^ queries[q]) <= distance]]
        assert list(zip(where.tolist(), hashes.tolist(), strict=True)) == expected, (size, distance)
        assert (distances == popcounts(hashes ^ queries[where])).all() and (distances <= distance).all()
        close = set(where.tolist())
        assert [index.near(int(q)) for q in queries[:400]] == [q in close for q in range(400)]
    assert layout(6, 5000) == (7, 0) and layout(6, 70_000)[1] == 1  # wide bands probed at radius 1 when crowded
    assert PhashIndex([], 4).pairs([1, 2])[0].size == 0 and not PhashIndex([], 4).near(1)


# ---- questions -----------------------------------------------------------------------------------------

EN = "Considering the objects on the kitchen table, what meal do you think the family is preparing tonight?"
ZH = "根据桌子上的物品，你认为这个家庭今晚正在准备什么样的晚餐呢？"


def test_shared_ngrams_in_english_and_chinese(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    questions = write_jsonl(tmp_path / "questions.jsonl", [
        {"question_id": 101, "image": "a.jpg", "text": EN, "category": "complex"},
        {"question_id": "zh-7", "question": ZH},
        {"id": "bench-3", "conversations": [{"from": "human", "value": "<image>\nShort one?"},
                                            {"from": "gpt", "value": "Yes."}]}])
    en_words = EN.split()
    zh_chars = ZH.replace("，", "").replace("？", "")
    rows = [
        record("en-copy", "HEY! " + EN.upper().replace(",", " ;; ") + " Answer briefly."),
        record("en-12", " ".join(en_words[:12]) + " something else entirely here"),  # 12 shared words: kept
        record("zh-copy", "请看图片。" + zh_chars[2:22] + "。"),                          # 20 shared characters
        record("zh-19", zh_chars[:19] + "吗"),                                           # 19: kept
        record("answer-only", "What is this?", answer=EN),                              # gpt turns are not compared
        record("short", "A short one?")]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    code, err = run(capsys, tmp_path, source, "--eval-questions", str(questions))
    assert code == 0, err
    kept, rejected, report = outputs(tmp_path)
    assert kept == ["en-12", "zh-19", "answer-only", "short"]
    assert [r["id"] for r in rejected] == ["en-copy", "zh-copy"]
    assert rejected[0]["reject_reason"].startswith("eval_question: human turn 0 shares 13 words with eval "
                                                   "question 101: \"considering the objects on the kitchen table")
    assert "shares 20 characters with eval question zh-7" in rejected[1]["reject_reason"]
    found = report["decontamination"]
    assert found["eval_questions"] == 3 and found["eval_questions_too_short"] == 1 and found["eval_images"] == 0
    first, second = found["matches"]
    assert (first["id"], first["turn"], first["eval_question"], first["shared_ngrams"]) == ("en-copy", 0, "101", 5)
    assert (second["id"], second["eval_question"], second["ngram"]) == ("zh-copy", "zh-7", zh_chars[2:22])
    # a shorter n-gram finds the 12 shared words; LLaVA-record questions are `<id> turn <i>`
    code, err = run(capsys, tmp_path, source, "--eval-questions", str(questions), "--ngram", "2")
    assert code == 0, err
    assert ("short", "bench-3 turn 0") in [(m["id"], m["eval_question"]) for m in
                                           outputs(tmp_path)[2]["decontamination"]["matches"]]


def test_tokens_normalise_case_punctuation_and_scripts() -> None:
    assert tokens("<image>\nWhat's THE man's ＭＵＧ?!") == ["what", "s", "the", "man", "s", "mug"]
    assert tokens("图片中的iPhone手机，是什么颜色？") == ["图", "片", "中", "的", "iphone", "手", "机", "是", "什",
                                                          "么", "颜", "色"]
    assert tokens("Что на картинке?") == ["что", "на", "картинке"]


# ---- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--decontaminate", "{tmp}/nowhere", "--image-root", "{tmp}"], "{tmp}/nowhere: --decontaminate: no such"),
    (["--decontaminate", "{tmp}/list.txt", "--image-root", "{tmp}"], "{tmp}/list.txt:2: eval image gone.jpg not found"),
    (["--decontaminate", "{tmp}/empty", "--image-root", "{tmp}"], "{tmp}/empty: --decontaminate folder holds no image"),
    (["--decontaminate", "{tmp}/q.jsonl", "--image-root", "{tmp}"], "benchmark questions go to --eval-questions"),
    (["--decontaminate", "{tmp}/empty"], "--decontaminate compares the training images"),
    (["--eval-questions", "{tmp}/q.jsonl"], "{tmp}/q.jsonl:2: no question in this row"),
    (["--eval-questions", "{tmp}/missing.jsonl"], "{tmp}/missing.jsonl: file not found"),
    (["--eval-questions", "{tmp}/list.txt"], "must be a .json list or a .jsonl file"),
    (["--decontaminate", "{tmp}/empty", "--image-root", "{tmp}", "--phash-distance", "20"], "--phash-distance"),
])
def test_bad_eval_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       flags: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    save(picture(1), tmp_path / "here.jpg")
    (tmp_path / "list.txt").write_text("here.jpg\ngone.jpg\n")
    write_jsonl(tmp_path / "q.jsonl", [{"text": "fine"}, {"answer": "no question"}])
    source = write_jsonl(tmp_path / "train.jsonl", [record("a", "What?")])
    code, err = run(capsys, tmp_path, source, *[f.format(tmp=tmp_path) for f in flags])
    assert code == 2 and err.count("\n") == 1 and message.format(tmp=tmp_path) in err, err
    assert not any((tmp_path / name).exists() for name in ("kept.jsonl", "rejects.jsonl", "report.json"))


def test_decontaminate_needs_its_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = write_jsonl(tmp_path / "train.jsonl", [record("a", "What?")])
    code = main(["filter", str(source), "--out", str(tmp_path / "k.jsonl"), "--rejects", str(tmp_path / "r.jsonl"),
                 "--stages", "structure", "--eval-questions", str(source)])
    assert code == 2 and "need the decontaminate stage" in capsys.readouterr().err
