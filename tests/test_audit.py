"""`visinstruct audit`: answers checked against annotations the tests write (COCO instances, caps-boxes,
Visual Genome), in English, Russian and Chinese: planted hallucinated objects, wrong counts and unmatched
boxes are found; clean answers (synonyms, plurals, Russian cases, Chinese measure words, vague quantities,
negations) are not flagged; CHAIR matches a hand count; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from conftest import read_records, run_cli
from visinstruct.cli import main

# The tests' own words (not the package's tables): category → en (singular, plural, another word),
# ru (nominative, genitive singular, genitive plural, instrumental, gender), zh (word, measure word, another word).
WORDS = {
    "person": (("person", "people", "man"), ("человек", "человека", "человек", "человеком", "m"),
               ("人", "个", "男人")),
    "dog": (("dog", "dogs", "puppy"), ("собака", "собаки", "собак", "собакой", "f"), ("狗", "只", "小狗")),
    "cat": (("cat", "cats", "kitten"), ("кошка", "кошки", "кошек", "кошкой", "f"), ("猫", "只", "小猫")),
    "car": (("car", "cars", "sedan"), ("машина", "машины", "машин", "машиной", "f"), ("汽车", "辆", "轿车")),
    "bicycle": (("bicycle", "bicycles", "bicycle"), ("велосипед", "велосипеда", "велосипедов", "велосипедом", "m"),
                ("自行车", "辆", "单车")),
    "bus": (("bus", "buses", "school bus"), ("автобус", "автобуса", "автобусов", "автобусом", "m"),
            ("公交车", "辆", "巴士")),
    "horse": (("horse", "horses", "pony"), ("лошадь", "лошади", "лошадей", "лошадью", "f"), ("马", "匹", "骏马")),
    "sheep": (("sheep", "sheep", "lamb"), ("овца", "овцы", "овец", "овцой", "f"), ("绵羊", "只", "羊")),
    "cow": (("cow", "cows", "cow"), ("корова", "коровы", "коров", "коровой", "f"), ("牛", "头", "奶牛")),
    "elephant": (("elephant", "elephants", "elephant"), ("слон", "слона", "слонов", "слоном", "m"),
                 ("大象", "头", "大象")),
    "bird": (("bird", "birds", "pigeon"), ("птица", "птицы", "птиц", "птицей", "f"), ("鸟", "只", "鸽子")),
    "umbrella": (("umbrella", "umbrellas", "parasol"), ("зонт", "зонта", "зонтов", "зонтом", "m"),
                 ("伞", "把", "雨伞")),
    "bench": (("bench", "benches", "park bench"), ("скамейка", "скамейки", "скамеек", "скамейкой", "f"),
              ("长椅", "张", "长凳")),
    "cup": (("cup", "cups", "mug"), ("чашка", "чашки", "чашек", "чашкой", "f"), ("杯子", "个", "马克杯")),
    "bottle": (("bottle", "bottles", "water bottle"), ("бутылка", "бутылки", "бутылок", "бутылкой", "f"),
               ("瓶子", "个", "水瓶")),
    "chair": (("chair", "chairs", "stool"), ("стул", "стула", "стульев", "стулом", "m"), ("椅子", "把", "凳子")),
    "couch": (("couch", "couches", "sofa"), ("диван", "дивана", "диванов", "диваном", "m"), ("沙发", "张", "长沙发")),
    "dining table": (("table", "tables", "dining table"), ("стол", "стола", "столов", "столом", "m"),
                     ("桌子", "张", "餐桌")),
    "pizza": (("pizza", "pizzas", "pizza"), ("пицца", "пиццы", "пицц", "пиццей", "f"), ("披萨", "个", "比萨")),
    "laptop": (("laptop", "laptops", "laptop computer"), ("ноутбук", "ноутбука", "ноутбуков", "ноутбуком", "m"),
               ("笔记本电脑", "台", "手提电脑")),
    "book": (("book", "books", "novel"), ("книга", "книги", "книг", "книгой", "f"), ("书", "本", "书籍")),
    "boat": (("boat", "boats", "sailboat"), ("лодка", "лодки", "лодок", "лодкой", "f"), ("船", "艘", "小船")),
    "truck": (("truck", "trucks", "pickup truck"), ("грузовик", "грузовика", "грузовиков", "грузовиком", "m"),
              ("卡车", "辆", "货车")),
    "giraffe": (("giraffe", "giraffes", "giraffe"), ("жираф", "жирафа", "жирафов", "жирафом", "m"),
                ("长颈鹿", "只", "长颈鹿")),
    "zebra": (("zebra", "zebras", "zebra"), ("зебра", "зебры", "зебр", "зеброй", "f"), ("斑马", "匹", "斑马")),
    "kite": (("kite", "kites", "kite"), ("воздушный змей", "воздушного змея", "воздушных змеев",
                                         "воздушным змеем", "m"), ("风筝", "只", "风筝")),
    "skateboard": (("skateboard", "skateboards", "skate board"),
                   ("скейтборд", "скейтборда", "скейтбордов", "скейтбордом", "m"), ("滑板", "块", "滑板")),
    "clock": (("clock", "clocks", "wall clock"), ("будильник", "будильника", "будильников", "будильником", "m"),
              ("时钟", "个", "挂钟")),
}
CATS = list(WORDS)
EN_NUM = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
RU_NUM = {1: {"m": "один", "f": "одна"}, 2: {"m": "два", "f": "две"}, 3: "три", 4: "четыре", 5: "пять",
          6: "шесть", 7: "семь", 8: "восемь", 9: "девять", 10: "десять"}
ZH_NUM = ["", "一", "两", "三", "四", "五", "六", "七", "八", "九", "十"]
FILLER = {"en": "The light is soft and the scene looks calm.", "ru": "Свет мягкий, и сцена выглядит спокойной.",
          "zh": "光线柔和，画面看起来很安静。"}
SIZES = ((640, 480), (480, 640), (500, 500), (800, 600))


# ---- sentences ---------------------------------------------------------------------------------------

def en_count(cat: str, n: int, rng: random.Random) -> str:
    sg, pl, other = WORDS[cat][0]
    if n == 1:
        return rng.choice([f"There is one {sg} in the picture.", f"A {other} can be seen here.",
                           f"I notice a {sg} near the middle."])
    number = rng.choice([EN_NUM[n], str(n)])
    return rng.choice([f"There are {number} {pl} in the picture.", f"I can count {number} {pl}.",
                       f"Exactly {number} {pl} are visible."])


def ru_count(cat: str, n: int, rng: random.Random) -> str:
    nom, gen_sg, gen_pl, instr, gender = WORDS[cat][1]
    if n == 1:
        return rng.choice([f"На фото есть {nom}.", f"Снимок сделан рядом с {instr}.", f"Здесь виден {nom}."
                           if gender == "m" else f"Здесь видна {nom}."])
    word = RU_NUM[n][gender] if isinstance(RU_NUM[n], dict) else RU_NUM[n]
    number = rng.choice([word, str(n)])
    form = gen_sg if n < 5 else gen_pl
    return rng.choice([f"На снимке {number} {form}.", f"Можно насчитать {number} {form}.",
                       f"Всего здесь {number} {form}."])


def zh_count(cat: str, n: int, rng: random.Random) -> str:
    word, measure, other = WORDS[cat][2]
    if n == 1:
        return rng.choice([f"图中有一{measure}{word}。", f"画面中可以看到{other}。"])
    number = rng.choice([ZH_NUM[n], str(n)])
    return rng.choice([f"图中有{number}{measure}{word}。", f"画面里一共有{number}{measure}{word}。"])


COUNT = {"en": en_count, "ru": ru_count, "zh": zh_count}


def planted_object(cat: str, lang: str) -> tuple[str, str]:
    """A sentence naming `cat` (absent from the image) and the word that names it."""
    if lang == "en":
        return f"A {WORDS[cat][0][0]} is also visible on the left.", WORDS[cat][0][0]
    if lang == "ru":
        return f"Слева также стоит {WORDS[cat][1][0]}.", WORDS[cat][1][0]
    word, measure, _ = WORDS[cat][2]
    return f"左边还有一{measure}{word}。", word


# ---- annotations -------------------------------------------------------------------------------------

def _grid_boxes(n: int, width: int, height: int) -> list[list[float]]:
    """`n` pixel `[x, y, w, h]` boxes in a 4 x 3 grid of cells (no two overlap)."""
    cells = [(c, r) for r in range(3) for c in range(4)]
    cw, ch = width / 4, height / 3
    return [[round(c * cw + 4, 1), round(r * ch + 4, 1), round(cw - 12, 1), round(ch - 12, 1)]
            for c, r in cells[:n]]


def make_images(count: int, seed: int = 3) -> list[dict]:
    """Images with 2–3 categories of the table, 1–4 objects each (placed in separate grid cells)."""
    rng = random.Random(seed)
    images = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        cats = rng.sample(CATS, 3 if i % 3 else 2)
        objects = {cat: rng.randint(1, 3 if len(cats) == 3 else 4) for cat in cats}
        boxes = _grid_boxes(sum(objects.values()), width, height)
        anns = []
        for cat, n in objects.items():
            anns += [(cat, boxes.pop(0)) for _ in range(n)]
        images.append({"id": 1000 + i, "file_name": f"{1000 + i:012d}.jpg", "width": width, "height": height,
                       "objects": objects, "anns": anns})
    return images


def write_coco(path: Path, images: list[dict], crowd: dict[int, str] | None = None) -> Path:
    """An instances file; `crowd` adds one iscrowd=1 region of a category to an image (by id)."""
    ids = {c: k + 1 for k, c in enumerate(CATS)}
    annotations = []
    for img in images:
        for cat, box in img["anns"]:
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": ids[cat],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    for image_id, cat in (crowd or {}).items():
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[cat],
                            "bbox": [1, 1, 60, 60], "area": 3600, "iscrowd": 1})
    doc = {"images": [{k: img[k] for k in ("id", "file_name", "width", "height")} for img in images],
           "categories": [{"id": ids[c], "name": c} for c in CATS], "annotations": annotations}
    path.write_text(json.dumps(doc))
    return path


def norm_box(box: list[float], width: int, height: int) -> list[float]:
    x, y, w, h = box
    return [round(x / width, 3), round(y / height, 3), round((x + w) / width, 3), round((y + h) / height, 3)]


def padded(box: list[float], width: int, height: int) -> list[float]:
    """The test's own square padding: the image centred on the long side."""
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    x1, y1, x2, y2 = box
    return [round(v, 3) for v in ((x1 * width + dx) / side, (y1 * height + dy) / side,
                                  (x2 * width + dx) / side, (y2 * height + dy) / side)]


