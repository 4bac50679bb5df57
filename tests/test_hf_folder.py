"""`convert --to hf-folder`: a Hugging Face dataset folder (data/<split>-*.parquet + README.md card) that
`datasets.load_dataset(folder)` reads offline, round trips back to LLaVA, shards by rows or bytes, and
fails without touching the output."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from conftest import read_records, run_cli
from visinstruct.core.shards import ShardPlan, parse_size

# Loads the folder in a fresh process with the network switched off, and prints what came back as JSON.
LOAD = """
import hashlib, json, sys
import datasets
data = datasets.load_dataset(sys.argv[1], cache_dir=sys.argv[2])
out = {"splits": {}, "features": {}}
for name, split in data.items():
    out["features"][name] = repr(split.features["image"])
    raw = split.cast_column("image", datasets.Image(decode=False)) if isinstance(split.features["image"], \
datasets.Image) else split.cast_column("image", datasets.List(datasets.Image(decode=False)))
    rows = []
    for row, decoded in zip(raw, split):
        cell = row.pop("image")
        cells = cell if isinstance(cell, list) else ([] if cell is None else [cell])
        row["image_sha"] = None if cell is None else [hashlib.sha256(c["bytes"]).hexdigest() for c in cells]
        pics = decoded["image"] if isinstance(decoded["image"], list) else [decoded["image"]]
        row["sizes"] = [list(p.size) for p in pics if p is not None]
        rows.append(row)
    out["splits"][name] = rows
print(json.dumps(out))
"""


def image_bytes(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    """A noise image (so that files are a few KB and differ in size), encoded in `fmt`."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3)).save(out, fmt)
    return out.getvalue()


def turns(text: str, image: bool = True) -> list[dict]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + text}, {"from": "gpt", "value": f"re {text}"}]


def make_dataset(folder: Path, count: int = 7) -> tuple[Path, list[dict], dict[str, bytes]]:
    """`count` image records (JPEG, PNG, WEBP in turn, under folder/img/sub) with extra keys of several types,
    plus one text-only record; returns the json file, the records and the image bytes by relative path."""
    images: dict[str, bytes] = {}
    records = []
    formats = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]
    for i in range(count):
        fmt, ext = formats[i % 3]
        relative = f"sub/pic-{i}.{ext}"
        images[relative] = image_bytes(fmt, (30 + i, 20 + i), i * 20)
        records.append({"id": f"rec-{i}", "image": relative, "conversations": turns(f"question {i}"),
                        "task": ["conversation", "detail", "complex_reasoning"][i % 3],
                        "lang": ["en", "ru", "zh"][i % 3], "source": "coco2014-val", "score": i + 0.5, "k": i})
    records.append({"id": "text-only", "conversations": turns("no picture", image=False), "task": "text",
                    "lang": "en", "source": "sharegpt", "score": 1.0, "k": 99})
    for relative, data in images.items():
        (folder / "img" / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / "img" / relative).write_bytes(data)
    src = folder / "data.json"
    src.write_text(json.dumps(records, ensure_ascii=False))
    return src, records, images


