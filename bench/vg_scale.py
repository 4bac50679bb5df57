"""Visual Genome reading memory, and what a VLM run would cost per `--dry-run`.

1. Writes a Visual Genome folder with N images (default 90,000; objects.json ≈ 380 MB with 35 objects
   per image) and reads it with `load_vg`, printing the peak RSS of a separate process that only
   streams the scenes (so the figure is the reader's, not this script's).
2. Writes 1,000 JPEG photos (640 x 480) and prints `visinstruct generate --mode vlm --dry-run` for them.

    python bench/vg_scale.py [--images 60000] [--keep DIR]
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
READER = """
import resource, sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from visinstruct.visual_genome import load_vg
start = time.perf_counter()
n = boxes = 0
for scene in load_vg(Path({folder!r})):
    n += 1
    boxes += len(scene.boxes) + len(scene.regions)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"read {{n:,}} scenes, {{boxes:,}} boxes in {{time.perf_counter() - start:.1f}} s; peak RSS {{peak:.0f}} MB")
"""


def write_list(path: Path, items) -> None:
    """A JSON list written item by item (the bench itself must not hold the file in memory)."""
    with path.open("wb") as handle:
        handle.write(b"[")
        for i, item in enumerate(items):
            handle.write((b"," if i else b"") + orjson.dumps(item))
        handle.write(b"]")


def write_vg(folder: Path, n: int) -> None:
    rng = random.Random(0)
    names = ["man", "woman", "tree", "car", "window", "building", "sign", "shirt", "table", "dog", "sky", "grass"]

    def obj(i: int, k: int) -> dict:
        return {"object_id": i * 100 + k, "x": rng.randint(0, 500), "y": rng.randint(0, 300),
                "w": rng.randint(5, 300), "h": rng.randint(5, 300), "names": [rng.choice(names)],
                "synsets": ["thing.n.01"], "merged_object_ids": []}

    write_list(folder / "image_data.json", ({"image_id": i, "width": 800, "height": 600, "coco_id": None,
                                             "flickr_id": None, "url": f"https://example.org/VG_100K/{i}.jpg"}
                                            for i in range(1, n + 1)))
    write_list(folder / "objects.json", ({"image_id": i, "image_url": f"https://example.org/VG_100K/{i}.jpg",
                                          "objects": [obj(i, k) for k in range(35)]} for i in range(1, n + 1)))
    write_list(folder / "region_descriptions.json", (
        {"id": i, "regions": [{"region_id": i * 100 + k, "image_id": i, "phrase": f"a {rng.choice(names)} near "
                               f"the {rng.choice(names)}", "x": 10, "y": 20, "width": 100, "height": 80}
                              for k in range(20)]} for i in range(1, n + 1)))


def bench_vg(folder: Path, n: int) -> None:
    start = time.perf_counter()
    write_vg(folder, n)
    sizes = {p.name: p.stat().st_size / 1e6 for p in folder.glob("*.json")}
    print(f"wrote {n:,} VG images in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(sizes.items())))
    code = READER.format(src=str(REPO / "src"), folder=str(folder))
    print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def bench_vlm_dry_run(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        Image.new("RGB", (640, 480), (i % 255, 90, 160)).save(folder / f"{i:04d}.jpg", quality=80)
    cmd = [sys.executable, "-m", "visinstruct", "generate", "--images", str(folder), "--out",
           str(folder.parent / "vlm.json"), "--base-url", "http://127.0.0.1:9/v1", "--model", "a-vlm",
           "--price-in", "0.5", "--price-out", "1.5", "--dry-run"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    print("1,000 images (640 x 480), default tasks and settings, prices 0.5 / 1.5 per 1M tokens:")
    print(result.stderr.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=90000, help="VG images to generate (default 90,000)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        (root / "vg").mkdir(parents=True, exist_ok=True)
        bench_vg(root / "vg", args.images)
        bench_vlm_dry_run(root / "photos")


if __name__ == "__main__":
    main()
