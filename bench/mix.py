"""`visinstruct mix` at scale: rows/s and peak RSS over N source rows, and whether memory stays flat.

Writes synthetic LLaVA records once (an answer of 20-60 words, 1 in 3 with a second turn, 1% of the json and
parquet rows repeating a jsonl row): a .jsonl of 0.6 N rows, a .json list of 0.2 N rows and a folder of
4 parquet shards of 0.2 N rows; every record's image is one of 500 small JPEGs (~3 KB of noise, under
img/coco/train2017/). Then runs each scenario as `python -m visinstruct mix` in its own process and
prints wall and CPU seconds, rows written, rows written per CPU second and that process's peak RSS (its
VmHWM); each scenario runs over all N rows and over N/4 of them, so that a flat peak shows.

Scenarios:
  all      every row of the three sources
  sample   random:50% of the jsonl, end:10% of the json, first:50% of the parquet folder (counted first)
  dedup    every row, `dedup: text` (8 bytes per written row kept)
  replay   `--lock` of the `all` mixture (hashes every source file, then reads the rows again)
  folder   every row into a Hugging Face dataset folder (parquet shards, the images embedded; two passes)

    python bench/mix.py [--rows 1000000] [--data DIR]   (DIR keeps the generated sources for the next run)
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

WORDS = ("the a red blue small large man woman dog cat bus train table chair window street kitchen park "
         "holds sits stands waits rides looks near behind next to under over while with two three several "
         "people cars trees plates cups umbrella bicycle sign building light sky water")
VOCABULARY = WORDS.split()
IMAGES = 500  # distinct image files the records point to


def make_record(i: int, rng: random.Random) -> dict:
    turns = []
    for k in range(1 + (rng.random() < 1 / 3)):
        question = f"{'<image>' + chr(10) if k == 0 else ''}What is happening near the {rng.choice(VOCABULARY)}?"
        answer = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(20, 60))).capitalize() + "."
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": f"{i:09d}", "image": f"coco/train2017/{rng.randrange(IMAGES):012d}.jpg",
            "conversations": turns, "task": "conversation", "lang": "en"}


def write_sources(folder: Path, rows: int) -> None:
    """The three sources; skipped when they are already there for this row count."""
    stamp = folder / f"rows-{rows}-images"
    if stamp.exists():
        return
    images = folder / "img" / "coco" / "train2017"
    images.mkdir(parents=True, exist_ok=True)
    for k in range(IMAGES):
        noise = random.Random(k).randbytes(48 * 40 * 3)
        Image.frombytes("RGB", (48, 40), noise).save(images / f"{k:012d}.jpg", quality=90)
    rng = random.Random(0)
    n_jsonl, n_json = rows * 6 // 10, rows * 2 // 10
    kept = []  # a few jsonl rows for later sources to repeat
    with (folder / "a.jsonl").open("wb") as handle:
        for i in range(n_jsonl):
            record = make_record(i, rng)
            if i % 100 == 0:
                kept.append(record)
            handle.write(orjson.dumps(record) + b"\n")

    def later(i: int) -> dict:
        return dict(kept[i % len(kept)], id=f"{i:09d}") if i % 100 == 0 else make_record(i, rng)

    with (folder / "b.json").open("wb") as handle:
        handle.write(b"[")
        for n, i in enumerate(range(n_jsonl, n_jsonl + n_json)):
            handle.write((b",\n" if n else b"\n") + orjson.dumps(later(i)))
        handle.write(b"\n]\n")
    shards = folder / "c"
    shards.mkdir(exist_ok=True)
    start, n_parquet = n_jsonl + n_json, rows - n_jsonl - n_json
    for k in range(4):
        part = range(start + k * n_parquet // 4, start + (k + 1) * n_parquet // 4)
        table = pa.Table.from_pylist([later(i) for i in part])
        pq.write_table(table, shards / f"train-{k:05d}-of-00004.parquet", row_group_size=5000)
    stamp.write_text("ok\n")


def recipes(folder: Path) -> dict[str, str]:
    sources = f"  - json_path: {folder}/a.jsonl\n  - json_path: {folder}/b.json\n  - json_path: {folder}/c\n"
    return {
        "all": f"datasets:\n{sources}",
        "sample": f"datasets:\n  - json_path: {folder}/a.jsonl\n    sampling_strategy: random:50%\n"
                  f"  - json_path: {folder}/b.json\n    sampling_strategy: end:10%\n"
                  f"  - json_path: {folder}/c\n    sampling_strategy: first:50%\n",
        "dedup": f"dedup: text\ndatasets:\n{sources}",
        "folder": f"image_root: {folder}/img\ndatasets:\n{sources}",
    }


CHILD = ("import resource, sys\nfrom visinstruct.cli import main\ncode = main(sys.argv[1:])\n"
         "use = resource.getrusage(resource.RUSAGE_SELF)\n"
         "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1], "
         "use.ru_utime + use.ru_stime)\nsys.exit(code)\n")


def run(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (bytes) of `visinstruct mix ARGS` in its own process. The peak is
    the child's own VmHWM, read by the child as it ends (a forked child's ru_maxrss would include its
    parent's pages); CPU seconds do not depend on how busy the machine is."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, "mix", *args, "--no-progress"], capture_output=True,
                            text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"mix failed: {result.stderr}")
    peak, cpu = result.stdout.split()[-2:]
    return seconds, float(cpu), int(peak) * 1024


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def scenario_rows(folder: Path, rows: int, data: Path) -> None:
    """Run every scenario over a sources folder of `rows` rows; print one line each."""
    for name, text in recipes(data).items():
        recipe = folder / f"{name}.yaml"
        recipe.write_text(text)
        out = folder / (name if name == "folder" else f"{name}.jsonl")
        seconds, cpu, peak = run([str(recipe), "--out", str(out)])
        written = count_lines(out) if out.is_file() else sum(
            pq.ParquetFile(p).metadata.num_rows for p in out.glob("data/*.parquet"))
        print(f"| {rows:,} | {name} | {written:,} | {seconds:.1f} | {cpu:.1f} | {written / cpu:,.0f} | "
              f"{peak / 2**20:,.0f} MB |", flush=True)
        if name != "all":
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
            Path(f"{out}.lock.json").unlink()
            continue
        seconds, cpu, peak = run(["--lock", f"{out}.lock.json", "--out", str(folder / "replay.jsonl")])
        same = (folder / "replay.jsonl").read_bytes() == out.read_bytes()
        print(f"| {rows:,} | replay (identical: {same}) | {written:,} | {seconds:.1f} | {cpu:.1f} | "
              f"{written / cpu:,.0f} | {peak / 2**20:,.0f} MB |", flush=True)
        for path in (folder / "replay.jsonl", folder / "replay.jsonl.lock.json", out, Path(f"{out}.lock.json")):
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="keep the generated sources here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mix-bench-") as scratch:
        base = args.data or Path(scratch)
        print("| source rows | scenario | rows written | wall s | CPU s | rows/CPU-s | peak RSS |")
        print("|---|---|---|---|---|---|---|")
        for rows in (args.rows // 4, args.rows):
            data = base / f"sources-{rows}"
            data.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            write_sources(data, rows)
            print(f"<!-- sources of {rows:,} rows ready in {time.perf_counter() - started:.0f} s -->", flush=True)
            scenario_rows(Path(scratch), rows, data)


if __name__ == "__main__":
    main()