def overlap(a: list[float], b: list[float]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def far_box(boxes: list[list[float]], rng: random.Random) -> list[float]:
    """A box overlapping none of `boxes` by IoU 0.2 or more."""
    while True:
        x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
        box = [round(x, 3), round(y, 3), round(x + rng.uniform(0.05, 0.2), 3), round(y + rng.uniform(0.05, 0.2), 3)]
        if all(overlap(box, b) < 0.2 for b in boxes):
            return box


def fmt(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


# ---- records -----------------------------------------------------------------------------------------

def record(rid: str, image: str, answers: list[str], task: str, lang: str) -> dict:
    turns = []
    for k, answer in enumerate(answers):
        turns += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + "Describe the image."},
                  {"from": "gpt", "value": answer}]
    return {"id": rid, "image": image, "conversations": turns, "task": task, "lang": lang}


def clean_answer(img: dict, lang: str, rng: random.Random) -> str:
    parts = [COUNT[lang](cat, n, rng) for cat, n in img["objects"].items()]
    rng.shuffle(parts)
    return " ".join([*parts, FILLER[lang]]) if lang != "zh" else "".join([*parts, FILLER[lang]])


def referring_answer(img: dict, lang: str, frame: str, extra: list[float] | None = None) -> str:
    """Each category named with its first box (tags in the native frame, bare padded boxes in llava15)."""
    parts = []
    for cat in img["objects"]:
        box = norm_box(next(b for c, b in img["anns"] if c == cat), img["width"], img["height"])
        word = WORDS[cat][{"en": 0, "ru": 1, "zh": 2}[lang]][0]
        if frame == "llava15":
            parts.append(f"{word} {fmt(padded(box, img['width'], img['height']))}")
        else:
            parts.append(f"<st>{word}<ed> {fmt(box)}")
    if extra is not None:
        cat = next(iter(img["objects"]))
        word = WORDS[cat][{"en": 0, "ru": 1, "zh": 2}[lang]][0]
        parts.append(f"<st>{word}<ed> {fmt(extra)}" if frame == "native" else f"{word} {fmt(extra)}")
    return ("；" if lang == "zh" else "; ").join(parts)


