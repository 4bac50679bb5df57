"""Decontamination (`filter --decontaminate`) at scale: the threshold, the hashing rate and the index.

1. calibrate: N eval pictures (320x240, JPEG q95; a smooth random colour field with 2-6 random ellipses and
   rectangles) and their copies resized to 60% (Lanczos and bilinear) and re-encoded at JPEG q70: the
   histogram of copy-to-original distances; then U unrelated pictures against the N eval ones: each
   one's smallest distance, and the low tail of all pair distances.
2. hashing: `core.phash.phash_file` per image on one core, for 64x64 and 640x480 JPEGs.
3. index: E eval hashes and T training hashes (uniform random 64-bit; 1% of the training ones are an eval
   hash with 0..D+2 bits flipped), `PhashIndex.pairs` over all T, and brute force (every pair's popcount,
   numpy, in blocks) over the first `--brute` of them; both must give the same pairs; the ratio is quoted
   per training hash; and the pickled size of the step that goes to each worker with such an eval set.
4. end to end (`--images T`): T training records with 64x64 JPEGs (1% of them an eval picture resized to
   60% and re-encoded at q70) and E eval pictures on disk, then `run_filter` with stages structure +
   decontaminate and `--workers W`: seconds, records/s, and the matches found against the planted ones.

    python bench/decontaminate.py [--train 100000] [--eval 5000] [--distance 6] [--brute 10000]
                                  [--calibrate 1000] [--unrelated 1000] [--images 0] [--workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visinstruct.core.phash import PhashIndex, phash_file, popcounts  # noqa: E402
from visinstruct.filters.decontaminate import DecontaminateStep, EvalSet  # noqa: E402

UINT64_MAX = np.iinfo(np.uint64).max


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A random picture: a smooth colour field (2-8 cells a side, upscaled) with 2-6 random shapes on it."""
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


def hash_image(image: Image.Image, quality: int = 95) -> int:
    """The phash of `image` as it reads back after JPEG encoding at `quality` (the way phash_file decodes)."""
    import imagehash

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.draft("L", (64, 64))
        return int(str(imagehash.phash(decoded)), 16)


def histogram(values: np.ndarray, top: int = 24) -> str:
    counts = np.bincount(values, minlength=top + 1)
    return " ".join(f"{d}:{n}" for d, n in enumerate(counts[:top + 1]) if n)


def calibrate(count: int, unrelated: int) -> None:
    started = time.perf_counter()
    evals = [picture(seed) for seed in range(count)]
    hashes = np.array([hash_image(e) for e in evals], dtype=np.uint64)
    for name, method in (("lanczos", Image.LANCZOS), ("bilinear", Image.BILINEAR)):
        copies = np.array([hash_image(e.resize((round(e.width * 0.6), round(e.height * 0.6)), method), 70)
                           for e in evals], dtype=np.uint64)
        print(f"  copies at 60% ({name}) + q70, distance: count   {histogram(popcounts(hashes ^ copies))}")
    others = np.array([hash_image(picture(1_000_000 + seed)) for seed in range(unrelated)], dtype=np.uint64)
    distances = popcounts(others[:, None] ^ hashes[None, :])
    print(f"  {unrelated:,} unrelated vs {count:,} eval, nearest distance: count   "
          f"{histogram(distances.min(axis=1), 40)}")
    print(f"  all {distances.size:,} unrelated pairs, distance <= 14: count   {histogram(distances.ravel(), 14)}")
    print(f"  ({time.perf_counter() - started:.0f} s)")


def hashing_rate(folder: Path, count: int = 300) -> None:
    for size in ((64, 64), (640, 480)):
        paths = []
        for seed in range(count):
            path = folder / f"rate-{size[0]}-{seed}.jpg"
            picture(seed, size).save(path, quality=90)
            paths.append(path)
        started = time.perf_counter()
        for path in paths:
            phash_file(path)
        each = (time.perf_counter() - started) / count
        print(f"  {size[0]}x{size[1]} JPEG: {each * 1e3:.2f} ms per image ({1 / each:,.0f} images/s, one core)")


def planted(evals: np.ndarray, train: int, distance: int, rng: np.random.Generator) -> np.ndarray:
    """`train` random hashes, 1% of them an eval hash with 0..distance+2 bits flipped."""
    hashes = rng.integers(0, UINT64_MAX, train, dtype=np.uint64, endpoint=True)
    for i in range(0, train, 100):
        bits = rng.choice(64, int(rng.integers(0, distance + 3)), replace=False)
        hashes[i] = evals[rng.integers(len(evals))] ^ np.uint64(sum(1 << int(b) for b in bits))
    return hashes


def brute_force(stored: np.ndarray, queries: np.ndarray, distance: int) -> list[tuple[int, int]]:
    """Every (query, stored hash) within `distance` bits: all pairs, in blocks of 1,024 queries."""
    found = []
    for start in range(0, len(queries), 1024):
        block = popcounts(queries[start:start + 1024, None] ^ stored[None, :])
        rows, cols = np.nonzero(block <= distance)
        found.extend(zip((rows + start).tolist(), stored[cols].tolist(), strict=True))
    return found


