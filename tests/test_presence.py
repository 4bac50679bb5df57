"""The presence task: balanced yes/no questions about present and absent objects, made without a teacher."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from visinstruct.generate.parse import Conversation, parse_conversations
from visinstruct.generate.presence import Cooccurrence, plan, presence_pairs, presence_reply, subject_forms, wording
from visinstruct.generate.tasks import LANGS, REGISTRY, resolve
from visinstruct.grounding.scan import scan
from visinstruct.grounding.vocab import categories
from visinstruct.sources.coco import load_caps_boxes
from visinstruct.sources.scene import Box, Scene

# id → (box categories, captions, categories the captions name that no box holds)
IMAGES = {
    "kitchen": (["oven", "sink", "refrigerator", "microwave", "person", "bowl", "cup"],
                ["A woman cooks in a kitchen while her dog waits by the dining table."], ["dog", "dining table"]),
    "dinner": (["dining table", "pizza", "fork", "knife", "cup", "person", "wine glass"],
               ["Friends share a pizza; a cat sleeps on a chair nearby."], ["cat", "chair"]),
    "living": (["couch", "tv", "remote", "cat", "potted plant", "book"],
               ["A cat on a sofa in front of the television, a laptop on the cushion."], ["laptop"]),
    "street": (["car", "bus", "traffic light", "person", "truck"],
               ["A city bus stops at a red light as a bicycle passes."], ["bicycle"]),
    "beach": (["surfboard", "person", "umbrella", "kite"], ["People on a sandy beach under umbrellas."], []),
    "court": (["person", "tennis racket", "sports ball"], ["A tennis player swings at the ball."], []),
    "savanna": (["giraffe", "zebra", "elephant"], ["Giraffes, zebras and an elephant graze together."], []),
    "bedroom": (["bed", "book", "clock", "teddy bear"], ["A teddy bear on a bed next to a stack of books."], []),
    "bath": (["toilet", "sink", "toothbrush"], ["A small bathroom with a toilet and a sink."], []),
    "park": (["bench", "dog", "frisbee", "person", "bicycle"],
             ["A dog catches a frisbee in the park; a man sits on a bench, a car parked behind him."], ["car"]),
    "table": (["dining table", "cup", "fork", "knife", "chair", "bowl"],
              ["A set table with plates, forks and knives."], []),
    "desk": (["laptop", "keyboard", "mouse", "tv", "cup", "chair"], ["A desk with a laptop and a monitor."], []),
}
YES = {"en": ("Yes",), "ru": ("Да",), "zh": ("是的", "有，")}
NO = {"en": ("No",), "ru": ("Нет",), "zh": ("没有", "不，")}


def _write_caps_boxes(path: Path) -> None:
    rows = [{"id": name, "image": f"{name}.jpg", "captions": captions,
             "instances": [{"category": c, "bbox": [0.1 * (i % 5), 0.1, 0.1 * (i % 5) + 0.2, 0.6]}
                           for i, c in enumerate(cats)]}
            for name, (cats, captions, _) in IMAGES.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def scenes(tmp_path: Path) -> list[Scene]:
    path = tmp_path / "caps_boxes.jsonl"
    _write_caps_boxes(path)
    return list(load_caps_boxes(path))


def _scene(image_id: str, names: list[str], captions: list[str] | None = None,
           regions: list[str] | None = None) -> Scene:
    return Scene(image_id, f"{image_id}.jpg", captions or [], [Box(n, [0.1, 0.1, 0.5, 0.5]) for n in names],
                 regions=[Box(r, [0.0, 0.0, 1.0, 1.0]) for r in regions or []])


@pytest.mark.parametrize("lang", LANGS)
def test_balanced_and_absent_objects_really_absent(scenes: list[Scene], lang: str) -> None:
    cooc = Cooccurrence.of(scenes)
    assert {c for _, _, m in IMAGES.values() for c in m} <= set(cooc.vocabulary)  # the planted ones are askable
    kinds: dict[str, int] = {}
    for scene in scenes:
        cats, _, mentioned = IMAGES[scene.image_id]
        for n in range(20):
            unit = f"{scene.image_id}-presence-{lang}-{n}"
            asks = plan(scene, lang, unit, cooc)
            assert sum(a.present for a in asks) == sum(not a.present for a in asks) == min(3, len(set(cats)))
            for ask in asks:
                kinds[ask.kind] = kinds.get(ask.kind, 0) + 1
                assert (ask.subject in cats) == ask.present
                assert ask.subject not in mentioned
            for ask, (question, answer) in zip(asks, presence_pairs(scene, lang, unit, cooc), strict=True):
                assert answer.startswith(YES[lang] if ask.present else NO[lang]), (question, answer)
    assert kinds["adversarial"] > 100 and kinds["random"] > 100 and kinds["present"] == sum(kinds.values()) / 2


def test_caption_mentions_are_what_keeps_them_out(scenes: list[Scene]) -> None:
    """Without its captions the kitchen gets asked about the dog or the dining table as absent: so the captions
    are what rules them out above."""
    cooc = Cooccurrence.of(scenes)
    kitchen = next(s for s in scenes if s.image_id == "kitchen")
    kitchen.captions = []
    asked = {a.subject for n in range(40) for a in plan(kitchen, "en", f"k{n}", cooc) if not a.present}
    assert asked & {"dog", "dining table"}


def test_adversarial_picks_are_the_most_cooccurring() -> None:
    cooc = Cooccurrence.of([_scene(f"k{i}", ["knife", "fork", "cup"]) for i in range(5)]
                           + [_scene(f"s{i}", ["car", "bus"]) for i in range(8)]
                           + [_scene(f"z{i}", ["giraffe"]) for i in range(3)])
    scene = _scene("x", ["knife", "dining table"])
    for n in range(30):
        adversarial = [a.subject for a in plan(scene, "en", f"x{n}", cooc, pairs=2) if a.kind == "adversarial"]
        assert adversarial == ["cup"]  # two pairs: one absent object adversarial, one random
    assert cooc.adversarial(["knife"], [], 3) == ["cup", "fork", "bus"]  # 5, 5 (by name), then the most frequent
    assert cooc.adversarial(["knife"], ["cup"], 1) == ["fork"]
    assert cooc.together("fork", "knife") == cooc.together("knife", "fork") == 5 and cooc.together("car", "cup") == 0


def test_cooccurrence_counts_merge_and_stay_bounded() -> None:
    rng = random.Random(7)
    cats = list(categories())
    shards = [[_scene(f"{s}-{i}", rng.sample(cats, rng.randint(1, 6))) for i in range(300)] for s in range(3)]
    whole = Cooccurrence.of(scene for shard in shards for scene in shard)
    merged = Cooccurrence()
    for shard in shards:
        merged.merge(Cooccurrence.of(shard))
    shipped = Cooccurrence.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert merged.to_dict() == whole.to_dict() == shipped.to_dict()
    assert whole.images == 900 and len(whole.to_dict()["pairs"]) <= 80 * 79 // 2
    assert sum(map(len, whole.neighbours.values())) <= 80 * 79 and set(whole.vocabulary) <= set(cats)
    first = shards[0][0]
    present = {b.category for b in first.boxes}
    assert whole.counts[first.boxes[0].category] == sum(
        first.boxes[0].category in {b.category for b in s.boxes} for shard in shards for s in shard)
    assert not set(whole.random(present, [], 80, "a")) & present
    assert whole.random(present, [], 5, "a") == whole.random(present, [], 5, "a") != whole.random(present, [], 5, "b")


def test_reproducible_with_a_seed_and_different_with_another(scenes: list[Scene]) -> None:
    cooc = Cooccurrence.of(scenes)
    for lang in LANGS:
        first = [presence_reply(s, lang, f"{s.image_id}-1", cooc) for s in scenes]
        assert first == [presence_reply(s, lang, f"{s.image_id}-1", cooc) for s in scenes]
        other = [presence_reply(s, lang, f"{s.image_id}-2", cooc) for s in scenes]
        assert sum(a != b for a, b in zip(first, other, strict=True)) >= len(scenes) // 2


@pytest.mark.parametrize("lang", LANGS)
def test_reply_round_trips_through_the_parser(scenes: list[Scene], lang: str) -> None:
    cooc = Cooccurrence.of(scenes)
    for scene in scenes:
        unit = f"{scene.image_id}-0"
        reply = presence_reply(scene, lang, unit, cooc)
        assert reply is not None
        assert parse_conversations(reply) == [Conversation(None, presence_pairs(scene, lang, unit, cooc))]


def test_no_question_without_boxes_or_absent_candidates(scenes: list[Scene]) -> None:
    cooc = Cooccurrence.of(scenes)
    bare = _scene("empty", [], captions=["A dog runs on the beach."])
    assert presence_reply(bare, "en", "e", cooc) is None and presence_pairs(bare, "ru", "e", cooc) == []
    lonely = _scene("dog", ["dog"])
    assert presence_reply(lonely, "zh", "d", Cooccurrence.of([lonely])) is None  # nothing else seen in the input
    assert presence_reply(lonely, "en", "d", Cooccurrence()) is None


def test_visual_genome_names() -> None:
    """Names no table knows are asked (present) in English only, singular ones, with the right article; a
    region phrase rules its objects out as absent."""
    cooc = Cooccurrence.of([_scene(f"o{i}", ["dog", "frisbee", "person", "car"]) for i in range(4)])
    vg = _scene("vg", ["white shirt", "tree", "trees", "grass", "man", "old fence"], regions=["a dog on the grass"])
    asked = [plan(vg, "en", f"vg{n}", cooc, pairs=5) for n in range(30)]
    subjects = {a.subject for asks in asked for a in asks}
    assert {a.subject for asks in asked for a in asks if a.present} == {"person", "white shirt", "tree", "grass",
                                                                        "old fence"}
    assert "trees" not in subjects and "dog" not in subjects
    assert all(len(asks) == 4 for asks in asked)  # two absent candidates (frisbee, car), so two yes questions
    assert subject_forms("white shirt", "en") == {"a": "a white shirt", "noun": "white shirt"}
    assert subject_forms("grass", "en") == {"a": "grass", "noun": "grass"}
    assert subject_forms("old fence", "en") == {"a": "an old fence", "noun": "old fence"}
    for lang in ("ru", "zh"):
        assert subject_forms("tree", lang) is None
        asks = plan(vg, lang, "vg", cooc, pairs=5)
        assert [a.subject for a in asks if a.present] == ["person"] and len(asks) == 2


def test_a_name_that_can_mean_a_present_object_is_not_asked_absent() -> None:
    """zh 滑雪板 is skis or snowboard: with a snowboard in the image it is never asked as absent skis."""
    cooc = Cooccurrence.of([_scene(f"m{i}", ["skis", "snowboard", "person"]) for i in range(5)]
                           + [_scene("c", ["cat", "car", "bus"])])
    scene = _scene("s", ["snowboard", "person"])
    zh = {a.subject for n in range(40) for a in plan(scene, "zh", f"s{n}", cooc) if not a.present}
    en = {a.subject for n in range(40) for a in plan(scene, "en", f"s{n}", cooc) if not a.present}
    assert "skis" in en and "skis" not in zh and zh


# the synonym tables leave these forms out on purpose ("orange" is also a colour, "часов" also "hours")
UNSCANNED = {("en", "orange"), ("ru", "clock")}


@pytest.mark.parametrize("lang", LANGS)
def test_names_read_back_as_their_category(lang: str) -> None:
    """Every COCO category has a name in every language, and the audit's scanner reads each question and yes
    answer as that category, and each no answer as that category negated."""
    words = wording(lang)
    assert list(words.names) == list(categories())
    for cat in categories():
        if (lang, cat) in UNSCANNED:
            continue
        forms = subject_forms(cat, lang)
        assert forms is not None
        for text in [t.format(**forms) for t in words.questions + words.yes]:
            assert any(cat in m.entry.categories and not m.negated for m in scan(text, lang)), text
        for text in [t.format(**forms) for t in words.no]:
            mentions = scan(text, lang)
            assert mentions and all(m.negated for m in mentions), text
            assert any(cat in m.entry.categories for m in mentions), text


def test_registered_as_a_task_without_teacher() -> None:
    task = REGISTRY[("text", "presence")]
    assert not task.teacher and not task.default and task.mode == "text"
    assert task not in resolve(None, "text") and resolve(["presence"], "text") == [task]
    assert all(t.teacher for t in REGISTRY.values() if t is not task)


@pytest.mark.parametrize("lang", LANGS)
def test_generate_presence_end_to_end_sends_nothing_and_resumes(tmp_path: Path, lang: str) -> None:
    from conftest import read_records, run_cli

    caps = tmp_path / "caps.jsonl"
    _write_caps_boxes(caps)
    out = tmp_path / "p.jsonl"
    args = ["generate", "--caps-boxes", str(caps), "--out", str(out), "--tasks", "presence", "--lang", lang,
            "--no-progress", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]  # nothing listens there
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    records = read_records(out)
    assert records and {r["task"] for r in records} == {"presence"} and {r["lang"] for r in records} == {lang}
    answers = [t["value"] for r in records for t in r["conversations"] if t["from"] == "gpt"]
    said_yes = sum(1 for a in answers if a.startswith(YES[lang]))
    said_no = sum(1 for a in answers if a.startswith(NO[lang]))
    assert said_yes == said_no and said_yes + said_no == len(answers)  # balanced over the file
    again = run_cli(*args)
    assert again.returncode == 0 and f"from ledger: {len(records)}" in again.stderr
    assert read_records(out) == records