def build_sets(images: list[dict], seed: int = 11) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """Clean records (ids ending in -clean) and planted ones (id → (kind, planted text)) for every image and
    language: one defect each, the kinds in turn."""
    rng = random.Random(seed)
    records, planted = [], {}
    for i, img in enumerate(images):
        for k, lang in enumerate(("en", "ru", "zh")):
            frame = ("native", "llava15")[(i + k) % 2]
            base = f"{img['id']}-{lang}"
            if (i + k) % 4 == 0:
                records.append(record(f"{base}-ref-clean", img["file_name"], [referring_answer(img, lang, frame)],
                                      "referring_qa", lang))
            records.append(record(f"{base}-clean", img["file_name"], [clean_answer(img, lang, rng),
                                                                      FILLER[lang]], "detail", lang))
            kind = ("object", "count", "box")[(i + k) % 3]
            if kind == "object":
                absent = rng.choice([c for c in CATS if c not in img["objects"] and c != "person"])
                sentence, word = planted_object(absent, lang)
                answer = clean_answer(img, lang, rng) + (" " if lang != "zh" else "") + sentence
                records.append(record(f"{base}-planted", img["file_name"], [answer], "detail", lang))
                planted[f"{base}-planted"] = ("object", word)
            elif kind == "count":  # the first category's number replaced: more than annotated, or fewer
                cat, n = next(iter(img["objects"].items()))
                wrong = n - 1 if n >= 3 and i % 2 else n + rng.choice([1, 2]) if n > 1 else rng.choice([2, 3])
                answer = clean_answer({**img, "objects": {**img["objects"], cat: wrong}}, lang, rng)
                records.append(record(f"{base}-planted", img["file_name"], [answer], "detail", lang))
                planted[f"{base}-planted"] = ("count", f"says {wrong},")
            else:
                boxes = [norm_box(b, img["width"], img["height"]) for _, b in img["anns"]]
                boxes = boxes if frame == "native" else [padded(b, img["width"], img["height"]) for b in boxes]
                extra = far_box(boxes, rng)
                records.append(record(f"{base}-planted", img["file_name"],
                                      [referring_answer(img, lang, frame, extra)], "referring_qa", lang))
                planted[f"{base}-planted"] = ("box", fmt(extra))
    return records, planted


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def run_audit(tmp_path: Path, records: list[dict], *flags: str, name: str = "in.jsonl") -> tuple[dict, dict]:
    """Audit `records` in-process; returns (record id → audit object, report)."""
    source = write_jsonl(tmp_path / name, records)
    out, report = tmp_path / f"out-{name}", tmp_path / f"report-{name}.json"
    assert main(["audit", str(source), *flags, "--out", str(out), "--report", str(report), "--no-progress"]) == 0
    return {r["id"]: r["audit"] for r in read_records(out)}, json.loads(report.read_text())


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("coco")
    images = make_images(40)
    return write_coco(folder / "instances.json", images), images


# ---- the tables --------------------------------------------------------------------------------------

def test_tables_cover_the_80_categories_and_every_word_names_its_category() -> None:
    from visinstruct.grounding.scan import scan
    from visinstruct.grounding.vocab import categories, lexicon

    assert len(categories()) == 80 and len(set(categories())) == 80
    wrong = []
    for lang in ("en", "ru", "zh"):
        table = lexicon(lang).table
        assert list(table["categories"]) == list(categories()), lang
        for cat, words in table["categories"].items():
            assert words, (lang, cat)
            for spec in words:  # ru: stem+CLASS → the stem with the class's first ending
                text = " ".join(part.split("+")[0] + table["endings"][part.split("+")[1]][0] if "+" in part
                                else part for part in spec.split())
                if not any(cat in m.entry.categories for m in scan(text, lang, labels=True)):
                    wrong.append((lang, cat, spec))
    assert not wrong, wrong


