"""`visinstruct generate` at scale: peak RSS, ledger bytes per unit, units/s and CPU-ms per request.

Makes a caps-boxes file per size (5 captions and 8 boxes per image, 3 text tasks per image: units = 3 x
images), then for each size runs, each in its own process (peak RSS from wait4):
- a dry run (`--dry-run`: every unit built, keyed and looked up in the ledger, nothing sent);
- for the sizes in --real: a real run against tests/teacher_server.py (no latency) writing .jsonl, then the
  ledger's bytes per unit (file size minus the reply texts, over the units).
With --baseline-src SRC (e.g. a `git worktree` of an earlier commit's src/), the same commands run with that
source tree in the same session, for sizes up to --baseline-max.

    python bench/generate_scale.py --sizes 100000 1000000 5000000 --real 100000
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
WORDS = ("man", "woman", "dog", "cat", "car", "bus", "tree", "table", "chair", "kite", "horse", "boat", "street",
         "park", "kitchen", "beach", "red", "small", "old", "wooden")
CATEGORIES = ("person", "dog", "car", "chair", "bus", "kite", "cup", "bench", "bicycle", "umbrella")


def make_caps(path: Path, images: int) -> None:
    """A caps-boxes file of `images` lines, varied enough that every unit's scene text differs (written under a
    temporary name, then renamed: a killed bench leaves no short file for the next to reuse)."""
    part = path.with_name(path.name + ".part")
    with part.open("wb") as out:
        for i in range(images):
            captions = [" ".join(WORDS[(i * 7 + j * 3 + k) % len(WORDS)] for k in range(9)) + f" {i}"
                        for j in range(5)]
            boxes = []
            for j in range(8):
                x, y = ((i + j * 13) % 50) / 100, ((i * 3 + j * 7) % 50) / 100
                boxes.append({"category": CATEGORIES[(i + j) % len(CATEGORIES)],
                              "bbox": [x, y, round(x + 0.3, 3), round(y + 0.25, 3)]})
            out.write(orjson.dumps({"id": f"{i:012d}", "image": f"train/{i:012d}.jpg", "captions": captions,
                                    "instances": boxes}) + b"\n")
    part.replace(path)


def run(cmd: list[str], src: Path) -> dict:
    """Wall s, CPU s and peak RSS (MB) of one command in its own process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024, "stderr": err}


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "teacher_server.py"), "--port", str(port)])
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    raise SystemExit("the teacher server did not start")


def ledger_bytes(path: Path) -> tuple[int, int, int]:
    """(file bytes incl. WAL, reply bytes, units)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        replies, units = db.execute("SELECT SUM(LENGTH(CAST(reply AS BLOB))), COUNT(*) FROM units").fetchone()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return size, replies or 0, units


def generate(caps: Path, out: Path, base_url: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "visinstruct", "generate", "--caps-boxes", str(caps), "--out", str(out),
            "--base-url", base_url, "--model", "m", "--no-progress", *extra]


def bench_size(caps: Path, units: int, work: Path, label: str, src: Path, real: bool, base_url: str,
               dry_run: bool = True) -> None:
    for stale in work.glob(f"{label}-{units}[.-]*"):  # a run left by an earlier bench would resume
        stale.unlink()
    if dry_run:
        dry = run(generate(caps, work / f"{label}-{units}-dry.jsonl", base_url, ["--dry-run"]), src)
        print(f"| {label} | dry run | {units:,} | {dry['wall']:.1f} | {units / dry['wall']:,.0f} | "
              f"{dry['rss_mb']:,.0f} | | |", flush=True)
    if not real:
        return
    out = work / f"{label}-{units}.jsonl"
    done = run(generate(caps, out, base_url, ["--concurrency", "32"]), src)
    size, replies, rows = ledger_bytes(out.with_name(out.name + ".ledger.sqlite"))
    per_unit = (size - replies) / max(1, rows)
    print(f"| {label} | real run | {units:,} | {done['wall']:.1f} | {units / done['wall']:,.0f} | "
          f"{done['rss_mb']:,.0f} | {per_unit:,.0f} B + replies {replies / max(1, rows):,.0f} B | "
          f"{done['cpu'] * 1000 / units:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000], help="units")
    parser.add_argument("--real", type=int, nargs="*", default=[100_000], help="sizes also run for real")
    parser.add_argument("--baseline-src", type=Path, help="an earlier src/ to compare with, in the same run")
    parser.add_argument("--baseline-max", type=int, default=300_000)
    parser.add_argument("--no-dry", action="store_true", help="real runs only (no dry runs)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gen-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for units in sorted(args.sizes):  # one file per size: each run reads all of its input
        files[units] = work / f"caps-{units}.jsonl"
        started = time.perf_counter()
        if not files[units].exists():  # the same content every time: a --work folder's file is reused
            make_caps(files[units], units // 3)
        print(f"caps-boxes for {units:,} units: {units // 3:,} images, {files[units].stat().st_size / 1e6:,.0f} MB "
              f"({time.perf_counter() - started:.0f} s); scratch {work}", flush=True)
    server, base_url = start_server()
    print("| code | run | units | wall s | units/s | peak RSS MB | ledger per unit | CPU-ms/request |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for units in sorted(args.sizes):
            if args.baseline_src and units <= args.baseline_max:
                bench_size(files[units], units, work, "baseline", args.baseline_src, units in args.real, base_url,
                           not args.no_dry)
            bench_size(files[units], units, work, "this", REPO / "src", units in args.real, base_url, not args.no_dry)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
