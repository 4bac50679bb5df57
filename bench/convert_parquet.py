"""Parquet (images embedded) → LLaVA json + image folder: three ways, timed in one run.

(a) the dataset card's own loop: `datasets` + PIL `save` as `{id}.jpg` (decode + lossy re-encode);
(b) `visinstruct convert --to llava` (bytes copied as they are; also with --workers 2);
(c) a plain byte copy of the same images with pyarrow (the limit).
Each runs in its own process, so its peak RSS is its own. The parquet has N rows (default 10,000) of
real JPEG/PNG images of ~100 KB, in row groups of 100.

    python bench/convert_parquet.py [--rows 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CARD_LOOP = """
import os, json
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME={hf!r})
from datasets import load_dataset
ds = load_dataset("parquet", data_files={src!r}, split="train", cache_dir={cache!r})
out, records = {out!r}, []
os.makedirs(out, exist_ok=True)
for row in ds:
    row["image"].convert("RGB").save(os.path.join(out, f"{{row['id']}}.jpg"))
    records.append({{"id": row["id"], "image": f"{{row['id']}}.jpg", "conversations": row["conversations"]}})
json.dump(records, open(os.path.join(out, "data.json"), "w"))
"""

VISINSTRUCT = """
import sys
sys.path.insert(0, {src_dir!r})
from pathlib import Path
from visinstruct.convert.run import ConvertOptions, convert
convert(Path({src!r}), Path({out!r}) / "data.json", ConvertOptions("llava", workers={workers}, progress=False))
"""

PLAIN_COPY = """
import os, pyarrow.parquet as pq
out = {out!r}
os.makedirs(out, exist_ok=True)
parquet = pq.ParquetFile({src!r})
for i in range(parquet.num_row_groups):
    table = parquet.read_row_group(i, columns=["id", "image"])
    for row_id, image in zip(table.column("id").to_pylist(), table.column("image").to_pylist()):
        with open(os.path.join(out, row_id + ".jpg"), "wb") as f:
            f.write(image["bytes"])
"""

TIMED = """
import resource, time
start = time.perf_counter()
exec(compile({code!r}, "bench", "exec"))
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_parquet(path: Path, rows: int) -> int:
    """A parquet like LLaVA-NeXT-Data's, with ~100 KB photo-like JPEG/PNG images (48 distinct, repeated)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageFilter

    pool = []
    for k in range(48):
        base = Image.radial_gradient("L").resize((640, 480)).convert("RGB")
        noise = Image.effect_noise((640, 480), 60 + k).convert("RGB").filter(ImageFilter.GaussianBlur(0.6))
        photo = Image.blend(base, noise, 0.6)
        out = io.BytesIO()
        if k % 4 == 0:
            photo.resize((320, 240)).save(out, "PNG")
        else:
            photo.save(out, "JPEG", quality=80)
        pool.append(out.getvalue())
    schema = pa.schema([("id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
                        ("data_source", pa.string())])
    value = {"dtype": "string", "_type": "Value"}
    features = {"id": value, "image": {"_type": "Image"}, "data_source": value,
                "conversations": {"feature": {"from": value, "value": value}, "_type": "List"}}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    total = 0
    with pq.ParquetWriter(path, schema, use_dictionary=False) as writer:  # no dedup of repeated images
        for start in range(0, rows, 100):
            batch = []
            for i in range(start, min(rows, start + 100)):
                data = pool[i % len(pool)]
                total += len(data)
                batch.append({"id": f"{i:08d}", "image": {"bytes": data, "path": None}, "data_source": "bench",
                              "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                                {"from": "gpt", "value": f"Row {i} shows a noisy texture."}]})
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return total


def run(name: str, code: str) -> tuple[float, float]:
    os.sync()  # the previous job's dirty pages are flushed before this one starts
    result = subprocess.run([sys.executable, "-c", TIMED.format(code=code)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-2000:]}")
    seconds, rss = map(float, result.stdout.split()[-2:])
    return seconds, rss


def folder_bytes(path: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in suffixes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="vi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "data.parquet"
    image_bytes = make_parquet(src, args.rows)
    print(f"{args.rows:,} rows, {image_bytes / 1e6:.0f} MB of images ({image_bytes / args.rows / 1e3:.0f} KB each), "
          f"parquet {src.stat().st_size / 1e6:.0f} MB")
    common = {"src": str(src), "src_dir": str(REPO / "src")}
    jobs = [
        ("(c) plain byte copy", PLAIN_COPY.format(out=str(work / "c"), **common)),
        ("(b) visinstruct convert", VISINSTRUCT.format(out=str(work / "b"), workers=1, **common)),
        ("(b) visinstruct convert --workers 2", VISINSTRUCT.format(out=str(work / "b2"), workers=2, **common)),
        ("(a) dataset card loop", CARD_LOOP.format(out=str(work / "a"), hf=str(work / "hf"),
                                                   cache=str(work / "cache"), **common)),
    ]
    times = {}
    for name, code in jobs:
        seconds, rss = run(name, code)
        times[name[:3] + ("2" if "workers" in name else "")] = seconds
        print(f"{name:<38} {seconds:7.1f} s  {args.rows / seconds:8.0f} rows/s  "
              f"{image_bytes / seconds / 1e6:6.0f} MB/s  peak RSS {rss:5.0f} MB")
    a, b, b2, c = times["(a)"], times["(b)"], times["(b)2"], times["(c)"]
    print(f"(b) speed / (c) speed = {c / b:.2f}  (target >= 0.5);  --workers 2: {c / b2:.2f}")
    print(f"(b) is {a / b:.1f}x faster than (a)  (target >= 5x);  --workers 2: {a / b2:.1f}x")
    written = folder_bytes(work / "a", (".jpg",))
    same = folder_bytes(work / "b" / "images", (".jpg", ".png"))
    print(f"(a) wrote {written / 1e6:.0f} MB of re-encoded JPEG for {image_bytes / 1e6:.0f} MB of originals "
          f"({written / image_bytes:.2f}x, lossy); (b) wrote {same / 1e6:.0f} MB, byte-identical")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
