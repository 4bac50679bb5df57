"""The viewer at scale: offset index build, cached open, first page and first search page, at 1M and 5M rows.

For each size it writes a .jsonl of short LLaVA-style rows (~300 bytes: 5M rows ≈ 1.5 GB), then in a fresh
process (its own peak RSS): builds the index (no cache yet), opens it again from the cache, reads the first
page (50 summaries) and the first record as the page shows it, then three searches as the page runs them
(0.4 s per request, continued until a page of 50 matches or the end): a common filter (lang=ru, first page), a
needle 10 rows before the end (the whole file scanned), and the same needle through its first request only
(how soon the page shows "scanning… N rows"). With --json-rows it does the same for a .json list (the byte
scanner), with --parquet-rows for a folder of parquet shards (footers only at open). Files are deleted after.

    python bench/view_index.py [--rows 1000000 5000000] [--json-rows 1000000] [--parquet-rows 1000000] [--dir D]

The stats bench (bench/stats_view.py) calls `run()` for its viewer part. Timings are with the file in the page
cache (it was just written); a cold disk adds its read time to the index build (one sequential pass).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LANGS = ("en", "ru", "zh")
TEXT = {"en": ("What is the man holding?", "He is holding a red umbrella over his head."),
        "ru": ("Что держит мужчина?", "Он держит над головой красный зонт."),
        "zh": ("这个男人拿着什么？", "他头上撑着一把红色的雨伞。")}

MEASURE = """
import json, resource, sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from visinstruct.view import api
from visinstruct.view.dataset import open_dataset
from visinstruct.view.query import Query

path = Path({path!r})
out = {{}}
started = time.perf_counter()
dataset = open_dataset(path)
out["build_s"] = time.perf_counter() - started
out["built"] = getattr(getattr(dataset, "index", None), "built", None)
started = time.perf_counter()
dataset = open_dataset(path)
out["open_cached_s"] = time.perf_counter() - started
started = time.perf_counter()
api.page(dataset, 0, api.PAGE_SIZE)
api.detail(dataset, "main", 0, path.parent)
out["first_page_s"] = time.perf_counter() - started

def scan(query, first_only=False):
    started, cursor, rows, requests = time.perf_counter(), 0, 0, 0
    while True:
        answer = api.search(dataset, query, cursor, api.PAGE_SIZE - rows, api.SCAN_BUDGET_S)
        rows, cursor, requests = rows + len(answer["rows"]), answer["next"], requests + 1
        if first_only or answer["done"] or rows >= api.PAGE_SIZE:
            return time.perf_counter() - started, cursor, rows, requests

out["common_s"], _, out["common_rows"], _ = scan(Query(lang="ru"))
out["needle_s"], out["needle_scanned"], out["needle_rows"], out["needle_requests"] = scan(Query(text="needle"))
out["first_request_s"], out["first_request_rows"], _, _ = scan(Query(text="needle"), True)
out["count"] = len(dataset)
# VmHWM: this process's own peak (ru_maxrss can carry the parent's peak across fork + exec)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
out["peak_rss_mb"] = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def record(i: int, total: int) -> dict[str, Any]:
    lang = LANGS[i % 3]
    question, answer = TEXT[lang]
    if i == total - 10:
        answer = "The needle is in this answer."
    return {"id": f"{i:012d}-conversation-0", "image": f"coco/train2017/{i % 118_287:012d}.jpg",
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
            "task": "conversation", "lang": lang, "source": "bench"}


def write_jsonl(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, rows, 100_000):
            handle.write("".join(json.dumps(record(i, rows), ensure_ascii=False) + "\n"
                                 for i in range(start, min(start + 100_000, rows))))


def write_json(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for i in range(rows):
            handle.write(("" if i == 0 else ",\n") + json.dumps(record(i, rows), ensure_ascii=False))
        handle.write("\n]\n")


def write_parquet(folder: Path, rows: int, shard: int = 250_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    for number, start in enumerate(range(0, rows, shard)):
        batch = [record(i, rows) for i in range(start, min(start + shard, rows))]
        for row in batch:
            row["image"] = {"bytes": None, "path": row["image"]}
        pq.write_table(pa.Table.from_pylist(batch), folder / f"train-{number:05d}.parquet", row_group_size=10_000)


def measure(path: Path) -> dict[str, Any]:
    """Run the measurements in a fresh process; returns its figures."""
    script = MEASURE.format(src=str(REPO / "src"), path=str(path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in path.rglob("*.parquet")) if path.is_dir() else path.stat().st_size
    return {"file": path.name, "gb": size / 1e9, **figures}


def run(rows: list[int], json_rows: list[int], parquet_rows: list[int], folder: Path) -> list[dict[str, Any]]:
    """Write, measure and delete each file in turn (only one on disk at a time)."""
    results = []
    for kind, sizes, writer in (("jsonl", rows, write_jsonl), ("json", json_rows, write_json),
                                ("parquet", parquet_rows, write_parquet)):
        for size in sizes:
            path = folder / (f"rows-{size}.{kind}" if kind != "parquet" else f"rows-{size}-parquet")
            writer(path, size)
            try:
                results.append({"kind": kind, "rows": size, **measure(path)})
            finally:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                    path.with_name(f".{path.name}.viewindex").unlink(missing_ok=True)
            print(table_line(results[-1]), flush=True)
    return results


HEADER = ("| file | rows | size | index build | open (cached) | first page | lang=ru, page of 50 | "
          "needle near the end (whole scan) | first search answer | peak RSS |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def table_line(r: dict[str, Any]) -> str:
    rate = r["needle_scanned"] / max(r["needle_s"], 1e-9)
    return (f"| {r['kind']} | {r['rows']:,} | {r['gb']:.2f} GB | {r['build_s']:.2f} s | {r['open_cached_s']:.3f} s | "
            f"{r['first_page_s'] * 1000:.0f} ms | {r['common_s'] * 1000:.0f} ms | {r['needle_s']:.1f} s "
            f"({rate:,.0f} rows/s, {r['needle_requests']} requests) | {r['first_request_s'] * 1000:.0f} ms "
            f"({r['first_request_rows']:,} rows) | {r['peak_rss_mb']:.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 5_000_000])
    parser.add_argument("--json-rows", type=int, nargs="*", default=[])
    parser.add_argument("--parquet-rows", type=int, nargs="*", default=[])
    parser.add_argument("--dir", type=Path, help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="view-bench-", dir=args.dir))
    print(HEADER, flush=True)
    try:
        run(args.rows, args.json_rows, args.parquet_rows, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
