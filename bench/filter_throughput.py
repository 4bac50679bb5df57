"""Filter throughput and memory.

Writes N synthetic LLaVA records (GPT-style answers with numbers, names, Latin inside Russian; 80% en,
15% ru, 5% zh; 1% planted errors and 1% exact duplicates), then prints
- rows/s of each stage on one core (in-process, on a 20,000-record sample);
- rows/s and peak RSS of the whole default pipeline without spelling (structure + heuristics + language id
  + exact dedup) and with spelling, each run as `visinstruct filter` in its own process.

    python bench/filter_throughput.py [--rows 1000000] [--spelling-rows 200000] [--workers 1]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

EN = ["The {n} cyclists ride past the old bakery on Main Street while the rain slowly stops.",
      "A woman in a blue coat holds an iPhone 15 and takes a photo of the harbour at 6 pm.",
      "Two dogs play with a red frisbee near the fountain; one of them is a golden retriever.",
      "The kitchen counter holds a bowl of {n} oranges, a coffee maker and a stack of plates.",
      "Because the road is wet, drivers should keep a longer distance and brake earlier than usual.",
      "In the background, a tram of line {n} waits at the stop next to a small flower shop."]
RU = ["На снимке {n} велосипедиста едут мимо старой пекарни на Главной улице, дождь постепенно стихает.",
      "Женщина в синем пальто держит iPhone 15 и фотографирует гавань около 18:00.",
      "Две собаки играют с красной фрисби у фонтана; одна из них — золотистый ретривер.",
      "Поскольку дорога мокрая, водителям стоит держать дистанцию больше обычного."]
ZH = ["照片里有{n}个骑车的人经过主街上的老面包店，雨渐渐停了。", "一位穿蓝色外套的女士拿着手机拍摄港口的景色。"]
ERRORS = ["According to the caption, the man is riding a bike.", "As an AI, I cannot see the image.",
          "The bus [0.12, 0.3, 0.45, 0.9] is parked."]


def make_record(i: int, rng: random.Random) -> dict:
    roll = rng.random()
    lang, pool = ("zh", ZH) if roll < 0.05 else ("ru", RU) if roll < 0.2 else ("en", EN)
    pairs = []
    for _ in range(rng.randint(1, 3)):
        answer = " ".join(rng.choice(pool).format(n=rng.randint(2, 9)) for _ in range(rng.randint(2, 4)))
        pairs += [{"from": "human", "value": "What can you tell me about this part of the picture?"},
                  {"from": "gpt", "value": answer}]
    if rng.random() < 0.01:
        pairs[-1]["value"] = rng.choice(ERRORS)
    pairs[0]["value"] = "<image>\n" + pairs[0]["value"]
    return {"id": f"{i:09d}", "image": f"coco/train2017/{rng.randint(0, 10**6):012d}.jpg", "conversations": pairs,
            "task": "conversation", "lang": lang, "source": "bench"}


def write_records(path: Path, rows: int) -> None:
    rng = random.Random(0)
    previous = None
    with path.open("wb") as handle:
        for i in range(rows):
            record = make_record(i, rng)
            if previous is not None and rng.random() < 0.01:
                record = {**previous, "id": f"{i:09d}"}
            previous = record
            handle.write(orjson.dumps(record) + b"\n")


def stage_rates(path: Path, sample: int = 20000) -> None:
    from visinstruct.filters.dedup import ExactDedup
    from visinstruct.filters.heuristics import HeuristicsFilter
    from visinstruct.filters.language import LanguageFilter
    from visinstruct.filters.spelling import SpellingFilter
    from visinstruct.filters.structure import StructureFilter

    with path.open("rb") as handle:
        lines = [next(handle) for _ in range(sample)]
    start = time.perf_counter()
    records = [orjson.loads(line) for line in lines]
    print(f"{'read (orjson)':<14} {sample / (time.perf_counter() - start):>10,.0f} rows/s")
    for stage in (StructureFilter(), HeuristicsFilter(), LanguageFilter(), ExactDedup(), SpellingFilter()):
        stage.check(records[0])  # load dictionaries / models outside the timing
        start = time.perf_counter()
        for record in records:
            stage.check(record)
        print(f"{stage.name:<14} {sample / (time.perf_counter() - start):>10,.0f} rows/s")


def pipeline(path: Path, rows: int, stages: str, workers: int) -> None:
    out = path.parent
    code = (f"import resource, sys, time; sys.path.insert(0, {str(REPO / 'src')!r}); "
            "from pathlib import Path; from visinstruct.filters.pipeline import FilterConfig, run_filter; "
            f"config = FilterConfig(stages={stages.split(',')!r}, workers={workers}); "
            "t = time.perf_counter(); "
            f"r = run_filter(Path({str(path)!r}), Path({str(out / 'kept.jsonl')!r}), "
            f"Path({str(out / 'rejects.jsonl')!r}), config); "
            "print(r['records_in'], r['records_out'], time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    records, kept, seconds, rss = result.stdout.split()
    rate = int(records) / float(seconds)
    print(f"{stages:<48} {int(records):>9,} rows {float(seconds):7.1f} s {rate:>8,.0f} rows/s"
          f"  kept {int(kept):,}  peak RSS {float(rss):,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--spelling-rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.jsonl", Path(tmp) / "small.jsonl"
        start = time.perf_counter()
        write_records(big, args.rows)
        size = big.stat().st_size / 1e6
        print(f"wrote {args.rows:,} records ({size:,.0f} MB) in {time.perf_counter() - start:.0f} s")
        stage_rates(big)
        pipeline(big, args.rows, "structure,heuristics,language,dedup", args.workers)
        write_records(small, args.spelling_rows)
        pipeline(small, args.spelling_rows, "structure,spelling,heuristics,language,dedup", args.workers)
        os.sync()


if __name__ == "__main__":
    main()