# ---- planted and clean sets --------------------------------------------------------------------------

def test_planted_defects_are_found_and_clean_answers_pass(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, planted = build_sets(images)
    audits, report = run_audit(tmp_path, records, "--coco-instances", str(instances))
    clean = [r["id"] for r in records if r["id"].endswith("-clean")]
    assert len(planted) >= 60 and len(clean) >= 60
    for lang in ("en", "ru", "zh"):
        assert sum(f"-{lang}-" in rid for rid in planted) >= 20 and sum(f"-{lang}-" in rid for rid in clean) >= 20
    assert {kind for kind, _ in planted.values()} == {"object", "count", "box"}
    missed = [(rid, want, audits[rid]) for rid, want in planted.items()
              if not any(p["kind"] == want[0] and want[1] in p["text"] + p["detail"] for p in audits[rid]["problems"])]
    false = [(rid, audits[rid]["problems"]) for rid in clean if not audits[rid]["ok"]]
    assert len(missed) <= 0.05 * len(planted), missed
    assert len(false) <= 0.05 * len(clean), false
    # planted records carry only their own defect (nothing else in them is wrong)
    extra = [(rid, audits[rid]["problems"]) for rid, (kind, _) in planted.items()
             if any(p["kind"] != kind for p in audits[rid]["problems"])]
    assert len(extra) <= 0.05 * len(planted), extra
    assert report["records"]["audited"] == len(records) and report["join"]["matched"] == len(records)
    assert set(report["by_lang"]) == {"en", "ru", "zh"} and set(report["by_task"]) == {"detail", "referring_qa"}
    assert report["boxes"]["records_native"] and report["boxes"]["records_llava15"] and not report["boxes"]["unchecked"]
    problem = next(p for p in audits[next(iter(planted))]["problems"])
    assert set(problem) == {"kind", "turn", "text", "detail"} and problem["turn"] in (1, 3)


def test_synonyms_plurals_cases_and_measure_words_are_not_flagged(tmp_path: Path,
                                                                    coco: tuple[Path, list[dict]]) -> None:
    """Each annotated category named every way the test knows, in each language, with no number."""
    instances, images = coco
    records = []
    for img in images[:24]:
        for cat in img["objects"]:
            (sg, pl, other), (nom, gen_sg, gen_pl, instr, _), (word, measure, zh_other) = WORDS[cat]
            answers = {"en": f"The {sg} and the {other} are here; {pl} like these are common.",
                       "ru": f"Рядом с {instr} светло. Возле {gen_sg} тень. Много {gen_pl}? {nom}!",
                       "zh": f"这{measure}{word}很好看，{zh_other}也在。一{measure}{zh_other}在旁边。"}
            for lang, answer in answers.items():
                records.append(record(f"{img['id']}-{cat}-{lang}", img["file_name"], [answer], "conversation", lang))
    audits, report = run_audit(tmp_path, records, "--coco-instances", str(instances))
    flagged = {rid: a["problems"] for rid, a in audits.items() if not a["ok"]}
    assert len(flagged) <= 0.05 * len(records), flagged
    assert report["mentions"] >= len(records)


@pytest.mark.parametrize("lang, answer", [
    ("en", "Several dogs, a few cats, some people, many birds, a couple of cups and a pair of skis."),
    ("en", "More than two dogs, about three cats, at least four people and two or three birds."),
    ("ru", "Несколько собак, много кошек, пара чашек, около трёх людей и две-три птицы."),
    ("zh", "有几只狗、一些猫、一群人、十几只鸟和两三个杯子。"),
])
def test_vague_quantities_are_not_flagged(tmp_path: Path, lang: str, answer: str) -> None:
    img = {"id": 1, "file_name": "a.jpg", "width": 600, "height": 400, "objects": {}, "anns": []}
    for cat, n in (("dog", 5), ("cat", 1), ("person", 7), ("bird", 1), ("cup", 6), ("skis", 1)):
        img["anns"] += [(cat, [10 + 30 * k, 10, 20, 20]) for k in range(n)]
    instances = _coco_with(tmp_path, [img])
    audits, _ = run_audit(tmp_path, [record("v", "a.jpg", [answer], "conversation", lang)],
                          "--coco-instances", str(instances))
    assert audits["v"] == {"ok": True, "problems": []}


def _coco_with(tmp_path: Path, images: list[dict]) -> Path:
    """An instances file with every category of the vague test (skis is not in the word table)."""
    cats = [*CATS, "skis"]
    ids = {c: k + 1 for k, c in enumerate(cats)}
    anns = [{"id": n, "image_id": img["id"], "category_id": ids[c], "bbox": b, "iscrowd": 0}
            for img in images for n, (c, b) in enumerate(img["anns"], start=1)]
    doc = {"images": [{k: img[k] for k in ("id", "file_name", "width", "height")} for img in images],
           "categories": [{"id": i, "name": c} for c, i in ids.items()], "annotations": anns}
    path = tmp_path / "vague_instances.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("lang, answer, flagged", [
    ("en", "There is no cat here, and no bus, bird or boat either.", set()),
    ("en", "No cat is chasing anything, but a truck is parked nearby.", {"truck"}),
    ("ru", "Кошки на фото нет. Без автобуса улица пуста, а рядом стоит грузовик.", {"грузовик"}),
    ("zh", "图中没有猫、鸟，但是有一辆卡车。", {"卡车"}),
    ("en", "No, a truck is parked there.", {"truck"}),          # a short "No," answer negates nothing after it
    ("ru", "Нет, рядом стоит грузовик.", {"грузовик"}),
    ("zh", "没有，旁边有一辆卡车。", {"卡车"}),
    ("en", "The cat is missing from the picture.", set()),
])
def test_negated_objects_are_not_claims(tmp_path: Path, coco: tuple[Path, list[dict]], lang: str, answer: str,
                                        flagged: set[str]) -> None:
    instances, images = coco
    img = next(i for i in images if not {"cat", "bus", "bird", "boat", "truck", "dog"} & set(i["objects"]))
    audits, _ = run_audit(tmp_path, [record("n", img["file_name"], [answer], "detail", lang)],
                          "--coco-instances", str(instances))
    assert {p["text"] for p in audits["n"]["problems"]} == flagged, audits["n"]


