"""VLM mode: images go to the teacher as data URLs (upright, within the size limit); bad images fail clearly."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import orjson
from PIL import Image

from conftest import read_records, run_cli
from teacher_server import ServerThread
from visinstruct.generate.vlm import ImageError, prepare_image

GOOD = ("photo.jpg", "nested/wide.png", "rotated.jpg", "alpha.png", "pic.webp")
BAD = {"empty.jpg": "empty file", "truncated.jpg": "cannot decode", "notes.txt": "not an image",
       "drawing.svg": "not an image", "bomb.png": "decompression bomb"}


def make_images(folder: Path) -> Path:
    (folder / "nested").mkdir(parents=True)
    Image.new("RGB", (640, 480), (200, 30, 30)).save(folder / "photo.jpg", quality=85)
    Image.new("RGB", (3000, 1000), (10, 120, 200)).save(folder / "nested" / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise: upright it is 200 x 300
    Image.new("RGB", (300, 200), (0, 200, 0)).save(folder / "rotated.jpg", exif=exif)
    Image.new("RGBA", (64, 48), (0, 0, 0, 100)).save(folder / "alpha.png")
    Image.new("RGB", (320, 240), (90, 90, 90)).save(folder / "pic.webp")
    (folder / "empty.jpg").write_bytes(b"")
    full = io.BytesIO()
    Image.effect_noise((400, 400), 60).convert("RGB").save(full, "JPEG")
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (folder / "notes.txt").write_text("not a picture")
    (folder / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 M pixels, a few KB on disk
    (folder / ".hidden.jpg").write_bytes(b"skipped")
    return folder


def test_prepare_image_sends_bytes_as_they_are_when_it_can(tmp_path: Path) -> None:
    folder = make_images(tmp_path / "img")
    same = prepare_image(folder / "photo.jpg")
    assert not same.reencoded and same.data == (folder / "photo.jpg").read_bytes() and same.mime == "image/jpeg"
    wide = prepare_image(folder / "nested" / "wide.png", max_side=1024)
    assert wide.reencoded and (wide.width, wide.height) == (1024, 341) and wide.mime == "image/jpeg"
    upright = prepare_image(folder / "rotated.jpg")
    assert upright.reencoded and (upright.width, upright.height) == (200, 300)
    alpha = prepare_image(folder / "alpha.png", max_side=32)
    assert alpha.mime == "image/png" and Image.open(io.BytesIO(alpha.data)).mode == "RGBA"
    for name, reason in BAD.items():
        try:
            prepare_image(folder / name)
        except ImageError as exc:
            assert reason in str(exc), (name, exc)
        else:
            raise AssertionError(f"{name} was accepted")
    try:
        prepare_image(folder / "photo.jpg", max_pixels=1000)
    except ImageError as exc:
        assert "above the limit of 1,000" in str(exc)


def test_vlm_run_against_the_local_teacher(tmp_path: Path, teacher: ServerThread) -> None:
    folder = make_images(tmp_path / "img")
    out = tmp_path / "vlm.json"
    result = run_cli("generate", "--images", str(folder), "--image-prefix", "mine/", "--out", str(out),
                     "--base-url", teacher.base_url, "--model", "vlm", "--max-side", "1024")
    assert result.returncode == 0, result.stderr
    assert "done: 15" in result.stderr and "failed: 15 (15 with a bad image)" in result.stderr
    # every image the server received decodes and is within the size limit
    assert len(teacher.server.images) == 15
    sizes = set()
    for mime, data in teacher.server.images:
        image = Image.open(io.BytesIO(data))
        image.load()
        assert max(image.size) <= 1024 and mime == Image.MIME[image.format]
        sizes.add(image.size)
    assert sizes == {(640, 480), (1024, 341), (200, 300), (64, 48), (320, 240)}
    photo = (folder / "photo.jpg").read_bytes()
    assert any(data == photo for _, data in teacher.server.images)  # not re-encoded when it need not be
    records = read_records(out)
    assert {r["image"] for r in records} == {f"mine/{name}" for name in GOOD}
    assert {r["task"] for r in records} == {"dialogue", "complex_reasoning", "captioning"}
    for record in records:
        turns = record["conversations"]
        assert turns[0]["value"].startswith("<image>\n")
        if record["task"] == "dialogue":
            assert len(turns) == 10  # the teacher wrote 6 rounds; at most 5 are kept
    rejects = read_records(tmp_path / "vlm.rejects.jsonl")
    assert len(rejects) == 15
    for reject in rejects:
        name = next(n for n in BAD if reject["id"].startswith(Path(n).stem + "-"))
        assert reject["status"] == "failed" and BAD[name] in reject["reason"] and name in reject["reason"]
    # resume: good units come from the ledger; bad images are tried again and fail again, nothing else is sent
    again = run_cli("generate", "--images", str(folder), "--image-prefix", "mine/", "--out", str(out),
                    "--base-url", teacher.base_url, "--model", "vlm")
    assert "from ledger: 15" in again.stderr and len(teacher.server.images) == 15
    from visinstruct.generate.ledger import Ledger

    ledger = Ledger(tmp_path / "vlm.json.ledger.sqlite")
    stored = b"".join(orjson.dumps(ledger.request(key)) for key in ledger.answered_keys())  # requests rebuilt
    ledger.close()
    assert hashlib.sha256(photo).hexdigest()[:32].encode() in stored  # a placeholder, not the image
    assert b"data:image" not in stored and b"data:image" not in (tmp_path / "vlm.json.ledger.sqlite").read_bytes()


def test_vlm_list_file_dry_run_and_usage_errors(tmp_path: Path, teacher: ServerThread) -> None:
    folder = make_images(tmp_path / "img")
    listing = folder / "list.txt"
    listing.write_text("photo.jpg\n# a comment\nnested/wide.png\nmissing.jpg\n")
    result = run_cli("generate", "--images", str(listing), "--out", str(tmp_path / "o.json"), "--base-url",
                     teacher.base_url, "--model", "vlm", "--tasks", "captioning", "--lang", "zh")
    assert result.returncode == 0 and "done: 2" in result.stderr
    reject = read_records(tmp_path / "o.rejects.jsonl")[0]
    assert reject["id"] == "missing-captioning-0" and "cannot read file" in reject["reason"]
    dry = run_cli("generate", "--images", str(listing), "--out", str(tmp_path / "d.json"), "--base-url",
                  teacher.base_url, "--model", "vlm", "--dry-run")
    assert dry.returncode == 0 and "9 requests to send" in dry.stderr
    assert run_cli("generate", "--images", str(folder), "--out", str(tmp_path / "e.json")).returncode == 2
    bad_task = run_cli("generate", "--images", str(folder), "--out", str(tmp_path / "e.json"), "--base-url",
                       teacher.base_url, "--model", "vlm", "--tasks", "conversation")
    assert bad_task.returncode == 2 and "not vlm-mode tasks" in bad_task.stderr
