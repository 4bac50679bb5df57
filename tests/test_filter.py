"""The filter stages with planted errors in every language, the truncation rule turn by turn, validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import read_records, run_cli
from visinstruct.filters.base import Reject, Rewrite
from visinstruct.filters.heuristics import HeuristicsFilter, Limits
from visinstruct.filters.language import LanguageFilter
from visinstruct.filters.spelling import SpellingFilter

CLEAN = {
    "en": ("What is the man doing on the left?",
           "He is riding a red bicycle along a wet street in Amsterdam, past 3 parked cars and a Tesla Model 3. "
           "The rain has just stopped, so the road still reflects the streetlights; a well-known bakery, "
           "\"De Vries\", is open behind him."),
    "ru": ("Что делает мужчина слева?",
           "Он едет на красном велосипеде по мокрой улице Амстердама мимо 3 припаркованных машин и Tesla Model 3. "
           "Дождь только что закончился, поэтому дорога ещё блестит в свете фонарей, а за ним открыта "
           "известная пекарня «De Vries». Ёлки во дворе украшены, т. е. скоро праздник."),
    "zh": ("左边的男人在做什么？",
           "他正骑着一辆红色自行车沿着湿漉漉的街道前行，经过三辆停着的汽车和一辆 Tesla Model 3。"
           "雨刚停，路面还映着路灯的光。"),
}


def record(lang: str, answer: str | None = None, question: str | None = None, **extra) -> dict:
    q, a = CLEAN[lang]
    return {"id": extra.pop("id", f"{lang}-1"), "image": "a.jpg", "lang": lang, "task": "conversation",
            "conversations": [{"from": "human", "value": "<image>\n" + (question or q)},
                              {"from": "gpt", "value": answer or a}], **extra}


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_clean_records_pass_every_stateless_stage(lang: str) -> None:
    for stage in (SpellingFilter(), HeuristicsFilter(), LanguageFilter()):
        assert stage.check(record(lang)) is None, stage.name


PLANTED = [
    ("en", "According to the caption, a man rides a bicycle down the street.", "annotation_source"),
    ("en", "The bounding box of the bicycle shows it is on the left side of the road.", "annotation_source"),
    ("en", "The man [0.12, 0.3, 0.45, 0.9] rides a bicycle down the street today.", "coordinates"),
    ("en", "As an AI, I cannot see images, but it is probably a man on a bicycle.", "refusal"),
    ("en", "I can't see the image, so I do not know what the man is doing here.", "refusal"),
    ("en", "Мужчина едет на велосипеде по мокрой улице мимо машин и магазинов.", "wrong_script"),
    ("en", "He rides a bike and he rides a bike and he rides a bike and he rides a bike and he rides a bike.",
     "repetition_loop"),
    ("en", "He is riding a red bicycle along a wet street, past several parked cars and", "truncated_ending"),
    ("en", "a", "too_short"),
    ("ru", "Судя по подписи, мужчина едет на велосипеде по улице.", "annotation_source"),
    ("ru", "Координаты велосипеда показывают, что он слева на дороге.", "annotation_source"),
    ("ru", "Как ИИ, я не могу видеть изображения, но это, вероятно, велосипедист.", "refusal"),
    ("ru", "The man is riding a red bicycle along a wet street past parked cars.", "wrong_script"),
    ("ru", "Он едет на велосипеде по мокрой улице мимо машин и магазинов, а потом", "truncated_ending"),
    ("zh", "根据标注，一个男人正在街上骑自行车。", "annotation_source"),
    ("zh", "作为一个人工智能，我无法看到图片，但可能是一个骑车的人。", "refusal"),
    ("zh", "The man is riding a red bicycle along a wet street past parked cars.", "wrong_script"),
    ("zh", "他在骑车他在骑车他在骑车他在骑车他在骑车他在骑车他在骑车他在骑车", "repetition_loop"),
    ("ru", "Мужчина [0.12, 0.3, 0.45, 0.9] едет на велосипеде по улице.", "coordinates"),
    ("zh", "男人 [0.12, 0.3, 0.45, 0.9] 正在街上骑自行车。", "coordinates"),
    ("ru", "он едет и он едет и он едет и он едет и он едет и он едет и он едет.", "repetition_loop"),
    ("zh", "他正骑着一辆红色自行车沿着湿漉漉的街道前行，经过三辆停着的汽车和一辆白色的公共汽车，然后",
     "truncated_ending"),
    ("ru", "а", "too_short"),
    ("zh", "是", "too_short"),
]


@pytest.mark.parametrize("lang, answer, code", PLANTED)
def test_heuristics_reject_planted_errors(lang: str, answer: str, code: str) -> None:
    verdict = HeuristicsFilter().check(record(lang, answer))
    assert isinstance(verdict, Reject) and verdict.code == code, verdict


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_too_long_answers(lang: str) -> None:
    verdict = HeuristicsFilter(limits=Limits(max_answer_chars=50)).check(record(lang))
    assert isinstance(verdict, Reject) and verdict.code == "too_long"


def test_referring_qa_may_hold_boxes() -> None:
    ref = record("en", "<st>The man<ed> [0.12, 0.3, 0.45, 0.9] is riding a bicycle.", task="referring_qa")
    assert HeuristicsFilter().check(ref) is None


@pytest.mark.parametrize("lang, answer", [("en", "Мужчина едет на велосипеде по мокрой улице мимо машин."),
                                          ("ru", "Мужчина едет на велосипеде. It is a wonderful sunny day in the park "
                                                 "and everybody is happy about the weather today."),
                                          ("zh", "Человек едет на велосипеде по улице.")])
def test_language_id_rejects_other_languages(lang: str, answer: str) -> None:
    verdict = LanguageFilter().check(record(lang, answer))
    assert isinstance(verdict, Reject) and verdict.code == "wrong_language", verdict


def three_pairs(lang: str, texts: list[str]) -> dict:
    turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    return {"id": "t", "lang": lang, "image": "a.jpg", "conversations": turns}


@pytest.mark.parametrize("bad_turn, kept_turns", [(0, None), (1, None), (2, 2), (3, 2), (4, 4), (5, 4)])
def test_spelling_truncation_turn_by_turn(bad_turn: int, kept_turns: int | None) -> None:
    texts = ["What is on the table?", "A cup of coffee.", "What colour is the cup?", "It is red.",
             "Is there a spoon?", "Yes, next to the cup."]
    misspelt = ["What is on the tabble?", "A cupp of coffee.", "What colour is the cupp?", "It is rred.",
                "Is there a spooon?", "Yes, nexxt to the cup."]
    texts[bad_turn] = misspelt[bad_turn]
    verdict = SpellingFilter().check(three_pairs("en", texts))
    if kept_turns is None:
        assert isinstance(verdict, Reject) and "no complete human+gpt pair" in verdict.reason
    else:
        assert isinstance(verdict, Rewrite) and len(verdict.record["conversations"]) == kept_turns
        assert verdict.note["removed_turns"] == 6 - kept_turns and verdict.note["turn"] == bad_turn


def test_spelling_russian_truncation_and_tolerance(tmp_path: Path) -> None:
    texts = ["Что на столе?", "Чашка кофе и iPhone 15 Pro, т. е. всё для утра.", "Какого цвета чашка?",
             "Она красноватая и блестящая, с надписью «Nespresso».", "А ложка есть?", "Да, ложка лежит рядомм."]
    verdict = SpellingFilter().check(three_pairs("ru", texts))
    assert isinstance(verdict, Rewrite) and len(verdict.record["conversations"]) == 4
    assert verdict.note["first_error"] == "рядомм"
    allow = tmp_path / "allow.txt"
    allow.write_text("рядомм\n")
    assert SpellingFilter(allowlist=allow).check(three_pairs("ru", texts)) is None


def test_spelling_passes_other_languages_with_a_note() -> None:
    stage = SpellingFilter()
    assert stage.check(record("zh")) is None and stage.stats["not checked (zh)"] == 1


def _write(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return path


def test_filter_cli_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for name, color in (("a.jpg", (200, 0, 0)), ("b.jpg", (0, 0, 200)), ("c.jpg", (0, 200, 0))):
        Image.new("RGB", (64, 64), color).save(tmp_path / "img" / name)
    Image.new("RGB", (64, 64), (200, 0, 0)).save(tmp_path / "img" / "a_copy.jpg", quality=70)
    records = [record("en", id="keep"), record("ru", id="keep-ru"), record("zh", id="keep-zh"),
               record("en", id="dup"),  # same image and text as "keep"
               record("en", "According to the caption, a man rides a bicycle down the street.", id="caption"),
               {"id": "broken", "image": "a.jpg", "conversations": [{"from": "gpt", "value": "hi"}]},
               record("en", question="What is the man doing on the left side of the strret?", id="typo-q"),
               record("en", CLEAN["en"][1].replace("behind him.", "behind them."), id="near", image="b.jpg"),
               record("en", id="same-conv", image="c.jpg"),  # the whole conversation of "keep", another image
               record("en", "A man rides a bicycle past a bakery on a rainy day in the city.", id="img-dup",
                      image="a_copy.jpg")]
    source = _write(tmp_path / "in.jsonl", records)
    result = run_cli("filter", str(source), "--out", str(tmp_path / "kept.json"), "--rejects",
                     str(tmp_path / "rejects.jsonl"), "--image-root", str(tmp_path / "img"), "--near-dup", "0.8",
                     "--image-dup", "4")
    assert result.returncode == 0, result.stderr
    kept = [r["id"] for r in read_records(tmp_path / "kept.json")]
    assert kept == ["keep", "keep-ru", "keep-zh"]
    rejects = {r["id"]: (r["reject_stage"], r["reject_reason"]) for r in read_records(tmp_path / "rejects.jsonl")}
    assert rejects["dup"] == ("dedup", "exact_duplicate: same as keep")
    assert rejects["same-conv"] == ("dedup", "same_conversation: same whole conversation as keep, another image")
    assert rejects["caption"][0] == "heuristics" and rejects["caption"][1].startswith("annotation_source")
    assert rejects["broken"][0] == "structure" and "no_alternation" in rejects["broken"][1]
    assert rejects["typo-q"][0] == "spelling" and "strret" in rejects["typo-q"][1]
    assert rejects["near"][0] == "near_dedup" and "keep" in rejects["near"][1]
    assert rejects["img-dup"][0] == "image_dedup" and "keep" in rejects["img-dup"][1]
    report = json.loads((tmp_path / "kept.json.report.json").read_text())
    assert report["records_in"] == 10 and report["records_out"] == 3 and report["rejected"] == 7
    assert report["steps"]["heuristics"]["rejected_by_reason"] == {"annotation_source": 1}
    again = run_cli("filter", str(source), "--out", str(tmp_path / "k2.jsonl"), "--rejects",
                    str(tmp_path / "r2.jsonl"), "--workers", "2", "--no-spelling")
    assert again.returncode == 0, again.stderr
    assert [r["id"] for r in read_records(tmp_path / "k2.jsonl")] == ["keep", "keep-ru", "keep-zh", "typo-q",
                                                                      "near", "img-dup"]


def test_filter_config_file(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", [record("en", id="short", answer="Yes, it is.")])
    config = tmp_path / "f.yaml"
    config.write_text("stages: [structure, heuristics]\nmin_answer_chars: 20\n")
    result = run_cli("filter", str(source), "--out", str(tmp_path / "k.jsonl"), "--rejects", str(tmp_path / "r.jsonl"),
                     "--config", str(config))
    assert result.returncode == 0 and "too_short 1" in result.stderr
    config.write_text("stages: [structure]\nunknown_key: 1\n")
    bad = run_cli("filter", str(source), "--out", str(tmp_path / "k.jsonl"), "--rejects", str(tmp_path / "r.jsonl"),
                  "--config", str(config))
    assert bad.returncode == 2 and "unknown setting(s) unknown_key" in bad.stderr


@pytest.mark.parametrize("content, message", [
    (b'[{"id": "1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, {"id": ',
     "not valid JSON after 1 records"),
    (b'{"not": "a list"}', "the top level is not a JSON list"),
    (b'["just a string"]', "not_an_object"),
    (b'[{"id": 1, "conversations": "text"}]', "no_conversations"),
    (b'[{"id": 1, "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]}]', "bad_value"),
    (b'[{"id": "\xff\xfe", "conversations": []}]', "not valid JSON"),
])
def test_validate_and_filter_on_malformed_input(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = run_cli("validate", str(path))
    assert result.returncode == 1 and message in result.stdout, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    filtered = run_cli("filter", str(path), "--out", str(tmp_path / "k.json"), "--rejects", str(tmp_path / "r.json"))
    assert "Traceback" not in filtered.stderr
    if "JSON" in message or "list" in message:
        assert filtered.returncode == 2 and not (tmp_path / "k.json").exists() and not (tmp_path / "r.json").exists()
        assert not list(tmp_path.glob(".*.tmp"))


def test_validate_reports_every_problem_with_index_and_id(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    records = [{"id": "a", "image": "ok.jpg", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                {"from": "gpt", "value": "a"}]},
               {"id": "b", "image": "missing.jpg", "conversations": [{"from": "human", "value": "q"},
                                                                     {"from": "gpt", "value": "a"}]},
               {"id": "c", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": ""}]},
               {"id": "d", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"},
                                             {"from": "human", "value": "more?"}]}]
    path = _write(tmp_path / "v.jsonl", records)
    result = run_cli("validate", str(path), "--image-root", str(tmp_path / "img"), "--check-images")
    out = result.stdout
    assert result.returncode == 1
    assert "record 0 (id 'a'): image_undecodable: ok.jpg" in out
    assert "record 1 (id 'b'): image_token_mismatch: 0 <image> token(s) for 1 image(s)" in out
    assert "record 2 (id 'c'): bad_from: turn 1 has from='bot'" in out and "empty_value: turn 1" in out
    assert "record 3 (id 'd'): not_ending_with_gpt" in out
    assert "4 records read, 4 invalid" in out
    untagged = run_cli("validate", str(path), "--allow-untagged")
    assert "record 1 (id 'b')" not in untagged.stdout


def test_digest_table_matches_a_dict_through_growth() -> None:
    import random

    from visinstruct.filters.dedup import DigestTable

    table, reference, rng = DigestTable(capacity=4), {}, random.Random(3)
    digests = [rng.getrandbits(64) | 1 for _ in range(5000)]
    for number in range(20000):
        digest = rng.choice(digests)
        expected = reference.setdefault(digest, number)
        assert table.get_or_add(digest, number) == (None if expected == number else expected)
    assert table.size == len(reference) and table.capacity >= len(reference)


def _conversation(record_id: str, image: str, *answers: str) -> dict:
    turns = []
    for i, answer in enumerate(answers):
        turns += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + f"Question {i}?"},
                  {"from": "gpt", "value": answer}]
    return {"id": record_id, "image": image, "conversations": turns}


def test_exact_dedup_catches_a_whole_conversation_repeated_on_another_image() -> None:
    from visinstruct.filters.dedup import ExactDedup

    long_answer = ("The kitchen has white cabinets, a gas stove with four burners and a window above the sink "
                   "that looks out onto a small garden.")
    two_answers = ("A red bus is parked at the curb.", "Two people wait at the stop, one with an umbrella.")
    stage = ExactDedup()
    assert stage.check(_conversation("first", "a.jpg", long_answer)) is None
    assert stage.check(_conversation("pair", "a.jpg", *two_answers)) is None
    verdict = stage.check(_conversation("other-image", "b.jpg", long_answer))
    assert isinstance(verdict, Reject) and verdict.code == "same_conversation" and "as first," in verdict.reason
    verdict = stage.check(_conversation("pair-again", "c.jpg", *two_answers))  # 2 answers of 25+ characters
    assert isinstance(verdict, Reject) and verdict.code == "same_conversation" and "as pair," in verdict.reason
    verdict = stage.check(_conversation("same-image", "a.jpg", "  " + long_answer.upper()))  # normalised
    assert isinstance(verdict, Reject) and verdict.reason == "exact_duplicate: same as first"
    verdict = stage.check(_conversation("after-reject", "b.jpg", long_answer))  # the rejected one is not kept
    assert isinstance(verdict, Reject) and "as first," in verdict.reason


def test_exact_dedup_keeps_short_generic_answers_on_other_images() -> None:
    from visinstruct.filters.dedup import ExactDedup

    stage = ExactDedup()
    short = [("Yes.",), ("Two.",), ("Yes.", "Two.", "Red."), ("It is red.", "Yes, there is a dog nearby.")]
    for n, answers in enumerate(short):
        for image in ("a.jpg", "b.jpg", "c.jpg"):
            assert stage.check(_conversation(f"{n}-{image}", image, *answers)) is None, (answers, image)
    verdict = stage.check(_conversation("again", "b.jpg", "Two."))  # same image, same text: still a duplicate
    assert isinstance(verdict, Reject) and verdict.reason == "exact_duplicate: same as 1-b.jpg"