def test_crowd_regions_make_counts_a_lower_bound(tmp_path: Path) -> None:
    img = {"id": 7, "file_name": "c.jpg", "width": 640, "height": 480, "objects": {"person": 3},
           "anns": [("person", [10 + 100 * k, 10, 50, 50]) for k in range(3)]}
    instances = write_coco(tmp_path / "crowd.json", [img], crowd={7: "person"})
    answers = {"ten": "There are ten people at the market.", "four": "Four people stand in line.",
               "three": "Three people walk by.", "two": "Two people talk."}
    audits, _ = run_audit(tmp_path, [record(k, "c.jpg", [v], "detail", "en") for k, v in answers.items()],
                          "--coco-instances", str(instances))
    # three persons and a crowd region: at least four people
    assert audits["ten"]["ok"] and audits["four"]["ok"]
    assert [p["kind"] for p in audits["three"]["problems"]] == ["count"]
    assert [p["kind"] for p in audits["two"]["problems"]] == ["count"]
    assert "1 crowd region" in audits["two"]["problems"][0]["detail"]


def test_kinds_of_a_category_and_one_are_lower_bounds(tmp_path: Path) -> None:
    img = {"id": 8, "file_name": "k.jpg", "width": 640, "height": 480, "objects": {"person": 3, "dog": 2},
           "anns": [("person", [10 + 100 * k, 10, 50, 50]) for k in range(3)]
           + [("dog", [10 + 100 * k, 200, 50, 50]) for k in range(2)]}
    instances = write_coco(tmp_path / "kinds.json", [img])
    answers = {"ok-en": "Two men and a woman walk their dogs; one dog is black.",
               "ok-ru": "Двое мужчин гуляют с собаками, одна собака черная.",
               "ok-zh": "两个男人在遛狗，一只狗是黑色的。",
               "bad-en": "Four men walk the dogs.", "bad-ru": "Четверо мужчин гуляют.",
               "only-en": "Only one dog is in the park."}
    audits, _ = run_audit(tmp_path, [record(k, "k.jpg", [v], "detail", k.split("-")[1]) for k, v in answers.items()],
                          "--coco-instances", str(instances))
    for key in ("ok-en", "ok-ru", "ok-zh"):
        assert audits[key]["ok"], audits[key]
    for key in ("bad-en", "bad-ru", "only-en"):
        assert [p["kind"] for p in audits[key]["problems"]] == ["count"], audits[key]


def test_fewer_than_annotated_is_wrong_only_when_the_answer_names_the_category_once(tmp_path: Path) -> None:
    img = {"id": 9, "file_name": "p.jpg", "width": 640, "height": 480, "objects": {"pizza": 3},
           "anns": [("pizza", [10 + 150 * k, 10, 100, 100]) for k in range(3)]}
    instances = write_coco(tmp_path / "pizza.json", [img])
    answers = {"part-en": "Two smaller pizzas sit beside a large pizza.",
               "part-ru": "Две маленькие пиццы лежат рядом с большой пиццей.",
               "part-zh": "两个小披萨旁边有一个大披萨。",
               "all-en": "There are two pizzas on the table.", "all-ru": "На столе две пиццы.",
               "all-zh": "桌上有两个披萨。"}
    audits, _ = run_audit(tmp_path, [record(k, "p.jpg", [v], "detail", k.split("-")[1]) for k, v in answers.items()],
                          "--coco-instances", str(instances))
    for lang in ("en", "ru", "zh"):
        assert audits[f"part-{lang}"]["ok"], audits[f"part-{lang}"]
        assert [p["detail"] for p in audits[f"all-{lang}"]["problems"] if p["kind"] == "count"] == [
            "says 2, the annotations have 3 'pizza'"], audits[f"all-{lang}"]


# ---- CHAIR on a hand-made set (the README's worked example) --------------------------------------------

