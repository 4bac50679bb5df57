"""Conversions: byte-exact round trips, HF/webdataset readability, SVIT → LLaVA-1.5, and safety."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import read_records, run_cli
from visinstruct.core.referring import SVIT_INSTRUCTIONS, svit_instruction


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 120)[: len(mode)] if mode != "P" else 3).save(out, fmt)
    return out.getvalue()


IMAGES = {"jpeg": image_bytes("JPEG"), "png_alpha": image_bytes("PNG", "RGBA"), "webp": image_bytes("WEBP"),
          "gif": image_bytes("GIF", "P")}
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))


def conv(text: str, image: bool = True) -> list[dict]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + text}, {"from": "gpt", "value": "ok"}]


def single_image_rows() -> list[dict]:
    rows = [{"id": f"row-{name}", "image": {"bytes": data, "path": f"{name}.bin"}, "conversations": conv(name),
             "data_source": "test"} for name, data in IMAGES.items()]
    rows.append({"id": "text-only", "image": None, "conversations": conv("no image", False), "data_source": "sg"})
    rows.append({"id": "猫/../../etc", "image": {"bytes": IMAGES["jpeg"], "path": None}, "conversations": conv("u"),
                 "data_source": "test"})
    for collide in ("a/b", "a_b", "A_B"):  # all sanitize to a_b (case-insensitively)
        rows.append({"id": collide, "image": {"bytes": IMAGES["png_alpha"], "path": None},
                     "conversations": conv(collide), "data_source": "test"})
    return rows


def write_parquet(path: Path, rows: list[dict], multi: bool = False, row_group_size: int = 3) -> None:
    schema = pa.schema([("id", pa.string()), ("image", pa.list_(IMAGE) if multi else IMAGE),
                        ("conversations", TURNS), ("data_source", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_parquet_llava_parquet_keeps_every_byte(tmp_path: Path, workers: str) -> None:
    rows = single_image_rows()
    write_parquet(tmp_path / "in.parquet", rows)
    result = run_cli("convert", str(tmp_path / "in.parquet"), str(tmp_path / "llava" / "data.json"), "--to", "llava",
                     "--workers", workers)
    assert result.returncode == 0, result.stderr
    records = read_records(tmp_path / "llava" / "data.json")
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    images = tmp_path / "llava" / "images"
    names = [r.get("image") for r in records]
    assert names[:4] == ["row-jpeg.jpg", "row-png_alpha.png", "row-webp.webp", "row-gif.gif"]
    assert names[4] is None and "image" not in records[4]
    assert names[5] == "猫_etc.jpg"  # no traversal, unicode kept
    assert names[6:] == ["a_b.png", "a_b-2.png", "A_B-3.png"]
    for row, record in zip(rows, records, strict=True):
        if row["image"]:
            assert (images / record["image"]).read_bytes() == row["image"]["bytes"]
        assert record["conversations"] == row["conversations"] and record["data_source"] == row["data_source"]
    assert not list(images.glob(".*"))  # no temporary files left

    back = run_cli("convert", str(tmp_path / "llava" / "data.json"), str(tmp_path / "back"), "--to", "parquet",
                   "--image-root", str(images), "--shard-size", "4")
    assert back.returncode == 0, back.stderr
    shards = sorted((tmp_path / "back").glob("*.parquet"))
    assert [s.name for s in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    again = pa.concat_tables(pq.read_table(s) for s in shards).to_pylist()
    for row, new in zip(rows, again, strict=True):
        assert (new["image"] or {}).get("bytes") == (row["image"] or {}).get("bytes")
        assert new["conversations"] == row["conversations"] and new["data_source"] == row["data_source"]


def test_parquet_loads_with_datasets_as_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    write_parquet(tmp_path / "in.parquet", single_image_rows())
    assert run_cli("convert", str(tmp_path / "in.parquet"), str(tmp_path / "d.jsonl"), "--to", "llava").returncode == 0
    result = run_cli("convert", str(tmp_path / "d.jsonl"), str(tmp_path / "out.parquet"), "--to", "parquet",
                     "--image-root", str(tmp_path / "images"))
    assert result.returncode == 0, result.stderr
    data = datasets.load_dataset("parquet", data_files=str(tmp_path / "out.parquet"), split="train",
                                 cache_dir=str(tmp_path / "cache"))
    assert isinstance(data.features["image"], datasets.Image)
    first = data[1]["image"]
    assert first.mode == "RGBA" and first.size == (40, 30)
    assert data[4]["image"] is None and data[4]["data_source"] == "sg"


def test_multi_image_rows(tmp_path: Path) -> None:
    rows = [{"id": "two", "image": [{"bytes": IMAGES["jpeg"], "path": None}, {"bytes": IMAGES["gif"], "path": None}],
             "conversations": conv("<image>\nboth"), "data_source": "m"},
            {"id": "none", "image": None, "conversations": conv("x", False), "data_source": "m"}]
    write_parquet(tmp_path / "m.parquet", rows, multi=True)
    assert run_cli("convert", str(tmp_path / "m.parquet"), str(tmp_path / "m.json"), "--to", "llava").returncode == 0
    records = read_records(tmp_path / "m.json")
    assert records[0]["image"] == ["two-0.jpg", "two-1.gif"] and "image" not in records[1]
    assert run_cli("convert", str(tmp_path / "m.json"), str(tmp_path / "m2.parquet"), "--to", "parquet",
                   "--image-root", str(tmp_path / "images")).returncode == 0
    again = pq.read_table(tmp_path / "m2.parquet").to_pylist()
    assert [i["bytes"] for i in again[0]["image"]] == [IMAGES["jpeg"], IMAGES["gif"]]


def test_llava_messages_llava_is_identical(tmp_path: Path) -> None:
    records = [{"id": "1", "image": "a.jpg", "conversations": conv("q"), "task": "conversation", "lang": "en"},
               {"id": "2", "conversations": [{"from": "system", "value": "be brief"}, *conv("text", False)]},
               {"id": "3", "image": ["a.jpg", "b.png"],
                "conversations": [{"from": "human", "value": "<image>\n<image>\nsame?"},
                                  {"from": "gpt", "value": "no"}]}]
    (tmp_path / "l.json").write_text(json.dumps(records, ensure_ascii=False))
    assert run_cli("convert", str(tmp_path / "l.json"), str(tmp_path / "m.jsonl"), "--to", "messages").returncode == 0
    messages = read_records(tmp_path / "m.jsonl")
    assert messages[0]["messages"][0] == {"role": "user", "content": "<image>\nq"}
    assert messages[0]["images"] == ["a.jpg"] and "images" not in messages[1]
    assert run_cli("convert", str(tmp_path / "m.jsonl"), str(tmp_path / "l2.json"), "--to", "llava").returncode == 0
    assert read_records(tmp_path / "l2.json") == records


def test_webdataset_readable(tmp_path: Path) -> None:
    import webdataset as wds

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(IMAGES["png_alpha"])
    (tmp_path / "img" / "y.jpg").write_bytes(IMAGES["jpeg"])
    records = [{"id": "s.1", "image": "x.png", "conversations": conv("a")},
               {"id": "s/2", "image": ["x.png", "y.jpg"], "conversations": conv("b")},
               {"id": "s3", "conversations": conv("c", False)}]
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    result = run_cli("convert", str(tmp_path / "l.jsonl"), str(tmp_path / "wds"), "--to", "wds",
                     "--image-root", str(tmp_path / "img"), "--shard-size", "2")
    assert result.returncode == 0, result.stderr
    shards = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    assert len(shards) == 2
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["s_1", "s_2", "s3"]
    assert samples[0]["png"] == IMAGES["png_alpha"]
    assert samples[1]["0.png"] == IMAGES["png_alpha"] and samples[1]["1.jpg"] == IMAGES["jpeg"]
    assert [json.loads(s["json"]) for s in samples] == records


def test_svit_to_llava15_exactly(tmp_path: Path) -> None:
    vg = tmp_path / "vg"
    vg.mkdir()
    (vg / "image_data.json").write_text(json.dumps([
        {"image_id": 7, "width": 800, "height": 600, "url": "https://x/VG_100K/7.jpg"}]))
    rows = [{"image_id": 7, "conversations": [
        {"content": [{"from": "user", "value": "What is the man holding?"}, {"from": "gpt", "value": "A kite."}]},
        {"content": [{"from": "user", "value": "Where is <st>the kite<ed> [0.5, 0.0, 0.75, 0.5]?"},
                     {"from": "gpt", "value": "<st>The kite<ed> [0.5, 0.0, 0.75, 0.5] flies above "
                                              "<st>two men<ed> [0.0, 0.5, 0.25, 1.0], [0.3, 0.5, 0.5, 1.0]."}]}]}]
    (tmp_path / "svit.json").write_text(json.dumps(rows))
    result = run_cli("convert", str(tmp_path / "svit.json"), str(tmp_path / "out.json"), "--to", "llava",
                     "--image-data", str(vg / "image_data.json"))
    assert result.returncode == 0, result.stderr
    instruction = svit_instruction("7_1", 0)
    assert instruction in SVIT_INSTRUCTIONS
    assert read_records(tmp_path / "out.json") == [
        {"id": "7_0", "image": "VG_100K/7.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the man holding?"}, {"from": "gpt", "value": "A kite."}]},
        {"id": "7_1", "image": "VG_100K/7.jpg", "conversations": [
            # 800 x 600: y' = (y * 600 + 100) / 800
            {"from": "human", "value": f"<image>\nWhere is the kite [0.5, 0.125, 0.75, 0.5]? {instruction}"},
            {"from": "gpt", "value": "The kite [0.5, 0.125, 0.75, 0.5] flies above two men "
                                     "[0.0, 0.5, 0.25, 0.875], [0.3, 0.5, 0.5, 0.875]."}]}]


def test_safety_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "esc.json").write_text(json.dumps([{"id": "e", "image": "../secret.jpg", "conversations": conv("x")}]))
    result = run_cli("convert", str(tmp_path / "esc.json"), str(tmp_path / "o.parquet"), "--to", "parquet")
    assert result.returncode == 2 and "escapes the image root" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "abs.json").write_text(json.dumps([{"id": "e", "image": "/etc/passwd", "conversations": conv("x")}]))
    result = run_cli("convert", str(tmp_path / "abs.json"), str(tmp_path / "o.parquet"), "--to", "parquet")
    assert result.returncode == 2 and "escapes the image root" in result.stderr
    assert not (tmp_path / "o.parquet").exists()
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    result = run_cli("convert", str(tmp_path / "bad.parquet"), str(tmp_path / "o.json"), "--to", "llava")
    assert result.returncode == 2 and "not a readable parquet file" in result.stderr
    pq.write_table(pa.table({"id": ["1"]}), tmp_path / "nocols.parquet")
    result = run_cli("convert", str(tmp_path / "nocols.parquet"), str(tmp_path / "o.json"), "--to", "llava")
    assert result.returncode == 2 and "missing column(s) conversations" in result.stderr
    rows = single_image_rows()
    rows[2]["image"]["bytes"] = b"hello, not an image"
    write_parquet(tmp_path / "nonimage.parquet", rows)
    result = run_cli("convert", str(tmp_path / "nonimage.parquet"), str(tmp_path / "o.json"), "--to", "llava")
    assert result.returncode == 2 and "row 2 (id 'row-webp'): image bytes are not a known image format" in result.stderr
    assert not (tmp_path / "o.json").exists()  # nothing that looks finished
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    result = run_cli("convert", str(tmp_path / "esc.json"), str(tmp_path / "o.json"), "--to", "svit")
    assert result.returncode == 2  # argparse: svit is not an output format


def test_svit_sizes_from_image_headers(tmp_path: Path) -> None:
    root = tmp_path / "images" / "VG_100K_2"
    root.mkdir(parents=True)
    Image.new("RGB", (300, 600)).save(root / "42.jpg")  # portrait: x' = (x * 300 + 150) / 600
    rows = [{"image_id": 42, "conversations": [{"content": [
        {"from": "user", "value": "Where is <st>the cat<ed> [0.0, 0.0, 1.0, 0.5]?"},
        {"from": "gpt", "value": "Top: <st>the cat<ed> [0.0, 0.0, 1.0, 0.5]."}]}]}]
    (tmp_path / "svit.jsonl").write_text(json.dumps(rows[0]) + "\n")
    result = run_cli("convert", str(tmp_path / "svit.jsonl"), str(tmp_path / "o.jsonl"), "--from", "svit",
                     "--to", "llava", "--image-root", str(tmp_path / "images"))
    assert result.returncode == 0, result.stderr
    record = read_records(tmp_path / "o.jsonl")[0]
    assert record["image"] == "VG_100K_2/42.jpg"
    assert record["conversations"][1]["value"] == "Top: the cat [0.25, 0.0, 0.75, 0.5]."
    missing = run_cli("convert", str(tmp_path / "svit.jsonl"), str(tmp_path / "o2.jsonl"), "--to", "llava")
    assert missing.returncode == 2 and "needs image sizes" in missing.stderr


# SVIT → LLaVA-1.5 box rounding: the expected boxes are computed here, independently of the library.
SVIT_SIZES = [(640, 427), (427, 640), (500, 500), (800, 600), (1024, 683), (333, 500), (500, 499), (1000, 251)]
SVIT_BOXES = [[0.0, 0.0, 1.0, 1.0], [0.001, 0.002, 0.999, 0.998], [0.998, 0.997, 1.0, 1.0],
              [0.5, 0.5, 0.75, 0.9], [0.096, 0.029, 0.499, 0.914], [0.123, 0.456, 0.789, 0.999]]


def svit_rule(box: list[float], width: int, height: int) -> list[float]:
    """SVIT's expand_to_square: round to integer pixels, shift the short axis by (long - short) // 2."""
    x1, y1, x2, y2 = round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)
    if width > height:
        y1, y2 = y1 + (width - height) // 2, y2 + (width - height) // 2
    elif height > width:
        x1, x2 = x1 + (height - width) // 2, x2 + (height - width) // 2
    return [round(v / max(width, height), 3) for v in (x1, y1, x2, y2)]


