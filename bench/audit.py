"""`visinstruct audit` at scale: rows/s and peak RSS over N records against a COCO-train-sized instances file.

Writes once (into --data, reused on the next run): an instances file of `--images` images (default 118,287, as
COCO train2017) with 2–12 objects each (~7 on average, ~860k annotations, 1% of them crowd regions), and
records that name those objects in English (60%), Russian (20%) and Chinese (20%): 1–3 answers of 2–4 sentences
with numbers, 10% referring answers with `<st>obj<ed> [box]` markup, 10% with an object the image lacks.
Then runs `python -m visinstruct audit` in its own process over no records (loading the annotations alone),
N/4 and N records, and prints wall seconds, that process's CPU seconds, records/s and its peak RSS (VmHWM).
With `--baseline SRC` each size runs a second time with another checkout's `src` folder first on the path (a
before/after table from one run, under the same load), e.g. `git archive HEAD src | tar -x -C /tmp/before`.

    python bench/audit.py [--rows 1000000] [--images 118287] [--data DIR] [--baseline /tmp/before/src]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

CATS = ("person", "dog", "cat", "car", "bicycle", "bus", "horse", "sheep", "cow", "bird", "umbrella", "bench", "cup",
        "bottle", "chair", "couch", "dining table", "pizza", "laptop", "book", "boat", "truck", "clock", "kite")
EN = {"person": ("person", "people"), "dining table": ("table", "tables"), "couch": ("sofa", "sofas"),
      "bus": ("bus", "buses"), "sheep": ("sheep", "sheep")}
RU = {"person": ("человек", "человека"), "dog": ("собака", "собаки"), "cat": ("кошка", "кошки"),
      "car": ("машина", "машины"), "bicycle": ("велосипед", "велосипеда"), "bus": ("автобус", "автобуса"),
      "horse": ("лошадь", "лошади"), "sheep": ("овца", "овцы"), "cow": ("корова", "коровы"), "bird": ("птица", "птицы"),
      "umbrella": ("зонт", "зонта"), "bench": ("скамейка", "скамейки"), "cup": ("чашка", "чашки"),
      "bottle": ("бутылка", "бутылки"), "chair": ("стул", "стула"), "couch": ("диван", "дивана"),
      "dining table": ("стол", "стола"), "pizza": ("пицца", "пиццы"), "laptop": ("ноутбук", "ноутбука"),
      "book": ("книга", "книги"), "boat": ("лодка", "лодки"), "truck": ("грузовик", "грузовика"),
      "clock": ("будильник", "будильника"), "kite": ("воздушный змей", "воздушного змея")}
ZH = {"person": "个人", "dog": "只狗", "cat": "只猫", "car": "辆汽车", "bicycle": "辆自行车", "bus": "辆公交车",
      "horse": "匹马", "sheep": "只绵羊", "cow": "头牛", "bird": "只鸟", "umbrella": "把伞", "bench": "张长椅",
      "cup": "个杯子", "bottle": "个瓶子", "chair": "把椅子", "couch": "张沙发", "dining table": "张桌子",
      "pizza": "个披萨", "laptop": "台笔记本电脑", "book": "本书", "boat": "艘船", "truck": "辆卡车",
      "clock": "个时钟", "kite": "只风筝"}
EN_NUM = ("one", "two", "three", "four")
RU_NUM = ("", "два", "три", "четыре")
ZH_NUM = ("一", "两", "三", "四")


def en_words(cat: str) -> tuple[str, str]:
    return EN.get(cat, (cat, cat + "s"))


def write_instances(path: Path, images: int, rng: random.Random) -> list[tuple[str, dict[str, int], list]]:
    """The instances file; returns per image (file name, objects per category, normalized boxes)."""
    ids = {c: k + 1 for k, c in enumerate(CATS)}
    kept, anns = [], []
    with path.open("wb") as handle:
        handle.write(b'{"categories": ' + orjson.dumps([{"id": i, "name": c} for c, i in ids.items()]))
        handle.write(b', "images": [')
        for i in range(images):
            handle.write((b"," if i else b"") + orjson.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg",
                                                               "width": 640, "height": 480}))
        handle.write(b'], "annotations": [')
        first = True
        for i in range(images):
            objects: dict[str, int] = {}
            boxes = []
            for _ in range(rng.randint(2, 12)):
                cat = rng.choice(CATS)
                objects[cat] = objects.get(cat, 0) + 1
                x, y = rng.uniform(0, 500), rng.uniform(0, 380)
                bbox = [round(x, 1), round(y, 1), round(rng.uniform(20, 140), 1), round(rng.uniform(20, 100), 1)]
                boxes.append((cat, [round(bbox[0] / 640, 3), round(bbox[1] / 480, 3),
                                    round((bbox[0] + bbox[2]) / 640, 3), round((bbox[1] + bbox[3]) / 480, 3)]))
                anns.append(0)
                handle.write((b"" if first else b",") + orjson.dumps(
                    {"id": len(anns), "image_id": i + 1, "category_id": ids[cat], "bbox": bbox,
                     "area": bbox[2] * bbox[3], "iscrowd": int(rng.random() < 0.01)}))
                first = False
            kept.append((f"{i + 1:012d}.jpg", objects, boxes[:2]))
        handle.write(b"]}\n")
    return kept


def sentence(lang: str, cat: str, n: int) -> str:
    n = min(n, 4)
    if lang == "en":
        sg, pl = en_words(cat)
        return f"There {'is' if n == 1 else 'are'} {EN_NUM[n - 1]} {sg if n == 1 else pl} near the window."
    if lang == "ru":
        nom, gen = RU[cat]
        return f"На снимке есть {nom}." if n == 1 else f"Рядом видно {RU_NUM[n - 1]} {gen}."
    return f"画面中有{ZH_NUM[n - 1]}{ZH[cat]}。"


def make_record(i: int, image: tuple[str, dict[str, int], list], rng: random.Random) -> dict:
    name, objects, boxes = image
    lang = ("en", "en", "en", "ru", "zh")[i % 5]
    turns = []
    for k in range(rng.randint(1, 3)):
        cats = rng.sample(sorted(objects), min(len(objects), rng.randint(2, 4)))
        parts = [sentence(lang, c, objects[c]) for c in cats]
        if rng.random() < 0.1:
            parts.append(sentence(lang, rng.choice([c for c in CATS if c not in objects]), 1))
        if i % 10 == 0:
            parts = [f"<st>{en_words(c)[0]}<ed> [{', '.join(map(str, b))}]" for c, b in boxes]
        turns += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + "What can you see?"},
                  {"from": "gpt", "value": (" " if lang != "zh" else "").join(parts)}]
    return {"id": f"{i:09d}", "image": f"coco/train2017/{name}", "conversations": turns,
            "task": "referring_qa" if i % 10 == 0 else "detail", "lang": lang}


def write_data(folder: Path, rows: int, images: int) -> None:
    """The instances file and the records; skipped when already there for these sizes."""
    stamp = folder / f"rows-{rows}-images-{images}"
    if stamp.exists():
        return
    rng = random.Random(0)
    kept = write_instances(folder / "instances.json", images, rng)
    with (folder / "records.jsonl").open("wb") as handle:
        for i in range(rows):
            handle.write(orjson.dumps(make_record(i, kept[rng.randrange(len(kept))], rng)) + b"\n")
    stamp.write_text("ok\n")


CHILD = ("import os, sys\nfrom visinstruct.cli import main\ncode = main(sys.argv[1:])\n"
         "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1], "
         "sum(os.times()[:2]))\n"
         "sys.exit(code)\n")


def run(records: Path, instances: Path, out: Path, src: Path | None = None) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds, peak RSS (bytes) and the summary of one `visinstruct audit` in its own process
    (`src`: import visinstruct from that folder instead)."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, "audit", str(records), "--coco-instances", str(instances),
                             "--out", str(out), "--image-prefix", "coco/train2017/", "--no-progress"],
                            capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"audit failed: {result.stderr}")
    peak, cpu = result.stdout.split()[-2:]
    return seconds, float(cpu), int(peak) * 1024, result.stderr.strip().splitlines()[1]


def head(source: Path, target: Path, rows: int) -> Path:
    with source.open("rb") as inp, target.open("wb") as handle:
        for _, line in zip(range(rows), inp, strict=False):
            handle.write(line)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--data", type=Path, help="keep the generated files here")
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="also run another checkout's src folder")
    args = parser.parse_args()
    trees = [("this", None)] + ([(str(args.baseline), args.baseline)] if args.baseline else [])
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as scratch:
        data = args.data or Path(scratch)
        data.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_data(data, args.rows, args.images)
        print(f"<!-- data ready in {time.perf_counter() - started:.0f} s -->", flush=True)
        print("| code | records | seconds | CPU s | records/s | peak RSS | CHAIR |")
        print("|---|---|---|---|---|---|---|")
        for rows in (0, args.rows // 4, args.rows):
            records = head(data / "records.jsonl", Path(scratch) / f"in-{rows}.jsonl", rows)
            out = Path(scratch) / "out.jsonl"
            for name, src in trees:
                seconds, cpu, peak, chair = run(records, data / "instances.json", out, src)
                rate = f"{rows / seconds:,.0f}" if rows else "—"
                print(f"| {name} | {rows:,} | {seconds:.1f} | {cpu:.1f} | {rate} | {peak / 2**20:,.0f} MB | "
                      f"{chair.strip()} |", flush=True)
                out.unlink()
            records.unlink()


if __name__ == "__main__":
    main()