def test_chair_matches_the_hand_count(tmp_path: Path) -> None:
    park = {"id": 1, "file_name": "park.jpg", "width": 640, "height": 480, "objects": {},
            "anns": [("dog", [10, 10, 100, 100]), ("dog", [200, 10, 100, 100]), ("person", [400, 10, 80, 200]),
                     ("frisbee", [300, 300, 30, 30])]}
    room = {"id": 2, "file_name": "room.jpg", "width": 640, "height": 480, "objects": {},
            "anns": [("cat", [10, 10, 100, 100]), ("couch", [0, 100, 640, 300])]}
    cats = ["dog", "person", "frisbee", "cat", "couch"]
    doc = {"images": [{k: i[k] for k in ("id", "file_name", "width", "height")} for i in (park, room)],
           "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)],
           "annotations": [{"id": n, "image_id": i["id"], "category_id": cats.index(c) + 1, "bbox": b, "iscrowd": 0}
                           for i in (park, room) for n, (c, b) in enumerate(i["anns"], start=10 * i["id"])]}
    instances = tmp_path / "hand.json"
    instances.write_text(json.dumps(doc))
    records = [record("r1", "park.jpg", ["Two dogs chase a frisbee while a man watches. A cat sits on a bench.",
                                         "The dog on the left is brown."], "detail", "en"),
               record("r2", "park.jpg", ["Собака ловит фрисби, рядом стоит машина."], "conversation", "ru"),
               record("r3", "room.jpg", ["一只猫躺在沙发上，没有狗。"], "conversation", "zh")]
    audits, report = run_audit(tmp_path, records, "--coco-instances", str(instances))
    # mentions per answer: r1a dog, frisbee, person, cat*, bench* (5, 2 hallucinated); r1b dog (1);
    # r2 dog, frisbee, car* (3, 1); r3 cat, couch (2; the dog is negated): 11 mentions, 3 hallucinated;
    # answers with a hallucination: r1a, r2 of 4
    assert (report["mentions"], report["hallucinated_mentions"]) == (11, 3)
    assert (report["responses"], report["hallucinated_responses"]) == (4, 2)
    assert report["chair_i"] == 3 / 11 and report["chair_s"] == 2 / 4
    assert [p["text"] for p in audits["r1"]["problems"]] == ["cat", "bench"]
    assert audits["r2"]["problems"][0]["text"] == "машина" and audits["r3"] == {"ok": True, "problems": []}
    assert report["by_lang"]["en"]["chair_i"] == 2 / 6 and report["by_lang"]["zh"]["chair_s"] == 0
    assert report["by_task"]["conversation"]["chair_i"] == 1 / 5 and report["problems"]["object"] == 3


# ---- the streamed instances reader --------------------------------------------------------------------

def test_instances_are_streamed_in_any_key_order_with_a_bom(tmp_path: Path) -> None:
    from visinstruct.sources.coco import load_coco_instances

    images = make_images(5)
    ordered = json.loads(write_coco(tmp_path / "ordered.json", images).read_text())
    reordered = tmp_path / "reordered.json"  # annotations first, categories last, and a byte order mark
    reordered.write_bytes(b"\xef\xbb\xbf" + json.dumps({"info": {"images": "not this one"},
                                                      "annotations": ordered["annotations"],
                                                      "images": ordered["images"],
                                                      "categories": ordered["categories"]}).encode())
    first = list(load_coco_instances(tmp_path / "ordered.json"))
    second = list(load_coco_instances(reordered))
    assert first == second and len(first) == 5
    assert [(b.category, b.bbox) for b in first[0].boxes] == [
        (cat, norm_box(box, images[0]["width"], images[0]["height"])) for cat, box in images[0]["anns"]]


def test_instances_reader_memory_is_the_boxes_not_the_parsed_file(tmp_path: Path) -> None:
    """Peak traced memory while reading stays far below what parsing the file whole takes."""
    import tracemalloc

    from visinstruct.sources.coco import load_coco_instances

    path = write_coco(tmp_path / "big.json", make_images(3000, seed=8))
    tracemalloc.start()
    try:
        json.loads(path.read_bytes())
        whole = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        boxes = sum(len(scene.boxes) for scene in load_coco_instances(path))
        streamed = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert boxes > 15000 and streamed < whole / 4, (boxes, streamed, whole)


@pytest.mark.parametrize("doc, message", [
    ({"images": [], "categories": []}, "expected a JSON object with a 'annotations' list"),
    ({"images": {}, "categories": [], "annotations": []}, "expected a JSON object with a 'images' list"),
    ([{"images": []}], "expected a JSON object with a 'images' list"),
    ({"images": [1], "categories": [], "annotations": []}, "images[0] is not an object: 1"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 5, "height": 5}], "categories": [{"id": 1}],
      "annotations": []}, "categories[0] needs 'id' and 'name'"),
])
def test_instances_reader_names_the_list_and_entry(tmp_path: Path, doc: object, message: str) -> None:
    from visinstruct.core.errors import UserError
    from visinstruct.sources.coco import load_coco_instances

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=re.escape(f"{path}: {message}")):
        list(load_coco_instances(path))


