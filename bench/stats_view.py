"""`visinstruct stats` at scale: rows/s and peak RSS over N records, and whether memory stays flat.

Writes synthetic LLaVA records once (tasks, languages and sources mixed; 1-4 rounds of 20-60 word answers in
English, Russian or Chinese; 2% text-only, 1% with an `<image>` tag missing) as a .jsonl and a .json list, and
2,000 small JPEGs that the records share in runs of three (as three tasks share one COCO photo). Each scenario
runs as `python -m visinstruct stats` in its own process, over N/4 and over N records, writing the JSON, the
card and the HTML report; the table gives wall seconds, records/s and that process's peak RSS (its VmHWM).

Scenarios:
  jsonl        the .jsonl, tokens estimated
  json         the .json list (streamed with ijson)
  image-root   the .jsonl with --image-root: every image's size read from its header (and 24 thumbnails)

    python bench/stats_view.py [--rows 1000000] [--data DIR]   (DIR keeps the generated files for the next run)
    python bench/stats_view.py --view-rows 1000000 5000000     (also the viewer: bench/view_index.py's table)
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from PIL import Image

EN = ("the a red blue small large man woman dog cat bus train table chair window street kitchen park holds sits "
      "stands waits rides looks near behind next to under over while with two three several people")
RU = ("красный синий маленький большой мужчина женщина собака кошка автобус поезд стол стул окно улица кухня парк "
      "держит сидит стоит ждёт рядом за под над два три несколько людей")
ZH = "红蓝小大男人女人狗猫公共汽车火车桌子椅子窗户街道厨房公园拿着坐站等在旁边后面下面上面两三几个人"
WORDS = {"en": EN.split(" "), "ru": RU.split(" "), "zh": list(ZH)}
TASKS = ("conversation", "detail_description", "complex_reasoning", "referring_qa")
SOURCES = ("coco2014-train", "coco2017-train", "vg")
IMAGES = 2000


def make_record(i: int, rng: random.Random) -> dict:
    """One synthetic record; record i uses image i // 3 (three tasks per photo)."""
    lang = ("en", "en", "ru", "zh")[i % 4]
    words, sep = WORDS[lang], "" if lang == "zh" else " "
    turns = []
    for k in range(rng.randint(1, 4)):
        tag = "<image>\n" if k == 0 and i % 100 != 7 else ""  # 1 in 100: the tag is missing
        question = tag + sep.join(rng.choice(words) for _ in range(rng.randint(5, 12))) + "?"
        answer = sep.join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "."
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    record = {"id": f"{i:09d}", "image": f"{(i // 3) % IMAGES:06d}.jpg", "conversations": turns,
              "task": TASKS[i % len(TASKS)], "lang": lang, "source": SOURCES[i % 7 % 3]}
    if i % 50 == 3:  # text-only rows (ShareGPT rows in the LLaVA-1.5 mix): no image, no tag
        del record["image"]
        turns[0]["value"] = turns[0]["value"].replace("<image>\n", "")
    return record


def write_data(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    """data.jsonl, data.json and images/; skipped when they are already there for this row count."""
    jsonl, json_list, images = folder / "data.jsonl", folder / "data.json", folder / "images"
    stamp = folder / f"rows-{rows}"
    if not stamp.exists():
        images.mkdir(parents=True, exist_ok=True)
        for n in range(IMAGES):
            Image.new("RGB", (320 + n % 7 * 64, 240 + n % 5 * 48), (n % 251, 80, 160)).save(images / f"{n:06d}.jpg")
        rng = random.Random(0)
        with jsonl.open("wb") as lines, json_list.open("wb") as listed:
            listed.write(b"[")
            for i in range(rows):
                data = orjson.dumps(make_record(i, rng))
                lines.write(data + b"\n")
                listed.write((b",\n" if i else b"\n") + data)
            listed.write(b"\n]\n")
        stamp.write_text("ok\n")
    return jsonl, json_list, images


CHILD = ("import sys\nfrom visinstruct.cli import main\ncode = main(sys.argv[1:])\n"
         "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
         "sys.exit(code)\n")


def run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `visinstruct stats ARGS` in its own process (the child's own
    VmHWM, read as it ends)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, "stats", *args, "--no-progress"], capture_output=True,
                            text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"stats failed: {result.stderr}")
    return seconds, int(result.stdout.split()[-1]) * 1024


def scenarios(jsonl: Path, json_list: Path, images: Path) -> dict[str, list[str]]:
    return {"jsonl": [str(jsonl)], "json": [str(json_list)],
            "image-root": [str(jsonl), "--image-root", str(images)]}


def bench_stats(base: Path, rows: int, out: Path) -> list[str]:
    """The stats table rows for one record count."""
    folder = base / f"stats-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files = write_data(folder, rows)
    print(f"<!-- {rows:,} records ready in {time.perf_counter() - started:.0f} s -->", flush=True)
    lines = []
    for name, args in scenarios(*files).items():
        outputs = ["--json", str(out / "stats.json"), "--card", str(out / "README.md"), "--html",
                   str(out / "report.html")]
        seconds, peak = run(args + outputs)
        line = f"| {rows:,} | {name} | {seconds:.1f} | {rows / seconds:,.0f} | {peak / 2**20:,.0f} MB |"
        print(line, flush=True)
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="keep the generated records here")
    parser.add_argument("--view-rows", type=int, nargs="*", default=[],
                        help="then the viewer's index build and first page at these jsonl sizes (bench/view_index.py)")
    args = parser.parse_args()
    if args.view_rows:
        sys.path.insert(0, str(Path(__file__).parent))
        import view_index

        print(view_index.HEADER, flush=True)
        with tempfile.TemporaryDirectory(prefix="view-bench-") as scratch:
            view_index.run(args.view_rows, [], [], Path(scratch))
    with tempfile.TemporaryDirectory(prefix="stats-bench-") as scratch:
        base = args.data or Path(scratch)
        print("| records | scenario | seconds | records/s | peak RSS |")
        print("|---|---|---|---|---|")
        for rows in (args.rows // 4, args.rows):
            bench_stats(base, rows, Path(scratch))


if __name__ == "__main__":
    main()