def index_bench(evals: np.ndarray, train: np.ndarray, distance: int, brute: int, label: str) -> None:
    started = time.perf_counter()
    index = PhashIndex(evals, distance)
    built = time.perf_counter() - started
    started = time.perf_counter()
    where, hashes, _ = index.pairs(train)
    queried = time.perf_counter() - started
    subset = train[:brute]
    started = time.perf_counter()
    expected = brute_force(index.hashes, subset, distance)
    scanned = time.perf_counter() - started
    got = [(q, h) for q, h in zip(where.tolist(), hashes.tolist(), strict=True) if q < brute]
    assert got == expected, "index and brute force disagree"
    per_index, per_brute = queried / len(train), scanned / len(subset)
    print(f"  {label}: {len(index):,} eval hashes ({len(index.bands)} bands, radius {index.radius}), "
          f"built in {built * 1e3:.0f} ms; {len(train):,} queries in {queried:.2f} s ({per_index * 1e6:.1f} µs "
          f"each), {len(where):,} pairs; brute force {per_brute * 1e6:.1f} µs each over {len(subset):,} "
          f"(same pairs) → index {per_brute / per_index:.0f}× faster, brute force for all: "
          f"{per_brute * len(train):.1f} s; the step pickled for a worker: {step_size(index) / 1024:.0f} KiB")


def step_size(index: PhashIndex) -> int:
    """Bytes of the decontaminate step, as pickled for each worker, with this index and COCO-like names."""
    step = DecontaminateStep(Path("eval"), None, Path("images"), index.distance)
    names = [f"val2014/COCO_val2014_{n:012d}.jpg" for n in range(len(index))]
    step.eval = EvalSet(index.distance, 13, images=names, index=index,
                        owners={h: [n] for n, h in enumerate(index.hashes.tolist())})
    return len(pickle.dumps(step))


def end_to_end(folder: Path, train: int, evals: int, distance: int, workers: int) -> None:
    from visinstruct.filters.pipeline import FilterConfig, run_filter

    images, bench = folder / "train", folder / "eval"
    records = folder / "train.jsonl"
    if not records.exists():
        started = time.perf_counter()
        for seed in range(evals):
            path = bench / f"{seed // 1000}" / f"{seed}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(seed).save(path, quality=95)
        lines = []
        for k in range(train):
            path = images / f"{k // 1000}" / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            if k % 100 == 0:  # planted: an eval picture resized to 60%, re-encoded
                picture(k // 100 % evals).resize((192, 144), Image.LANCZOS).save(path, quality=70)
            else:
                picture(10_000_000 + k, (64, 64)).save(path, quality=85)
            lines.append(json.dumps({"id": str(k), "image": f"{k // 1000}/{k}.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A picture."}]}))
        records.write_text("\n".join(lines) + "\n")
        print(f"  wrote {train:,} training and {evals:,} eval images in {time.perf_counter() - started:.0f} s")
    config = FilterConfig(stages=["structure", "decontaminate"], image_root=images, decontaminate=bench,
                          phash_distance=distance, workers=workers)
    started = time.perf_counter()
    report = run_filter(records, folder / "kept.jsonl", folder / "rejects.jsonl", config, progress=False)
    seconds = time.perf_counter() - started
    found = report["decontamination"]
    planted_ids = {str(k) for k in range(0, train, 100)}
    matched = {m["id"] for m in found["matches"]}
    print(f"  run_filter, {workers} workers: {seconds:.0f} s ({train / seconds:,.0f} records/s), eval set loaded in "
          f"{found['seconds_to_load']} s; matched {len(matched & planted_ids):,} of {len(planted_ids):,} planted "
          f"copies, {len(matched - planted_ids):,} others")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=5_000)
    parser.add_argument("--distance", type=int, default=6)
    parser.add_argument("--brute", type=int, default=10_000, help="training hashes checked by brute force too")
    parser.add_argument("--calibrate", type=int, default=1000, help="eval pictures for the threshold (0: skip)")
    parser.add_argument("--unrelated", type=int, default=1000, help="unrelated pictures for the threshold")
    parser.add_argument("--images", type=int, default=0, help="training images for the end-to-end run (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, help="keep the end-to-end images here for the next run")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        if args.calibrate:
            print(f"calibration ({args.calibrate:,} eval pictures):")
            calibrate(args.calibrate, args.unrelated)
        print("hashing:")
        hashing_rate(Path(scratch))
        print("index:")
        evals = rng.integers(0, UINT64_MAX, args.eval, dtype=np.uint64, endpoint=True)
        index_bench(evals, planted(evals, args.train, args.distance, rng), args.distance, args.brute, "uniform")
        if args.images:
            print("end to end:")
            end_to_end(folder, args.images, args.eval, args.distance, args.workers)


if __name__ == "__main__":
    main()