def exact_rule(box: list[float], width: int, height: int) -> list[float]:
    """Fractional pixels, shift (long - short) / 2."""
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    return [round((box[0] * width + dx) / side, 3), round((box[1] * height + dy) / side, 3),
            round((box[2] * width + dx) / side, 3), round((box[3] * height + dy) / side, 3)]


def text_box(values: list[float]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


REFERRING = [("Where is <st>the dog<ed> {0}?", "<st>The dog<ed> {0} sits by <st>two cups<ed> {1}, {2}."),
             ("What touches <st>the edge<ed> {3}?", "<st>A wall<ed> {4} and {5}; [1, 2, 3] is no box."),
             ("Anything else?", "No.")]


def write_svit_sample(folder: Path) -> Path:
    """image_data.json with the 8 sizes, and one SVIT row per image: a plain and a referring conversation."""
    folder.mkdir()
    (folder / "image_data.json").write_text(json.dumps([
        {"image_id": n, "width": w, "height": h, "url": f"https://x/VG_100K/{n}.jpg"}
        for n, (w, h) in enumerate(SVIT_SIZES, 1)]))
    native = [text_box(b) for b in SVIT_BOXES]
    rows = [{"image_id": n, "conversations": [
        {"content": [{"from": "user", "value": "What is the weather like?"}, {"from": "gpt", "value": "Sunny."}]},
        {"content": [{"from": role, "value": text.format(*native)}
                     for q, a in REFERRING for role, text in (("user", q), ("gpt", a))]}]}
        for n in range(1, len(SVIT_SIZES) + 1)]
    (folder / "svit.json").write_text(json.dumps(rows))
    return folder


def svit_convert(folder: Path, out: str, *extra: str) -> list[dict]:
    result = run_cli("convert", str(folder / "svit.json"), str(folder / out), "--to", "llava",
                     "--image-data", str(folder / "image_data.json"), *extra)
    assert result.returncode == 0, result.stderr
    return read_records(folder / out)


def check_svit_records(records: list[dict], rule) -> list[str]:
    """Every record against `rule`'s boxes; returns the instructions found after the questions."""
    assert [r["id"] for r in records] == [f"{n}_{k}" for n in range(1, len(SVIT_SIZES) + 1) for k in (0, 1)]
    instructions = []
    for n, (width, height) in enumerate(SVIT_SIZES, 1):
        plain, referring = records[2 * n - 2], records[2 * n - 1]
        assert plain["conversations"] == [{"from": "human", "value": "<image>\nWhat is the weather like?"},
                                          {"from": "gpt", "value": "Sunny."}]
        padded = [text_box(rule(b, width, height)) for b in SVIT_BOXES]
        turns = referring["conversations"]
        for i, (question, answer) in enumerate(REFERRING):
            expected_q = question.format(*padded).replace("<st>", "").replace("<ed>", "")
            asked, instruction = turns[2 * i]["value"].rsplit("? ", 1)
            assert asked + "?" == ("<image>\n" if i == 0 else "") + expected_q
            assert instruction in SVIT_INSTRUCTIONS
            instructions.append(instruction)
            assert turns[2 * i + 1] == {"from": "gpt", "value": answer.format(*padded).replace("<st>", "")
                                        .replace("<ed>", "")}
    return instructions


def test_svit_default_reproduces_svit_rounding_and_instructions(tmp_path: Path) -> None:
    folder = write_svit_sample(tmp_path / "svit")
    instructions = check_svit_records(svit_convert(folder, "out.json"), svit_rule)
    assert set(instructions) == set(SVIT_INSTRUCTIONS)  # a seeded draw per question, all three in use
    assert svit_convert(folder, "again.json") == read_records(folder / "out.json")  # same draw every run
    explicit = svit_convert(folder, "explicit.json", "--box-rounding", "svit")
    assert explicit == read_records(folder / "out.json")


def test_svit_exact_rounding_keeps_exact_padding(tmp_path: Path) -> None:
    folder = write_svit_sample(tmp_path / "svit")
    exact = check_svit_records(svit_convert(folder, "exact.json", "--box-rounding", "exact"), exact_rule)
    assert exact == check_svit_records(svit_convert(folder, "default.json"), svit_rule)  # same instructions
    # the two rules differ on most of this sample's boxes, so each check above tells them apart
    differing = sum(svit_rule(b, w, h) != exact_rule(b, w, h) for w, h in SVIT_SIZES for b in SVIT_BOXES)
    assert differing >= 24


def test_box_rounding_is_for_svit_only(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps([{"id": "a", "conversations": conv("x", False)}]))
    result = run_cli("convert", str(tmp_path / "l.json"), str(tmp_path / "m.json"), "--to", "messages",
                     "--box-rounding", "exact")
    assert result.returncode == 2 and "--box-rounding applies to svit" in result.stderr
    assert not (tmp_path / "m.json").exists()
    result = run_cli("convert", str(tmp_path / "l.json"), str(tmp_path / "m.json"), "--to", "llava",
                     "--from", "svit", "--box-rounding", "half")
    assert result.returncode == 2 and "invalid choice" in result.stderr