def load_offline(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache / "home")}
    result = subprocess.run([sys.executable, "-c", LOAD, str(folder), str(cache / "datasets")], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def card_header(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_round_trip_through_datasets_offline_and_back_to_llava(tmp_path: Path) -> None:
    src, records, images = make_dataset(tmp_path)
    out = tmp_path / "hf"
    result = run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root", str(tmp_path / "img"),
                     "--shard-rows", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in sorted((out / "data").iterdir())] == [3, 3, 2]

    loaded = load_offline(out, tmp_path / "cache")
    assert loaded["features"] == {"train": "Image(mode=None, decode=True)"}
    rows = loaded["splits"]["train"]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    for row, record in zip(rows, records, strict=True):
        for key in ("conversations", "task", "lang", "source", "score", "k"):
            assert row[key] == record[key], key
        if "image" in record:
            assert row["image_sha"] == [sha(images[record["image"]])]
            assert row["sizes"] == [list(Image.open(io.BytesIO(images[record["image"]])).size)]
        else:
            assert row["image_sha"] is None and row["sizes"] == []

    back = tmp_path / "back" / "x.json"
    result = run_cli("convert", str(out / "data"), str(back), "--from", "parquet", "--to", "llava")
    assert result.returncode == 0, result.stderr
    again = read_records(back)
    for new, record in zip(again, records, strict=True):
        assert {k: v for k, v in new.items() if k != "image"} == {k: v for k, v in record.items() if k != "image"}
        if "image" in record:
            assert (back.parent / "images" / new["image"]).read_bytes() == images[record["image"]]
        else:
            assert "image" not in new


def test_card_header_parses_with_the_right_counts(tmp_path: Path) -> None:
    src, records, _ = make_dataset(tmp_path, count=5)
    out = tmp_path / "hf"
    assert run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root",
                   str(tmp_path / "img")).returncode == 0
    head = card_header(out)
    assert head["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    info = head["dataset_info"]
    assert info["splits"][0]["name"] == "train" and info["splits"][0]["num_examples"] == len(records) == 6
    assert info["download_size"] == (out / "data" / "train-00000-of-00001.parquet").stat().st_size
    assert info["features"] == [
        {"name": "id", "dtype": "string"}, {"name": "image", "dtype": "image"},
        {"name": "conversations", "list": [{"name": "from", "dtype": "string"}, {"name": "value", "dtype": "string"}]},
        {"name": "task", "dtype": "string"}, {"name": "lang", "dtype": "string"},
        {"name": "source", "dtype": "string"}, {"name": "score", "dtype": "float64"}, {"name": "k", "dtype": "int64"}]
    assert head["language"] == ["en", "ru", "zh"]
    assert head["size_categories"] == ["n<1K"]
    assert head["task_categories"] == ["visual-question-answering", "image-text-to-text"]
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "| coco2014-val | 5 | 83.3% |" in body and "| sharegpt | 1 | 16.7% |" in body


def test_multi_image_and_text_only_records(tmp_path: Path) -> None:
    """Any image list makes the column List(Image): single images become lists of one, text-only stays null."""
    (tmp_path / "a.png").write_bytes(a := image_bytes("PNG", (10, 12), 1))
    (tmp_path / "b.jpg").write_bytes(b := image_bytes("JPEG", (14, 16), 2))
    records = [{"id": "two", "image": ["a.png", "b.jpg"], "conversations": turns("<image>\nboth")},
               {"id": "one", "image": "b.jpg", "conversations": turns("one")},
               {"id": "none", "conversations": turns("text", image=False)}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "hf"
    result = run_cli("convert", str(tmp_path / "m.jsonl"), str(out), "--to", "hf-folder")
    assert result.returncode == 0, result.stderr
    assert card_header(out)["dataset_info"]["features"][1] == {"name": "image", "list": "image"}
    rows = load_offline(out, tmp_path / "cache")["splits"]["train"]
    assert [r["image_sha"] for r in rows] == [[sha(a), sha(b)], [sha(b)], None]
    assert [r["sizes"] for r in rows] == [[[10, 12], [14, 16]], [[14, 16]], []]


def test_split_name_and_byte_target(tmp_path: Path) -> None:
    src, records, images = make_dataset(tmp_path, count=6)
    largest = max(len(data) for data in images.values())
    out = tmp_path / "hf"
    result = run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root", str(tmp_path / "img"),
                     "--split", "validation", "--shard-bytes", str(2 * largest + 1000))
    assert result.returncode == 0, result.stderr
    shards = sorted((out / "data").iterdir())
    assert len(shards) >= 2 and all(p.name.startswith("validation-") for p in shards)
    assert all(p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
    # the documented rule: a shard ends before the record that would take it past the target (image files
    # plus the record's JSON without the image key)
    sizes = [len(images.get(r.get("image"), b"")) + len(json.dumps({k: v for k, v in r.items() if k != "image"},
                                                                  separators=(",", ":")).encode()) for r in records]
    expected, rows, total = [], 0, 0
    for size in sizes:
        if rows and total + size > 2 * largest + 1000:
            expected, rows, total = [*expected, rows], 0, 0
        rows, total = rows + 1, total + size
    assert [pq.ParquetFile(p).metadata.num_rows for p in shards] == [*expected, rows]
    head = card_header(out)
    assert head["configs"][0]["data_files"] == [{"split": "validation", "path": "data/validation-*"}]
    loaded = load_offline(out, tmp_path / "cache")
    assert list(loaded["splits"]) == ["validation"]
    assert [r["id"] for r in loaded["splits"]["validation"]] == [r["id"] for r in records]

    for bad, message in ((["--split", "a-b"], "--split 'a-b'"), (["--shard-bytes", "lots"], "not a size")):
        result = run_cli("convert", str(src), str(tmp_path / "x"), "--to", "hf-folder", *bad)
        assert result.returncode == 2 and message in result.stderr and not (tmp_path / "x").exists()
    result = run_cli("convert", str(src), str(tmp_path / "x.json"), "--to", "messages", "--split", "train")
    assert result.returncode == 2 and "--split applies to --to hf-folder only" in result.stderr


def test_shard_plan_by_rows_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"\x89PNG" + b"x" * 996)  # 1,000 bytes: sizes are read, not decoded
    record = {"id": "1", "image": "big.png", "conversations": turns("q")}
    text = len(json.dumps({k: v for k, v in record.items() if k != "image"}, separators=(",", ":")))
    plan = ShardPlan(max_bytes=2 * (1000 + text), root=tmp_path)
    for n in range(5):
        plan.add(record, f"r{n}")
    assert plan.finish() == [2, 2, 1]
    tiny = ShardPlan(max_bytes=10, root=tmp_path)  # a record larger than the target gets a shard of its own
    for n in range(3):
        tiny.add(record, f"r{n}")
    assert tiny.finish() == [1, 1, 1]
    both = ShardPlan(rows=2, max_bytes=10**9, root=tmp_path)
    for n in range(5):
        both.add(record, f"r{n}")
    assert both.finish() == [2, 2, 1]
    assert [parse_size(s) for s in ("500MB", "1GB", "256MiB", "1.5kb", "1234")] == [
        500 * 10**6, 10**9, 256 * 2**20, 1500, 1234]
    for bad in ("", "0", "5 parsecs", "-1MB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_bad_input_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    src, _, _ = make_dataset(tmp_path, count=4)
    (tmp_path / "img" / "sub" / "pic-2.webp").unlink()
    out = tmp_path / "hf"
    result = run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root", str(tmp_path / "img"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "data.json: record 2 (id 'rec-2')" in result.stderr and "pic-2.webp" in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    result = run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root", str(tmp_path / "img"))
    assert result.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    # an image that is there but is not an image: found while shards are being written, after the first one
    (tmp_path / "img" / "sub" / "pic-2.webp").write_bytes(b"not an image at all")
    result = run_cli("convert", str(src), str(out), "--to", "hf-folder", "--image-root", str(tmp_path / "img"),
                     "--shard-rows", "1")
    assert result.returncode == 2 and "pic-2.webp is not a known image format" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_folder_that_holds_the_input_is_refused(tmp_path: Path) -> None:
    src, _, _ = make_dataset(tmp_path, count=2)
    before = src.read_bytes()
    result = run_cli("convert", str(src), str(tmp_path), "--to", "hf-folder", "--image-root", str(tmp_path / "img"))
    assert result.returncode == 2 and "would be replaced whole" in result.stderr
    result = run_cli("convert", str(src), str(tmp_path / "img"), "--to", "hf-folder",
                     "--image-root", str(tmp_path / "img"))
    assert result.returncode == 2 and "--image-root" in result.stderr
    assert src.read_bytes() == before and (tmp_path / "img" / "sub" / "pic-0.jpg").exists()