def test_instances_reader_locates_bad_bytes_and_truncation(tmp_path: Path) -> None:
    from visinstruct.core.errors import UserError
    from visinstruct.sources.coco import load_coco_instances

    text = json.dumps(json.loads(write_coco(tmp_path / "i.json", make_images(3)).read_text()), indent=1)
    broken = tmp_path / "broken.json"
    broken.write_bytes(text.encode().replace(b'"000000001001.jpg"', b'"0000\xff00001001.jpg"'))
    line = text[:text.index("000000001001.jpg")].count("\n") + 1
    with pytest.raises(UserError, match=re.escape(f"{broken}:{line}: not UTF-8 text (byte 0xff at byte offset")):
        list(load_coco_instances(broken))
    cut = text[:len(text) // 2]  # a truncated file: the parser stops at its last line, its last byte
    broken.write_text(cut)
    with pytest.raises(UserError, match=re.escape(f"{broken}: not valid JSON near line {cut.count(chr(10)) + 1}, "
                                                  f"byte {len(cut):,} (parse error: premature EOF)")):
        list(load_coco_instances(broken))


# ---- other sources, the join, rejects ----------------------------------------------------------------------

def test_caps_boxes_captions_count_and_padded_boxes_are_not_checked(tmp_path: Path) -> None:
    caps = tmp_path / "caps.jsonl"
    rows = [{"id": "000000000042", "image": "000000000042.jpg", "captions": ["A man rides a horse past a bench."],
             "instances": [{"category": "horse", "bbox": [0.1, 0.2, 0.5, 0.9]},
                           {"category": "person", "bbox": [0.2, 0.1, 0.4, 0.6]}]}]
    caps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [record("caption", "coco/000000000042.jpg", ["A man on a horse near a bench and a dog."], "detail", "en"),
               record("native", "000000000042.jpg", ["<st>horse<ed> [0.1, 0.2, 0.5, 0.9] and <st>man<ed> "
                                                     "[0.6, 0.6, 0.9, 0.9]"], "referring_qa", "en"),
               record("padded", "000000000042.jpg", ["horse [0.1, 0.25, 0.5, 0.85]"], "referring_qa", "en")]
    audits, report = run_audit(tmp_path, records, "--caps-boxes", str(caps))
    assert [p["text"] for p in audits["caption"]["problems"]] == ["dog"]  # the bench is in a caption
    assert [p["kind"] for p in audits["native"]["problems"]] == ["box"]
    assert "man" in audits["native"]["problems"][0]["text"]
    assert audits["padded"]["ok"] and report["boxes"]["unchecked"] == 1  # llava15 frame needs the image size
    audits, report = run_audit(tmp_path, records[2:], "--caps-boxes", str(caps), "--box-frame", "native",
                               name="forced.jsonl")
    assert audits["padded"]["ok"] and report["boxes"] == {"checked": 1, "unmatched": 0, "unchecked": 0,
                                                         "records_native": 1, "records_llava15": 0}


def write_vg(folder: Path) -> Path:
    folder.mkdir()
    images = [{"image_id": 1, "width": 800, "height": 600, "url": "https://x/VG_100K/1.jpg", "coco_id": None},
              {"image_id": 2, "width": 500, "height": 500, "url": "https://x/VG_100K_2/2.jpg", "coco_id": None}]
    objects = [{"image_id": 1, "objects": [
        {"object_id": 1, "names": ["man"], "x": 100, "y": 100, "w": 100, "h": 300},
        {"object_id": 2, "names": ["guy"], "x": 105, "y": 100, "w": 100, "h": 300},   # the same man, named again
        {"object_id": 3, "names": ["dog"], "x": 400, "y": 300, "w": 150, "h": 100},
        {"object_id": 4, "names": ["people"], "x": 600, "y": 50, "w": 150, "h": 200},  # a group
        {"object_id": 5, "names": ["tree"], "x": 0, "y": 0, "w": 90, "h": 500}]},
        {"image_id": 2, "objects": [{"object_id": 6, "names": ["sofa"], "x": 0, "y": 200, "w": 500, "h": 250}]}]
    attributes = [{"image_id": 1, "attributes": [{"object_id": 3, "attributes": ["brown"]}]},
                  {"image_id": 2, "attributes": []}]
    regions = [{"id": 1, "regions": [{"region_id": 1, "phrase": "a frisbee in the air", "x": 300, "y": 20,
                                      "width": 60, "height": 40}]},
               {"id": 2, "regions": [{"region_id": 2, "phrase": "a kitten sleeping on the sofa", "x": 100, "y": 150,
                                      "width": 200, "height": 150}]}]
    for name, doc in (("image_data", images), ("objects", objects), ("attributes", attributes),
                      ("region_descriptions", regions)):
        (folder / f"{name}.json").write_text(json.dumps(doc))
    return folder


def test_visual_genome_names_groups_regions_and_padded_boxes(tmp_path: Path) -> None:
    vg = write_vg(tmp_path / "vg")
    dog_padded = fmt(padded([0.5, 0.5, 0.688, 0.667], 800, 600))
    records = [record("ok", "vg/VG_100K/1.jpg", ["A man throws a frisbee to his dog; many people and a tree.",
                                                 "Three people watch. One dog runs."], "detail", "en"),
               record("kitten", "2.jpg", ["一只猫睡在沙发上。"], "detail", "zh"),
               record("bad", "VG_100K/1.jpg", ["Two men and three dogs stand near a car."], "detail", "en"),
               record("box", "VG_100K/1.jpg", [f"dog {dog_padded}", "man [0.0, 0.9, 0.05, 0.95]"],
                      "referring_qa", "en")]
    audits, report = run_audit(tmp_path, records, "--vg", str(vg), "--image-prefix", "vg/")
    assert audits["ok"]["ok"] and audits["kitten"]["ok"], (audits["ok"], audits["kitten"])
    # 'two men' is not wrong (a group of people is annotated); three dogs are more than one; no car
    assert sorted((p["kind"], p["text"]) for p in audits["bad"]["problems"]) == [("count", "three dogs"),
                                                                                 ("object", "car")]
    assert [(p["kind"], p["turn"]) for p in audits["box"]["problems"]] == [("box", 3)]
    assert report["annotations"]["images"] == 2 and report["boxes"]["records_llava15"] == 1


def test_join_by_path_prefix_and_unique_base_name(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    name = images[0]["file_name"]
    records = [record("prefix", f"coco/train2017/{name}", ["A thing."], "detail", "en"),
               record("base", f"elsewhere/{name}", ["A thing."], "detail", "en"),
               record("missing", "nowhere.jpg", ["A dog."], "detail", "en"),
               record("several", [name, name], ["A dog."], "detail", "en"),
               {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hi"}]}]
    audits, report = run_audit(tmp_path, records, "--coco-instances", str(instances), "--image-prefix",
                               "coco/train2017")
    assert audits["prefix"]["ok"] and audits["base"]["ok"]
    assert audits["missing"] == {"ok": None, "problems": [], "note": "no annotations"}
    assert audits["several"]["note"] == "several images" and audits["text-only"]["note"] == "no image"
    assert report["join"] == {"matched": 2, "no annotations": 1, "no image": 1, "several images": 1}
    assert report["records"]["no_annotations"] == 3 and report["chair_s"] == 0


def test_ambiguous_base_names_join_only_by_path(tmp_path: Path) -> None:
    rows = [{"id": "a", "image": "train/1.jpg", "captions": [], "instances": [{"category": "dog",
                                                                              "bbox": [0, 0, 1, 1]}]},
            {"id": "b", "image": "val/1.jpg", "captions": [], "instances": []}]
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [record("exact", "train/1.jpg", ["A dog."], "detail", "en"),
               record("base", "other/1.jpg", ["A dog."], "detail", "en")]
    audits, _ = run_audit(tmp_path, records, "--caps-boxes", str(caps))
    assert audits["exact"]["ok"] and audits["base"]["note"] == "no annotations"


def test_reject_above_splits_the_output(tmp_path: Path, coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    records, planted = build_sets(images[:6])
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "audited.jsonl"
    result = run_cli("audit", str(source), "--coco-instances", str(instances), "--out", str(out),
                     "--reject-above", "0")
    assert result.returncode == 0, result.stderr
    kept, rejects = read_records(out), read_records(tmp_path / "audited.rejects.jsonl")
    assert len(kept) + len(rejects) == len(records) and len(rejects) >= 0.95 * len(planted)
    assert all(r["audit"]["ok"] for r in kept)
    assert all(r["reject_stage"] == "grounding" for r in rejects)
    # the code names the kinds found; the reason quotes the first problem
    for r in rejects:
        code, rest = r["reject_reason"].split(": ", 1)
        problems = r["audit"]["problems"]
        assert code == "+".join(k for k in ("object", "count", "box") if any(p["kind"] == k for p in problems))
        assert f"{len(problems)} problem" in rest and f"'{problems[0]['text']}': {problems[0]['detail']}" in rest
    assert "CHAIR_i" in result.stderr and "audited.rejects.jsonl" in result.stderr


# ---- bad input -----------------------------------------------------------------------------------------

def _bad(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture) -> str:
    out = tmp_path / "out.jsonl"
    out.write_text("before\n")
    code = main(["audit", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("visinstruct: error: "), err
    assert out.read_text() == "before\n" and not list(tmp_path.glob(".*.tmp"))
    return err


def test_bad_input_is_one_line_and_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    good = write_jsonl(tmp_path / "good.jsonl", [record("a", images[0]["file_name"], ["A dog."], "detail", "en")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(record("a", "x.jpg", ["A."], "detail", "en")) + "\n{\"id\": \n")
    scalar = tmp_path / "scalar.jsonl"
    scalar.write_text("[1, 2]\n")
    layout = write_jsonl(tmp_path / "layout.jsonl", [{"id": "m", "messages": []}])
    bad_turn = write_jsonl(tmp_path / "turn.jsonl", [{"id": "t", "conversations": [{"from": "gpt", "value": 3}]}])
    bad_ann = tmp_path / "bad_instances.json"
    bad_ann.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 0, "height": 5}]}')
    cases = [
        ([str(good)], "give one annotation source"),
        ([str(good), "--coco-instances", str(instances), "--caps-boxes", str(instances)], "give one annotation"),
        ([str(good), "--coco-instances", str(tmp_path / "none.json")], "file not found"),
        ([str(good), "--coco-instances", str(bad_ann)], "no positive width/height"),
        ([str(good), "--vg", str(instances)], "Visual Genome folder"),
        ([str(broken), "--coco-instances", str(instances)], "broken.jsonl:2: not valid JSON"),
        ([str(scalar), "--coco-instances", str(instances)], "scalar.jsonl:1: not a JSON object"),
        ([str(layout), "--coco-instances", str(instances)], "no 'conversations' list"),
        ([str(bad_turn), "--coco-instances", str(instances)], "conversations[0]"),
        ([str(tmp_path / "missing.jsonl"), "--coco-instances", str(instances)], "not found"),
        ([str(tmp_path / "out.jsonl"), "--coco-instances", str(instances)], "would overwrite"),
    ]
    for args, message in cases:
        assert message in _bad(tmp_path, args, capsys), args


def test_output_may_not_be_the_annotations_or_the_rejects(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          coco: tuple[Path, list[dict]]) -> None:
    instances, images = coco
    good = write_jsonl(tmp_path / "good.jsonl", [record("a", images[0]["file_name"], ["A dog."], "detail", "en")])
    copy = tmp_path / "instances.jsonl"
    copy.write_text(instances.read_text())
    code = main(["audit", str(good), "--coco-instances", str(copy), "--out", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input --coco-instances" in err and err.count("\n") == 1
    result = run_cli("audit", str(good), "--coco-instances", str(instances), "--out", str(tmp_path / "o.jsonl"),
                     "--reject-above", "0", "--report", str(tmp_path / "o.rejects.jsonl"))
    assert result.returncode == 2 and "name the same path" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
